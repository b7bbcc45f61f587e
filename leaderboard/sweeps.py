"""The published configuration sweeps: how each defense's (and the attacker's) setting was chosen.

``python -m benchmark.tune ... --out results/sweeps/<suite>/<name>.json`` writes one file
per sweep (``kind: clipbench-sweep``): every candidate setting with its per-attack VAL
clean accuracy and ASR, the rule and the chosen candidate. The leaderboard reads those
files only (never the engine), plots the defenses' ASR and CA drop against the swept
value (one line per defense: a reader sees whether a ranking holds across settings, not
only at the chosen one) and lists every sweep with what it chose.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SWEEP_KIND = "clipbench-sweep"


@dataclass(frozen=True)
class Sweep:
    path: str  # relative to the results directory
    suite: str
    data: dict[str, Any]

    @property
    def defense(self) -> str:
        return str(self.data.get("defense"))

    def _split_keys(self) -> tuple[list[str], dict[str, Any]]:
        """(the keys whose value varies across the candidates, the settings all of them share);
        a key absent from some candidates counts as varying."""
        flats = [_flat(_defense_part(row["candidate"])) for row in self.data.get("candidates", [])]
        varying, fixed = [], {}
        for k in sorted({k for f in flats for k in f}):
            values = [f.get(k) for f in flats]
            if len({json.dumps(v) for v in values}) > 1:
                varying.append(k)
            else:
                fixed[k] = values[0]
        return varying, fixed

    def axis(self) -> str | None:
        """The one key whose value varies across the candidates (``train.lr``), or None when
        several or none vary. Keys held at one value (``lambda2=1`` while the rate is swept)
        are the sweep's :meth:`fixed` settings."""
        varying, _ = self._split_keys()
        return varying[0] if len(varying) == 1 else None

    def fixed(self) -> dict[str, Any]:
        """The settings every candidate shares (shown beside the line's defense)."""
        return self._split_keys()[1]

    def label(self) -> str:
        """The defense, with the settings held fixed while the axis was swept."""
        fixed = self.fixed()
        return self.defense + (f" ({_short(', '.join(f'{k}={v}' for k, v in sorted(fixed.items())))})" if fixed else "")

    def points(self) -> list[tuple[float, float, float, bool]]:
        """(value, mean val ASR, mean val CA drop, chosen) per candidate along :meth:`axis`."""
        axis = self.axis()
        chosen = self.data.get("chosen")
        out = []
        for row in self.data.get("candidates", []):
            value = _flat(_defense_part(row["candidate"])).get(axis) if axis else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append((float(value), float(row["mean_asr"]), float(row["mean_ca_drop"]), row["candidate"] == chosen))
        return sorted(out)

    def row(self) -> dict[str, Any]:
        rule = self.data.get("rule") or {}
        cands = self.data.get("candidates", [])
        chosen = next((r for r in cands if r["candidate"] == self.data.get("chosen")), None)
        return {
            "defense": self.defense, "attacks": ", ".join(self.data.get("attacks", [])),
            "seeds": ", ".join(str(s) for s in self.data.get("seeds", [])), "split": self.data.get("split", "?"),
            "grid": _short(" ".join(self.data.get("grid", []) + self.data.get("suite_grid", []))),
            "candidates": len(cands), "chosen": _label(self.data.get("chosen")),
            "chosen_asr": chosen["mean_asr"] if chosen else None,
            "chosen_ca_drop": chosen["mean_ca_drop"] if chosen else None,
            "rule": (f"lowest mean ASR within {rule.get('max_ca_drop')} CA points" if rule.get("min_asr") is None
                     else f"first with every ASR >= {100 * rule['min_asr']:.0f}% within {rule.get('max_ca_drop')} CA points"),
            "path": self.path,
        }


