"""Result files -> a self-contained static site, CSV files and Markdown tables.

``build_site(results_dir, out_dir)`` writes::

    out_dir/index.html          the page (inline CSS and JS; no CDN; works from file://)
    out_dir/img/<suite>-*.png   heatmaps of ASR and CA, CA-vs-ASR scatter (next to the page)
    out_dir/defenses.csv        defense ranking, one row per (suite, scope, defense)
    out_dir/attacks.csv         attack ranking
    out_dir/cells.csv           attack x defense cells, mean/std over seeds
    out_dir/leaderboard.md      the rankings as Markdown tables

The output depends only on the result files and the attacks' trigger thumbnails beside
them (``<results_dir>/previews/attacks/<attack>.png``, shown in the attack ranking; no
clock, no machine names): building twice from the same inputs gives byte-identical files. Jinja2 autoescaping is on for the page,
so any text that comes from results or plugins (method names, configs, errors) is escaped.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .columns import ATTACK_COLUMNS, CELL_COLUMNS, DEFENSE_COLUMNS, Column
from .plots import CA_SPAN, clean_model_ca
from .ranking import SuiteBoard, build_boards, family_key
from .reader import CellResult, read_detections, read_results

TEMPLATES = Path(__file__).parent / "templates"
_PCT = Column("pct", "%", "a rate in percent", kind="pct")


class LeaderboardError(Exception):
    """Bad input (missing results directory, no results); the message names the fix."""


@dataclass
class BuildReport:
    out_dir: Path
    index: Path
    suites: list[str]
    cells: int  # result files read
    failed: int  # of which failed
    skipped: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # results shown apart: their configuration differs from their folder's


def _write(path: Path, data: bytes | str) -> None:
    """Atomic write (temp file + rename) so a reader never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def slug(*parts: str) -> str:
    """An HTML id / file name fragment for arbitrary (plugin-chosen) names: safe and unique."""
    import hashlib

    text = "--".join(parts)
    base = re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-")[:60] or "x"
    return f"{base}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


# ----------------------------------------------------------------------------- tables
def _table(columns: tuple[Column, ...], rows: list[dict[str, Any]], attrs: tuple[str, ...],
           links: dict[str, Any] | None = None, thumbs: dict[str, str] | None = None) -> dict[str, Any]:
    """A table as the template needs it: column declarations and pre-formatted cells.
    ``thumbs``: attack name -> image path, drawn in the ``attack`` column (trigger previews)."""
    out_rows = []
    for r in rows:
        cells = []
        for c in columns:
            cell = {"text": c.display(r.get(c.key)), "sort": c.sort_value(r.get(c.key)), "numeric": c.numeric,
                    "href": None, "img": None}
            if links and c.key in links:
                cell["href"] = links[c.key](r)
            if thumbs and c.key == "attack":
                cell["img"] = thumbs.get(str(r.get("attack")))
            cells.append(cell)
        out_rows.append({"attrs": {a: r.get(a, "") for a in attrs}, "cells": cells})
    return {"columns": columns, "rows": out_rows}


def _fmt_interval(run: CellResult, block: str, name: str) -> str:
    value = run.metric(block, name)
    if value is None:
        return "–"
    text = f"{100 * value:.1f}"
    iv = ((run.data.get(block) or {}).get("intervals") or {}).get(name)
    if isinstance(iv, (list, tuple)) and len(iv) == 2 and all(isinstance(x, (int, float)) for x in iv):
        text += f" [{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]"
    return text


