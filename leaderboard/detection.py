"""The leaderboard's detection section: detector ranking, attack x detector AUROC heatmap, ROC curves.

Reads detection result files only (:func:`leaderboard.reader.read_detections`). Per suite
folder (its own configuration or a variant):

- **sample detectors**: per (attack, detector), the mean over seeds of AUROC, AUPRC and TPR at
  1% FPR (each seed's file holds a bootstrap interval; with one seed it is shown, with several
  the spread across seeds); the detector ranking orders by mean AUROC over the attacks (a
  detector without a result for every attack gets no mean and no rank) and shows the worst;
- **model detectors**: AUROC over every model a detector scored: each seed's backdoored model of
  every attack (positives) against each seed's clean and clean fine-tuned models (negatives),
  with a seeded, class-stratified bootstrap interval (300 resamples); per attack, that attack's models against
  every clean one.

Figures never stretch their colours to the data: AUROC 0-1 centred on chance (0.5).
"""
from __future__ import annotations

import io
import math
import statistics
from typing import Any

from .reader import DetectionResult

#: bootstrap resamples of AUROC over models (a few dozen models: 300 resamples settle the 95% bounds)
BOOTSTRAP = 300
METRICS = ("auroc", "auprc", "tpr_at_fpr")


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def sample_rows(results: list[DetectionResult]) -> list[dict[str, Any]]:
    """One row per (attack, detector) of sample detectors: seeds, mean/std of each metric, the
    one-seed bootstrap interval, the mean precision of the flagged top 1%."""
    groups: dict[tuple[str, str], list[DetectionResult]] = {}
    for r in results:
        if r.kind == "sample":
            groups.setdefault((r.attack, r.detector), []).append(r)
    rows = []
    for (attack, detector), runs in sorted(groups.items()):
        ok = [r for r in runs if r.ok and isinstance(r.data.get("metrics"), dict)]
        row: dict[str, Any] = {"attack": attack, "detector": detector, "seeds": len(ok), "failed": len(runs) - len(ok),
                               "implanted": all(r.data.get("implanted", True) for r in ok) if ok else None,
                               "source": runs[0].detector_source}
        for m in METRICS:
            values = [float(r.data["metrics"][m]) for r in ok]
            row[m], row[f"{m}_std"] = _mean(values), _std(values)
            iv = ok[0].data["metrics"].get("intervals", {}).get(m) if len(ok) == 1 else None
            row[f"{m}_ci"] = list(iv) if isinstance(iv, (list, tuple)) and len(iv) == 2 else None
        precisions = [r.data.get("flagged", {}).get("precision") for r in ok]
        row["flag_precision"] = _mean([float(p) for p in precisions if isinstance(p, (int, float))])
        rows.append(row)
    return rows


def detector_ranking(rows: list[dict[str, Any]], attacks: list[str]) -> list[dict[str, Any]]:
    """Sample detectors ranked by mean AUROC over every attack (None without all attacks)."""
    by_detector: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_detector.setdefault(r["detector"], {})[r["attack"]] = r
    out = []
    for detector, cells in by_detector.items():
        complete = all(a in cells and cells[a]["auroc"] is not None for a in attacks)
        aurocs = [cells[a]["auroc"] for a in attacks if a in cells and cells[a]["auroc"] is not None]
        tprs = [cells[a]["tpr_at_fpr"] for a in attacks if a in cells and cells[a]["tpr_at_fpr"] is not None]
        auprcs = [cells[a]["auprc"] for a in attacks if a in cells and cells[a]["auprc"] is not None]
        out.append({"detector": detector, "coverage": f"{len(aurocs)}/{len(attacks)}",
                    "auroc": _mean(aurocs) if complete else None, "worst_auroc": min(aurocs) if complete else None,
                    "tpr_at_fpr": _mean(tprs) if complete else None, "auprc": _mean(auprcs) if complete else None,
                    "source": next(iter(cells.values()))["source"]})
    out.sort(key=lambda r: (r["auroc"] is None, -(r["auroc"] or 0), r["detector"]))
    rank = 0
    for r in out:
        r["rank"] = (rank := rank + 1) if r["auroc"] is not None else None
    return out


