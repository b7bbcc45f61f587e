"""Figures of the leaderboard: attack x defense heatmaps (seaborn) and CA-vs-ASR scatter.

Figures are drawn on explicit ``matplotlib.figure.Figure`` objects (no pyplot, no global
backend or style changes) and saved as PNG without metadata, so the same results give
byte-identical images on the same library versions. Text that comes from results (method
names) is drawn with mathtext off: a ``$`` in a plugin's name is shown, not parsed.
"""
from __future__ import annotations

import io
import math
from typing import Any

from .ranking import SuiteBoard

DPI = 110


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def _plain_labels(ax: Any) -> None:
    for label in list(ax.get_xticklabels()) + list(ax.get_yticklabels()):
        label.set_parse_math(False)


def heatmap(board: SuiteBoard, block: str, name: str, title: str, cmap: str, better: str) -> bytes:
    """Attacks (rows) x defenses (columns) of the mean over seeds, in percent."""
    import numpy as np
    import seaborn as sns
    from matplotlib.figure import Figure

    values = np.array([[np.nan if v is None else 100.0 * v for v in row] for row in board.matrix(block, name)],
                      dtype=float).reshape(len(board.attacks), len(board.defenses))
    labels = np.empty(values.shape, dtype=object)
    for i, a in enumerate(board.attacks):
        for j, d in enumerate(board.defenses):
            cell = board.cell(a, d)
            if not math.isnan(values[i, j]):
                labels[i, j] = f"{values[i, j]:.1f}"
            else:
                labels[i, j] = "failed" if cell is not None and cell.runs else "–"
    width = 2.2 + 1.05 * max(1, len(board.defenses))
    height = 1.4 + 0.55 * max(1, len(board.attacks))
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    finite = values[~np.isnan(values)]
    if block == "metrics" and name == "asr":
        vmin, vmax = 0.0, 100.0
    else:
        vmin = float(finite.min()) if finite.size else 0.0
        vmax = float(finite.max()) if finite.size else 100.0
        if vmax - vmin < 1.0:
            vmin, vmax = vmin - 0.5, vmax + 0.5
    sns.heatmap(values, ax=ax, annot=labels, fmt="", cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0.5,
                linecolor="white", cbar_kws={"label": f"% ({better} is better)"},
                xticklabels=board.defenses, yticklabels=board.attacks, annot_kws={"fontsize": 9})
    ax.set_facecolor("#eeeeee")  # missing cells
    for i in range(len(board.attacks)):  # label the masked (missing/failed) cells too
        for j in range(len(board.defenses)):
            if math.isnan(values[i, j]):
                ax.text(j + 0.5, i + 0.5, labels[i, j], ha="center", va="center", fontsize=8, color="#666666")
    ax.set_xlabel("defense")
    ax.set_ylabel("attack")
    ax.set_title(title, fontsize=11)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.tick_params(axis="y", labelrotation=0)
    _plain_labels(ax)
    return _png(fig)


def scatter(board: SuiteBoard) -> bytes:
    """Each defense's mean CA vs mean ASR over attacks, with the Pareto front.

    Small faint points are single attack x defense cells; large points are the defenses
    that cover every attack (only those have a mean); the line joins the Pareto front.
    """
    from matplotlib.figure import Figure

    rows = board.defense_rankings["all"]
    fig = Figure(figsize=(7.0, 4.6))
    ax = fig.add_subplot()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    colors = {d: palette[i % len(palette)] for i, d in enumerate(board.defenses)}
    for (a, d), cell in sorted(board.cells.items()):
        ca, asr = cell.mean("metrics", "clean_accuracy"), cell.mean("metrics", "asr")
        if ca is not None and asr is not None:
            ax.scatter([100 * asr], [100 * ca], s=14, color=colors[d], alpha=0.35, linewidths=0)
    ranked = [r for r in rows if r["mean_asr"] is not None and r["mean_ca"] is not None]
    for r in ranked:
        x, y = 100 * r["mean_asr"], 100 * r["mean_ca"]
        on_front = r["pareto"] == "yes"
        ax.scatter([x], [y], s=70 if on_front else 45, color=colors[r["defense"]], edgecolors="black",
                   linewidths=1.2 if on_front else 0.4, zorder=3)
        ax.annotate(r["defense"], (x, y), xytext=(6, 4), textcoords="offset points", fontsize=9, parse_math=False)
    front = sorted((r for r in ranked if r["pareto"] == "yes"), key=lambda r: (r["mean_asr"], -r["mean_ca"]))
    if len(front) > 1:
        ax.plot([100 * r["mean_asr"] for r in front], [100 * r["mean_ca"] for r in front], color="black",
                linestyle="--", linewidth=1, zorder=2, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_xlabel("ASR % (lower is better)")
    ax.set_ylabel("CA % (higher is better)")
    ax.set_title("clean accuracy vs attack success rate (mean over attacks; faint: single cells)", fontsize=10)
    ax.set_xlim(-3, 103)
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return _png(fig)


def suite_figures(board: SuiteBoard) -> dict[str, bytes]:
    """``{"asr": png, "ca": png, "scatter": png}`` for one suite."""
    return {
        "asr": heatmap(board, "metrics", "asr", f"ASR % of the defended model ({board.suite})", "Reds", "lower"),
        "ca": heatmap(board, "metrics", "clean_accuracy", f"CA % of the defended model ({board.suite})", "Blues",
                      "higher"),
        "scatter": scatter(board),
    }