def _seed_row(run: CellResult) -> dict[str, Any]:
    d = run.data
    metrics = d.get("metrics") or {}
    at_k = metrics.get("asr_at_k") or {}
    timings = d.get("timings_s") or {}
    poison = d.get("poison") or {}
    error = d.get("error") or {}
    der = d.get("der")
    prov = d.get("provenance") or {}
    counts = metrics.get("counts") or {}
    return {
        "seed": run.seed, "status": run.status, "ok": run.ok,
        "ca": _fmt_interval(run, "metrics", "clean_accuracy"), "asr": _fmt_interval(run, "metrics", "asr"),
        "ra": _fmt_interval(run, "metrics", "ra"),
        "asr_at_k": ", ".join(f"@{k}: {100 * float(v):.1f}" for k, v in sorted(at_k.items(), key=lambda kv: int(kv[0])
                              if str(kv[0]).isdigit() else 0) if isinstance(v, (int, float))) or "–",
        "der": f"{der:.3f}" if isinstance(der, (int, float)) else "–",
        "baseline": f"{_fmt_interval(run, 'baseline', 'clean_accuracy')} / {_fmt_interval(run, 'baseline', 'asr')}",
        "clean_model_asr": _fmt_interval(run, "clean_model", "asr"),
        "counts": ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "–",
        "num_poisoned": poison.get("num_poisoned", "–"), "manifest": poison.get("manifest") or "–",
        "timings": ", ".join(f"{k} {float(v):.1f}" for k, v in sorted(timings.items())
                             if isinstance(v, (int, float))) or "–",
        "error": (f"{error.get('type', 'Error')}: {error.get('message', '')}" if error else ""),
        "path": run.path, "config_hash": prov.get("config_hash") or "–", "git": prov.get("git") or "–",
        "parts": _parts(run),
    }


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _parts(run: CellResult) -> list[dict[str, str]]:
    """The defense's loss parts (``defense.training.parts``): per part, its per-epoch means."""
    training = (run.data.get("defense") or {}).get("training") or {}
    parts = training.get("parts") if isinstance(training, dict) else None
    if not isinstance(parts, dict):
        return []
    return [{"name": str(k), "epochs": ", ".join(_num(v) for v in (vs if isinstance(vs, list) else [vs]))}
            for k, vs in sorted(parts.items(), key=lambda kv: str(kv[0]))]


def _schedule(defense: dict[str, Any]) -> str:
    """``defense.schedule`` as one line: where the schedule came from and what it overrode."""
    record = defense.get("schedule")
    if not isinstance(record, dict):
        return ""
    changed = record.get("overridden") if isinstance(record.get("overridden"), dict) else {}
    text = f"{record.get('source', '?')}"
    if changed:
        text += " (overrides the method's own default: " + ", ".join(
            f"{k} {v[0]} → {v[1]}" if isinstance(v, list) and len(v) == 2 else f"{k}" for k, v in changed.items()) + ")"
    return text


def _details(board: SuiteBoard) -> list[dict[str, Any]]:
    out = []
    for a in board.attacks:
        for d in board.defenses:
            cell = board.cell(a, d)
            if cell is None:
                continue
            first = cell.runs[0].data
            row = cell.row()
            summary = f"CA {_PCT.display(row['ca'])} / ASR {_PCT.display(row['asr'])}"
            out.append({
                "id": "cell-" + slug(board.suite, a, d), "attack": a, "defense": d, "family": cell.family,
                "stage": cell.stage, "origin": row["origin"], "attack_source": cell.attack_source,
                "defense_source": cell.defense_source, "summary": summary,
                "seeds_ok": len(cell.ok_runs), "seeds_all": len(cell.runs),
                "attack_config": json.dumps((first.get("attack") or {}).get("config"), indent=1, sort_keys=True),
                "defense_config": json.dumps((first.get("defense") or {}).get("config"), indent=1, sort_keys=True),
                "model": json.dumps(first.get("model"), sort_keys=True),
                "attack_paper": str((first.get("attack") or {}).get("paper") or ""),
                "defense_paper": str((first.get("defense") or {}).get("paper") or ""),
                "schedule": _schedule(first.get("defense") or {}),
                "runs": [_seed_row(r) for r in cell.runs],
            })
    return out


def _provenance(cells: list[CellResult]) -> dict[str, str]:
    created = sorted(str((c.data.get("provenance") or {}).get("created") or "") for c in cells)
    versions = sorted({str((c.data.get("provenance") or {}).get("clipbench") or "?") for c in cells})
    gits = sorted({str((c.data.get("provenance") or {}).get("git")) for c in cells
                   if (c.data.get("provenance") or {}).get("git")})
    return {"first": next((x for x in created if x), "–"), "last": created[-1] if created and created[-1] else "–",
            "versions": ", ".join(versions), "git": ", ".join(gits) or "–"}