def _auroc(scores, labels) -> float:
    from sklearn.metrics import auc, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    return float(auc(fpr, tpr))  # roc_auc_score's value, without its per-call validation (the bootstrap's loop)


def _bootstrap_auroc(scores: list[float], labels: list[bool], seed: int = 0) -> list[float] | None:
    import numpy as np

    s, y = np.asarray(scores), np.asarray(labels, dtype=bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if len(pos) < 2 or len(neg) < 2:
        return None
    rng = np.random.default_rng([seed, 0xB007])
    draws = []
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        draws.append(_auroc(s[idx], y[idx]))
    return [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))]


def model_rows(results: list[DetectionResult]) -> list[dict[str, Any]]:
    """Per model detector and scope (all attacks, then each attack): AUROC over models with its
    interval, and the number of backdoored / clean models."""
    by_detector: dict[str, dict[tuple, dict[str, Any]]] = {}
    for r in results:
        if r.kind != "model" or not r.ok or not isinstance(r.data.get("models"), dict):
            continue
        models = by_detector.setdefault(r.detector, {})
        for role, entry in r.data["models"].items():
            attack = r.attack if role == "backdoored" else None
            if isinstance(entry, dict) and isinstance(entry.get("score"), (int, float)):
                models.setdefault((r.seed, role, attack), {"score": float(entry["score"]), "attack": attack,
                                                           "implanted": r.data.get("implanted")})
    rows = []
    for detector, models in sorted(by_detector.items()):
        attacks = sorted({m["attack"] for m in models.values() if m["attack"]})
        for scope in ["all", *attacks]:
            chosen = [m for m in models.values() if m["attack"] is None or scope in ("all", m["attack"])]
            labels = [m["attack"] is not None for m in chosen]
            scores = [m["score"] for m in chosen]
            if not any(labels) or all(labels):
                continue
            rows.append({"detector": detector, "scope": scope, "backdoored": sum(labels),
                         "clean": len(labels) - sum(labels), "auroc": _auroc(scores, labels),
                         "auroc_ci": _bootstrap_auroc(scores, labels),
                         "mean_backdoored": _mean([s for s, y in zip(scores, labels) if y]),
                         "mean_clean": _mean([s for s, y in zip(scores, labels) if not y])})
    return rows


def fmt(value: Any, ci: Any = None, std: Any = None, digits: int = 3) -> str:
    """A metric with its bootstrap interval (one seed) or its spread across seeds."""
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    elif isinstance(std, (int, float)):
        text += f" ± {std:.{digits}f}"
    return text