def _defense_part(candidate: dict[str, Any]) -> dict[str, Any]:
    if set(candidate) <= {"suite", "defense"} and candidate:
        return {**(candidate.get("suite") or {}), **(candidate.get("defense") or {})}
    return candidate


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(text: str) -> str:
    """Long float literals (0.11764705882352941, i.e. 30/255) shown to 4 significant digits."""
    import re

    return re.sub(r"\d+\.\d{5,}(?:e-?\d+)?", lambda m: f"{float(m.group()):.4g}", text)


def _label(candidate: Any) -> str:
    if not isinstance(candidate, dict):
        return _short(str(candidate))
    flat = _flat(_defense_part(candidate))
    return _short(", ".join(f"{k}={v}" for k, v in sorted(flat.items()))) or "(defaults)"


def read_sweeps(results_dir: Path) -> tuple[list[Sweep], list[str]]:
    """Every sweep file under ``<results_dir>/sweeps/<suite>/``; unreadable ones as "path: reason"."""
    sweeps, skipped = [], []
    for path in sorted(Path(results_dir).glob("sweeps/*/*.json")):
        rel = path.relative_to(results_dir).as_posix()
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            skipped.append(f"{rel}: {exc}")
            continue
        if not isinstance(data, dict) or data.get("kind") != SWEEP_KIND or not isinstance(data.get("candidates"), list):
            skipped.append(f"{rel}: not a {SWEEP_KIND} file")
            continue
        sweeps.append(Sweep(rel, path.parts[-2], data))
    return sweeps, skipped


def sweep_figure(sweeps: list[Sweep]) -> bytes | None:
    """Val ASR and val CA drop against the swept value, one line per defense; None if nothing to plot."""
    from matplotlib.figure import Figure

    from .plots import _png

    lines = [(s, s.axis(), s.points()) for s in sweeps if s.defense != "none"]
    lines = [(s, a, p) for s, a, p in lines if a and len(p) > 1]
    rates = [t for t in lines if t[1] == "train.lr"]
    lines = rates or lines  # the rate sweeps when there are any: one x axis (the others are listed)
    if not lines:
        return None
    axes_keys = sorted({a for _, a, _ in lines})
    fig = Figure(figsize=(9.0, 3.4))
    asr_ax, ca_ax = fig.subplots(1, 2)
    markers = "osD^vP*X"
    for i, (s, _, pts) in enumerate(sorted(lines, key=lambda t: (t[0].defense, t[0].path))):
        xs = [p[0] for p in pts]
        kw = {"marker": markers[i % len(markers)], "label": s.label()}
        (line,) = asr_ax.plot(xs, [100 * p[1] for p in pts], **kw)
        ca_ax.plot(xs, [100 * p[2] for p in pts], color=line.get_color(), **kw)
        for p in pts:
            if p[3]:  # the chosen setting: a ring around its points
                asr_ax.plot([p[0]], [100 * p[1]], "o", ms=13, mfc="none", color=line.get_color())
                ca_ax.plot([p[0]], [100 * p[2]], "o", ms=13, mfc="none", color=line.get_color())
    for ax, title in ((asr_ax, "mean val ASR (%), lower is better"), (ca_ax, "mean val CA drop (points), lower is better")):
        if all(p[0] > 0 for _, _, pts in lines for p in pts):
            ax.set_xscale("log")
        ax.set_xlabel(" / ".join(axes_keys))
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    asr_ax.set_ylim(0, 100)
    ca_ax.legend(fontsize=8, loc="best")
    for text in ca_ax.get_legend().get_texts():
        text.set_parse_math(False)
    fig.tight_layout()
    return _png(fig)


def sweep_csv(sweeps: list[Sweep]) -> str:
    import csv

    buf = io.StringIO()
    keys = ["suite", "defense", "attacks", "seeds", "split", "grid", "candidates", "chosen", "chosen_asr",
            "chosen_ca_drop", "rule", "path"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for s in sweeps:
        r = {"suite": s.suite, **s.row()}
        w.writerow([r[k] for k in keys])
    return buf.getvalue()