def _suite_context(board: SuiteBoard, images: dict[str, str], thumbs: dict[str, str] | None = None) -> dict[str, Any]:
    rankings = []
    for scope, rows in board.defense_rankings.items():
        rankings.append({"scope": scope, "table": _table(DEFENSE_COLUMNS, rows, ("stage", "origin"))})
    cell_rows = []
    for a in board.attacks:
        for d in board.defenses:
            c = board.cell(a, d)
            if c is not None:
                cell_rows.append(dict(c.row(), detail="cell-" + slug(board.suite, a, d)))
    return {
        "name": board.suite, "id": "suite-" + slug(board.suite), "base_suite": board.base_suite,
        "is_variant": board.is_variant, "notes": board.notes,
        "settings": [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in sorted(board.settings.items())],
        "attacks": board.attacks, "defenses": board.defenses, "families": board.families,
        "rankings": rankings,
        "attack_table": _table(ATTACK_COLUMNS, [dict(r, origin=r["origin"]) for r in board.attack_ranking],
                               ("family", "origin", "group"), thumbs=thumbs),
        "cell_table": _table(CELL_COLUMNS, cell_rows, ("family", "stage", "origin"),
                             links={"attack": lambda r: "#" + r["detail"], "defense": lambda r: "#" + r["detail"]}),
        "images": images, "details": _details(board),
        "clean_ca": clean_model_ca(board), "ca_span": CA_SPAN,
        "pareto_line": sum(r["pareto"] == "yes" for r in board.defense_rankings["all"]) > 1,
        "n_seeds": len({r.seed for c in board.cells.values() for r in c.runs}),
    }


# ----------------------------------------------------------------------------- CSV / Markdown
def _csv(columns: tuple[Column, ...], rows: list[tuple[dict[str, str], dict[str, Any]]]) -> str:
    buf = io.StringIO()
    lead = list(rows[0][0]) if rows else ["suite"]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(lead + [c.key for c in columns])
    for prefix, r in rows:
        writer.writerow(list(prefix.values()) + [c.raw(r.get(c.key)) for c in columns])
    return buf.getvalue()


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(columns: tuple[Column, ...], rows: list[dict[str, Any]]) -> str:
    head = [_md_cell(f"{c.label} {c.arrow}".strip()) for c in columns]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if c.numeric else "---" for c in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_md_cell(c.display(r.get(c.key))) for c in columns) + " |")
    return "\n".join(lines)


def _markdown(boards: list[SuiteBoard]) -> str:
    parts = ["# clipbench leaderboard", "",
             "Rates in percent. ↓ lower is better, ↑ higher is better. ASR counts only test images whose true "
             "class is not the target. A defense without results for every attack gets no mean.", ""]
    for b in boards:
        if b.is_variant:
            differs = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(b.settings.items()))
            parts += [f"## Variant {b.suite}", "", f"A configuration of `{b.base_suite}` other than its own"
                      + (f": {_md_cell(differs)}." if differs else "."), ""]
        parts += [f"## {b.suite}: defenses", "", _md_table(DEFENSE_COLUMNS, b.defense_rankings["all"]), "",
                  f"## {b.suite}: attacks", "", _md_table(ATTACK_COLUMNS, b.attack_ranking), "",
                  f"## {b.suite}: cells (mean over seeds)", "",
                  _md_table(CELL_COLUMNS, [b.cell(a, d).row() for a in b.attacks for d in b.defenses
                                           if b.cell(a, d) is not None]), ""]
    return "\n".join(parts)


def _detection_markdown(sections: list[dict[str, Any]]) -> str:
    from .detection import detection_markdown

    return ("\n" + detection_markdown(sections)) if sections else ""


def _detection_csv(sections: list[dict[str, Any]]) -> str:
    from .detection import detection_csv

    return detection_csv(sections)