# ------------------------------------------------------------------------------ figures
def heatmap_png(rows: list[dict[str, Any]], attacks: list[str], detectors: list[str]) -> bytes | None:
    """Attack x detector AUROC, colours fixed to 0-1 and centred on chance (0.5)."""
    if not rows or not attacks or not detectors:
        return None
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = np.full((len(attacks), len(detectors)), np.nan)
    for r in rows:
        if r["auroc"] is not None:
            grid[attacks.index(r["attack"]), detectors.index(r["detector"])] = r["auroc"]
    fig = Figure(figsize=(1.2 + 1.1 * len(detectors), 0.9 + 0.5 * len(attacks)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(grid, cmap="RdBu", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(len(attacks)):
        for j in range(len(detectors)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if abs(grid[i, j] - 0.5) > 0.35 else "black")
    ax.set_xticks(range(len(detectors)), detectors, rotation=30, ha="right", fontsize=9)
    ax.set_yticks(range(len(attacks)), attacks, fontsize=9)
    ax.set_title("AUROC (0.5 = chance)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def roc_png(results: list[DetectionResult], attacks: list[str], detectors: list[str]) -> bytes | None:
    """ROC curves, one panel per attack, one line per detector (every seed; FPR on a log axis
    from 0.1%, where the 1% operating point is visible)."""
    curves = [r for r in results if r.kind == "sample" and r.ok and isinstance((r.data.get("metrics") or {}).get("roc"), dict)]
    if not curves:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(4, len(attacks))
    nrows = -(-len(attacks) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.9 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    colours = {d: f"C{i % 10}" for i, d in enumerate(detectors)}
    for k, attack in enumerate(attacks):
        ax = fig.add_subplot(nrows, cols, k + 1)
        for detector in detectors:
            first = True
            for r in curves:
                if r.attack == attack and r.detector == detector:
                    roc = r.data["metrics"]["roc"]
                    fpr = [max(f, 1e-3) for f in roc["fpr"]]
                    ax.plot(fpr, roc["tpr"], color=colours[detector], lw=1.2, alpha=0.8,
                            label=detector if first else None)
                    first = False
        ax.axvline(0.01, color="grey", lw=0.8, ls=":")
        ax.plot([1e-3, 1], [1e-3, 1], color="grey", lw=0.6, ls="--")
        ax.set_xscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(attack, fontsize=10)
        ax.set_xlabel("FPR (log)", fontsize=8)
        ax.set_ylabel("TPR", fontsize=8)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def section(variant: str, results: list[DetectionResult], images: dict[str, str]) -> dict[str, Any]:
    """The template context of one suite folder's detection section."""
    rows = sample_rows(results)
    attacks = sorted({r["attack"] for r in rows})
    ranking = detector_ranking(rows, attacks)
    for r in rows:
        r["text"] = {m: fmt(r[m], r[f"{m}_ci"], r[f"{m}_std"]) for m in METRICS}
        r["text"]["flag_precision"] = fmt(r["flag_precision"])
    for r in ranking:
        r["text"] = {m: fmt(r[m]) for m in ("auroc", "worst_auroc", "tpr_at_fpr", "auprc")}
    models = model_rows(results)
    for r in models:
        r["text"] = {"auroc": fmt(r["auroc"], r["auroc_ci"]), "mean_backdoored": fmt(r["mean_backdoored"]),
                     "mean_clean": fmt(r["mean_clean"])}
    return {"variant": variant, "id": "detection-" + variant.replace("~", "-"), "rows": rows, "ranking": ranking,
            "attacks": attacks, "detectors": [r["detector"] for r in ranking], "models": models, "images": images,
            "seeds": sorted({r.seed for r in results}), "failed": [r.path for r in results if not r.ok]}


def detection_csv(sections: list[dict[str, Any]]) -> str:
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "kind", "attack", "detector", "seeds", "auroc", "auroc_std", "auroc_ci_low", "auroc_ci_high",
                "auprc", "tpr_at_1pct_fpr", "tpr_std", "flag_precision", "models_backdoored", "models_clean"])

    def raw(v):
        return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)

    for s in sections:
        for r in s["rows"]:
            ci = r["auroc_ci"] or [None, None]
            w.writerow([s["variant"], "sample", r["attack"], r["detector"], r["seeds"], raw(r["auroc"]), raw(r["auroc_std"]),
                        raw(ci[0]), raw(ci[1]), raw(r["auprc"]), raw(r["tpr_at_fpr"]), raw(r["tpr_at_fpr_std"]),
                        raw(r["flag_precision"]), "", ""])
        for r in s["models"]:
            ci = r["auroc_ci"] or [None, None]
            w.writerow([s["variant"], "model", r["scope"], r["detector"], "", raw(r["auroc"]), "", raw(ci[0]), raw(ci[1]),
                        "", "", "", "", r["backdoored"], r["clean"]])
    return buf.getvalue()


def detection_markdown(sections: list[dict[str, Any]]) -> str:
    parts = []
    for s in sections:
        parts += [f"## {s['variant']}: detection", "",
                  "Sample detectors (poisoned pairs of the training set; mean over seeds, ± std or [95% bootstrap]):", "",
                  "| attack | detector | AUROC ↑ | AUPRC ↑ | TPR@1%FPR ↑ |", "|---|---|---:|---:|---:|"]
        parts += [f"| {r['attack']} | {r['detector']} | {r['text']['auroc']} | {r['text']['auprc']} | "
                  f"{r['text']['tpr_at_fpr']} |" for r in s["rows"]]
        if s["models"]:
            parts += ["", "Model detectors (AUROC over models: backdoored vs clean and clean fine-tuned, every seed):", "",
                      "| detector | scope | AUROC ↑ | backdoored | clean |", "|---|---|---:|---:|---:|"]
            parts += [f"| {r['detector']} | {r['scope']} | {r['text']['auroc']} | {r['backdoored']} | {r['clean']} |"
                      for r in s["models"]]
        parts.append("")
    return "\n".join(parts)
