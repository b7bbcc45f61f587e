"""Aggregate cell results into the leaderboard's tables (pure functions, no IO).

Per cell (attack x defense): mean and std over the seeds that finished. Per defense:
means over attacks, computed only when the defense has a result for *every* attack in
scope, so a defense that skips the hard attack gets no mean rather than a flattering
one. Per attack: the undefended ASR/CA and how much ASR the defenses leave.
An attack whose mean undefended ASR stays under :data:`IMPLANTED_ASR` is marked "not
implanted" and left out of every defense mean: with no backdoor to remove, a low ASR
says nothing about the defense. Ordering is fully determined by the data (ties broken by
name), so the same results always give the same tables.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from .reader import VARIANT_SEP, CellResult, origin

NO_DEFENSE_STAGE = "none"
#: the order attack families are grouped in (the attack ranking, the family filter); any
#: other family (a plugin's) follows, by name
FAMILY_ORDER = ("patch", "blend", "warp", "signal", "optimised", "clean_label")


def family_key(family: str) -> tuple[int, str]:
    """Sort key of a family: :data:`FAMILY_ORDER` first, then the others by name."""
    return (FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER), family)
#: an attack whose mean undefended ASR stays below this was not implanted (the engine's
#: ``benchmark.results.IMPLANTED_ASR``; repeated here: the leaderboard reads files only)
IMPLANTED_ASR = 0.5


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def defense_cost(cell: CellResult) -> float | None:
    """Seconds the defense adds to one cell (see the ``cost_s`` column's description)."""
    timings = cell.data.get("timings_s") or {}
    stage = cell.defense_stage
    if stage == NO_DEFENSE_STAGE:
        return 0.0
    value = timings.get("poison_train" if stage == "training" else "defense")
    return float(value) if isinstance(value, (int, float)) else None


@dataclass
class CellSummary:
    """One attack x defense cell over its seeds."""

    suite: str
    attack: str
    family: str
    attack_source: str
    defense: str
    stage: str
    defense_source: str
    runs: list[CellResult] = field(default_factory=list)

    @property
    def ok_runs(self) -> list[CellResult]:
        return [r for r in self.runs if r.ok]

    @property
    def ok(self) -> bool:
        return bool(self.ok_runs)

    def values(self, block: str, name: str) -> list[float]:
        return [v for r in self.ok_runs if (v := r.metric(block, name)) is not None]

    def mean(self, block: str, name: str) -> float | None:
        return _mean(self.values(block, name))

    @property
    def der_values(self) -> list[float]:
        return [float(r.data["der"]) for r in self.ok_runs if isinstance(r.data.get("der"), (int, float))]

    @property
    def cost(self) -> float | None:
        return _mean([c for r in self.ok_runs if (c := defense_cost(r)) is not None])

    def row(self) -> dict[str, Any]:
        return {
            "attack": self.attack, "family": self.family, "defense": self.defense, "stage": self.stage,
            "seeds": len(self.ok_runs), "failed": len(self.runs) - len(self.ok_runs),
            "ca": self.mean("metrics", "clean_accuracy"), "ca_std": _std(self.values("metrics", "clean_accuracy")),
            "asr": self.mean("metrics", "asr"), "asr_std": _std(self.values("metrics", "asr")),
            "ra": self.mean("metrics", "ra"), "der": _mean(self.der_values),
            "baseline_ca": self.mean("baseline", "clean_accuracy"), "baseline_asr": self.mean("baseline", "asr"),
            "clean_model_asr": self.mean("clean_model", "asr"), "cost_s": self.cost,
            "origin": origin(self.defense_source), "attack_origin": origin(self.attack_source),
        }


@dataclass
class SuiteBoard:
    """Everything the page shows for one configuration of a suite: its own (``suite`` is the
    suite's name) or a variant (``suite`` is the variant's folder name, ``settings`` what differs)."""

    suite: str
    attacks: list[str]
    defenses: list[str]
    cells: dict[tuple[str, str], CellSummary]
    families: list[str]
    defense_rankings: dict[str, list[dict[str, Any]]]  # scope ("all" or a family) -> rows
    attack_ranking: list[dict[str, Any]]
    not_implanted: list[str] = field(default_factory=list)  # attacks left out of defense means
    base_suite: str = ""  # the suite this is a configuration of
    settings: dict[str, Any] = field(default_factory=dict)  # where it differs from the suite's own ({}: its own)
    notes: list[str] = field(default_factory=list)  # results set apart because their configuration differs

    @property
    def is_variant(self) -> bool:
        return self.suite != self.base_suite

    def cell(self, attack: str, defense: str) -> CellSummary | None:
        return self.cells.get((attack, defense))

    def matrix(self, block: str, name: str) -> list[list[float | None]]:
        """attacks x defenses of the mean over seeds (None where no seed finished)."""
        return [[(c.mean(block, name) if (c := self.cell(a, d)) is not None else None) for d in self.defenses]
                for a in self.attacks]


def _defense_order(names: dict[str, str]) -> list[str]:
    """The no-defense baseline first, then by name."""
    return sorted(names, key=lambda d: (names[d] != NO_DEFENSE_STAGE, d))


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names whose (CA, ASR) no other point dominates (CA higher-better, ASR lower-better).

    A point dominates another when its CA is at least as high and its ASR at least as
    low, and it is strictly better in one of the two. Returned sorted by ASR then CA.
    """
    front = []
    for name, (ca, asr) in points.items():
        dominated = any(oca >= ca and oasr <= asr and (oca > ca or oasr < asr)
                        for other, (oca, oasr) in points.items() if other != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: (points[n][1], -points[n][0], n))


def rank_defenses(board_cells: dict[tuple[str, str], CellSummary], attacks: list[str],
                  defenses: list[str]) -> list[dict[str, Any]]:
    """The defense ranking over ``attacks`` (the scope): one row per defense."""
    rows = []
    for d in defenses:
        cells = [board_cells.get((a, d)) for a in attacks]
        present = [c for c in cells if c is not None]
        covered = [c for c in present if c.ok]
        full = bool(attacks) and len(covered) == len(attacks)
        first = present[0] if present else next(c for (a, dd), c in board_cells.items() if dd == d)
        asr = [c.mean("metrics", "asr") for c in covered]
        ca = [c.mean("metrics", "clean_accuracy") for c in covered]
        delta = [m - b for c in covered
                 if (m := c.mean("metrics", "clean_accuracy")) is not None
                 and (b := c.mean("baseline", "clean_accuracy")) is not None]
        ra = [c.mean("metrics", "ra") for c in covered]
        der = [_mean(c.der_values) for c in covered]

        def agg(values: list[float | None], how=_mean) -> float | None:
            if not full or any(v is None for v in values) or len(values) != len(attacks):
                return None
            return how(values)

        rows.append({
            "defense": d, "stage": first.stage, "source": first.defense_source, "origin": origin(first.defense_source),
            "mean_asr": agg(asr), "worst_asr": agg(asr, max), "mean_ca": agg(ca), "delta_ca": agg(delta),
            "mean_ra": agg(ra), "mean_der": agg(der),
            "coverage": (len(covered), len(attacks)),
            "failed": sum(len(c.runs) - len(c.ok_runs) for c in present),
            "cost_s": _mean([x for c in covered if (x := c.cost) is not None]),
        })
    ranked = sorted((r for r in rows if r["mean_asr"] is not None and r["mean_ca"] is not None),
                    key=lambda r: (r["mean_asr"], -r["mean_ca"], r["defense"]))
    unranked = sorted((r for r in rows if r not in ranked), key=lambda r: r["defense"])
    front = set(pareto_front({r["defense"]: (r["mean_ca"], r["mean_asr"]) for r in ranked}))
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
        r["pareto"] = "yes" if r["defense"] in front else ""
    for r in unranked:
        r["rank"] = None
        r["pareto"] = ""
    return ranked + unranked


def rank_attacks(board_cells: dict[tuple[str, str], CellSummary], attacks: list[str],
                 defenses: list[str]) -> list[dict[str, Any]]:
    """The attack ranking, grouped by family (:data:`FAMILY_ORDER`): within a family the strongest
    (highest ASR left by the defenses) first; ``rank`` is the rank over all attacks, ``group``
    is ``"start"`` on each family's first row."""
    stages = {d: c.stage for (_, d), c in board_cells.items()}
    rows = []
    for a in attacks:
        cells = [c for (aa, _), c in board_cells.items() if aa == a]
        first = cells[0]
        real = [d for d in defenses if stages[d] != NO_DEFENSE_STAGE]
        defended = {d: c for d in real if (c := board_cells.get((a, d))) is not None and c.ok}
        by_seed: dict[str, dict[int, float]] = {}
        for c in cells:
            for r in c.ok_runs:
                for key, block, name in (("asr", "baseline", "asr"), ("ca", "baseline", "clean_accuracy"),
                                         ("floor", "clean_model", "asr")):
                    v = r.metric(block, name)
                    if v is not None:
                        by_seed.setdefault(key, {}).setdefault(r.seed, v)
        asr = {d: c.mean("metrics", "asr") for d, c in defended.items()}
        asr = {d: v for d, v in asr.items() if v is not None}
        best = min(asr, key=lambda d: (asr[d], d)) if asr else None
        full = bool(real) and len(asr) == len(real)
        undefended = _mean(list(by_seed.get("asr", {}).values()))
        implanted = undefended is None or undefended >= IMPLANTED_ASR
        rows.append({
            "implanted": implanted, "implant": "yes" if implanted else "not implanted",
            "attack": a, "family": first.family, "source": first.attack_source, "origin": origin(first.attack_source),
            "clean_model_asr": _mean(list(by_seed.get("floor", {}).values())),
            "undefended_asr": undefended,
            "undefended_ca": _mean(list(by_seed.get("ca", {}).values())),
            "mean_asr_defended": _mean(list(asr.values())) if full else None,
            "best_defense_asr": asr[best] if best is not None else None,
            "best_defense": best or "",
            "coverage": (len(asr), len(real)),
        })

    def key(r: dict[str, Any]):
        m = r["mean_asr_defended"]
        u = r["undefended_asr"]
        return (m is None, -(m or 0.0), u is None, -(u or 0.0), r["attack"])

    rows.sort(key=key)
    for i, r in enumerate(rows, 1):
        r["rank"] = i if r["mean_asr_defended"] is not None else None
    rows.sort(key=lambda r: family_key(r["family"]))  # stable: the strength order holds within a family
    for i, r in enumerate(rows):
        r["group"] = "start" if i == 0 or rows[i - 1]["family"] != r["family"] else ""
    return rows


def _configurations(cells: list[CellResult]) -> tuple[dict[str, list[CellResult]], dict[str, list[str]]]:
    """Results by configuration folder. Within a folder's cell, seeds whose recorded configuration
    differs from the cell's most common one (written before folders named configurations) go to a
    board of their own, ``<folder>~config-<digest>``, with a note: seeds never average across
    configurations."""
    groups: dict[str, list[CellResult]] = {}
    notes: dict[str, list[str]] = {}
    by_cell: dict[tuple[str, str, str], list[CellResult]] = {}
    for c in cells:
        by_cell.setdefault((c.variant, c.attack, c.defense), []).append(c)
    for (variant, attack, defense), runs in by_cell.items():
        counts: dict[str, int] = {}
        for r in runs:
            counts[r.fingerprint] = counts.get(r.fingerprint, 0) + 1
        latest = {fp: max(str((r.data.get("provenance") or {}).get("created") or "") for r in runs
                          if r.fingerprint == fp) for fp in counts}
        main = max(counts, key=lambda fp: (counts[fp], latest[fp], fp))
        for r in runs:
            name = variant if r.fingerprint == main else f"{variant}{VARIANT_SEP}config-{r.fingerprint[:6]}"
            groups.setdefault(name, []).append(r)
            if name != variant:
                notes.setdefault(variant, []).append(
                    f"{r.path}: its recorded configuration differs from the other seeds of {attack}/{defense}; "
                    f"shown apart as {name} (rerun clipbench to move it to its configuration's folder)")
    return groups, notes


def build_boards(cells: list[CellResult]) -> list[SuiteBoard]:
    """One :class:`SuiteBoard` per configuration found in the results: each suite's own
    configuration first (by name), then its variants (by name). Seeds are aggregated only
    within one configuration."""
    boards = []
    groups, notes = _configurations(cells)

    def order(name: str) -> tuple[str, bool, str]:
        first = groups[name][0]
        return (first.suite, name != first.suite, name)

    for suite in sorted(groups, key=order):
        summaries: dict[tuple[str, str], CellSummary] = {}
        for r in groups[suite]:
            key = (r.attack, r.defense)
            if key not in summaries:
                summaries[key] = CellSummary(suite, r.attack, r.attack_family, r.attack_source, r.defense,
                                             r.defense_stage, r.defense_source)
            summaries[key].runs.append(r)
        for s in summaries.values():
            s.runs.sort(key=lambda r: (r.seed, r.path))
        attacks = sorted({a for a, _ in summaries})
        stages = {d: s.stage for (_, d), s in summaries.items()}
        defenses = _defense_order(stages)
        attack_rows = rank_attacks(summaries, attacks, defenses)
        not_implanted = sorted(r["attack"] for r in attack_rows if not r["implanted"])
        scored = [a for a in attacks if a not in not_implanted]
        families = sorted({s.family for s in summaries.values() if s.attack in scored}, key=family_key)
        rankings = {"all": rank_defenses(summaries, scored, defenses)}
        if len(families) > 1:
            for fam in families:
                scope = [a for a in scored if any(s.family == fam for (aa, _), s in summaries.items() if aa == a)]
                rankings[fam] = rank_defenses(summaries, scope, defenses)
        first = groups[suite][0]
        boards.append(SuiteBoard(suite, attacks, defenses, summaries, families, rankings, attack_rows, not_implanted,
                                 base_suite=first.suite, settings=first.settings, notes=sorted(notes.get(suite, []))))
    return boards


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