# ----------------------------------------------------------------------------- page
def render_page(context: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    # autoescape on for every template: names, configs and errors come from results and plugins
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.get_template("index.html.j2").render(**context)


def _thumbnails(boards: list[SuiteBoard], previews: Path, out_dir: Path, written: list[Path]) -> dict[str, str]:
    """Copy each attack's trigger preview ``<previews>/<attack>.png`` (``clipbench preview`` writes
    them) to ``img/attack-<slug>.png``; returns attack -> the page's relative path."""
    thumbs: dict[str, str] = {}
    for attack in sorted({a for b in boards for a in b.attacks}):
        src = previews / f"{attack}.png"
        if not src.is_file() or src.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
            continue
        name = f"img/attack-{slug(attack)}.png"
        _write(out_dir / name, src.read_bytes())
        written.append(out_dir / name)
        thumbs[attack] = name
    return thumbs


def build_site(results_dir: Path, out_dir: Path | None = None, *, figures: bool = True,
               previews: Path | None = None) -> BuildReport:
    """Read every cell result under ``results_dir`` and write the site into ``out_dir``.

    ``out_dir`` defaults to ``<results_dir>/leaderboard``. ``previews``: where the attacks'
    trigger thumbnails are (``<name>.png``, written by ``clipbench preview``; default
    ``<results_dir>/previews/attacks``): each found is shown in the attack ranking. Raises
    :class:`LeaderboardError` when the directory is missing or holds no result file.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "leaderboard"
    if not results_dir.is_dir():
        raise LeaderboardError(f"results directory {str(results_dir)!r} does not exist; run `clipbench run` first "
                               "or pass --results-dir")
    read = read_results(results_dir)
    detections, detection_skipped = read_detections(results_dir)
    read.skipped.extend(detection_skipped)
    if not read.cells and not detections:
        raise LeaderboardError(f"no cell results (seed-*.json, schema 1) under {str(results_dir)!r}; run "
                               "`clipbench run` first or pass --results-dir")
    boards = build_boards(read.cells)
    from .sweeps import read_sweeps, sweep_csv, sweep_figure

    sweeps, sweep_skipped = read_sweeps(results_dir)
    written: list[Path] = []
    suites = []
    img_dir = out_dir / "img"
    thumbs = _thumbnails(boards, Path(previews) if previews is not None else results_dir / "previews" / "attacks",
                         out_dir, written)
    for board in boards:
        images: dict[str, str] = {}
        if figures:
            from .plots import suite_figures

            for kind, png in suite_figures(board).items():
                name = f"img/{slug(board.suite)}-{kind}.png"
                _write(out_dir / name, png)
                written.append(out_dir / name)
                images[kind] = name
            png = sweep_figure([w for w in sweeps if w.suite == board.suite])
            if png is not None:
                name = f"img/{slug(board.suite)}-sweep.png"
                _write(out_dir / name, png)
                written.append(out_dir / name)
                images["sweep"] = name
        context = _suite_context(board, images, thumbs)
        context["sweeps"] = [w.row() for w in sweeps if w.suite == board.suite]
        context["not_implanted"] = board.not_implanted
        suites.append(context)
    detection_sections = []
    for variant in sorted({r.variant for r in detections}):
        from .detection import heatmap_png, roc_png, section

        these = [r for r in detections if r.variant == variant]
        images = {}
        if figures:
            draft = section(variant, these, {})
            for kind, png in (("detection_heatmap", heatmap_png(draft["rows"], draft["attacks"], draft["detectors"])),
                              ("detection_roc", roc_png(these, draft["attacks"], draft["detectors"]))):
                if png is not None:
                    name = f"img/{slug(variant)}-{kind.replace('_', '-')}.png"
                    _write(out_dir / name, png)
                    written.append(out_dir / name)
                    images[kind] = name
        detection_sections.append(section(variant, these, images))
    if img_dir.is_dir():  # drop images of suites no longer in the results (only our own PNGs)
        for stale in sorted(img_dir.glob("*.png")):
            if stale not in written:
                stale.unlink()
    context = {
        "suites": suites, "provenance": _provenance(read.cells), "skipped": read.skipped + sweep_skipped,
        "n_cells": len(read.cells), "n_failed": sum(not c.ok for c in read.cells),
        "families": sorted({f for b in boards for f in b.families}, key=family_key),
        "stages": sorted({c.defense_stage for c in read.cells}),
        "defense_columns": DEFENSE_COLUMNS, "attack_columns": ATTACK_COLUMNS,
        "detection": detection_sections,
    }
    index = out_dir / "index.html"
    _write(index, render_page(context))
    defense_rows = [({"suite": b.suite, "scope": scope}, r) for b in boards for scope, rows in b.defense_rankings.items()
                    for r in rows]
    attack_rows = [({"suite": b.suite}, r) for b in boards for r in b.attack_ranking]
    cell_rows = [({"suite": b.suite}, b.cell(a, d).row()) for b in boards for a in b.attacks for d in b.defenses
                 if b.cell(a, d) is not None]
    for name, text in (("defenses.csv", _csv(DEFENSE_COLUMNS, defense_rows)),
                       ("attacks.csv", _csv(ATTACK_COLUMNS, attack_rows)),
                       ("cells.csv", _csv(CELL_COLUMNS, cell_rows)),
                       ("leaderboard.md", _markdown(boards) + _detection_markdown(detection_sections))) \
            + ((("sweeps.csv", sweep_csv(sweeps)),) if sweeps else ()) \
            + ((("detection.csv", _detection_csv(detection_sections)),) if detection_sections else ()):
        _write(out_dir / name, text)
        written.append(out_dir / name)
    shown = [b.suite for b in boards]
    shown += [name for name in sorted({r.suite for r in detections}) if name not in shown]
    return BuildReport(out_dir, index, shown, len(read.cells),
                       sum(not c.ok for c in read.cells), read.skipped + sweep_skipped, [index] + written,
                       [n for b in boards for n in b.notes])
