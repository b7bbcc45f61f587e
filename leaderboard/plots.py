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
#: the CA heatmap's colours span the clean model's CA +/- this many points (stated on its colour bar), so a
#: 2-point difference looks like one and a defense that costs 20 points is saturated
CA_SPAN = 20.0


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def _plain_labels(ax: Any) -> None:
    for label in list(ax.get_xticklabels()) + list(ax.get_yticklabels()):
        label.set_parse_math(False)


def clean_model_ca(board: SuiteBoard) -> float | None:
    """The clean model's CA in percent (mean over the cells that recorded it), the CA colour scale's centre."""
    values = [v for c in board.cells.values() if (v := c.mean("clean_model", "clean_accuracy")) is not None]
    return 100.0 * sum(values) / len(values) if values else None


def heatmap(board: SuiteBoard, block: str, name: str, title: str, cmap: str, better: str) -> bytes:
    """Attacks (rows) x defenses (columns) of the mean over seeds, in percent.

    Colour scales never stretch to the data: ASR spans 0-100; CA is centred on the clean
    model's CA with a span of +/- :data:`CA_SPAN` points (diverging: red below the clean
    model, blue above), else 0-100 when no clean-model CA was recorded."""
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
    width = max(4.8, 2.2 + 1.05 * max(1, len(board.defenses)))  # a single cell still has room for its labels
    height = max(2.8, 1.4 + 0.55 * max(1, len(board.attacks)))
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    bar = f"% ({better} is better)"
    clean = clean_model_ca(board) if name == "clean_accuracy" else None
    if clean is not None:
        vmin, vmax, cmap = clean - CA_SPAN, clean + CA_SPAN, "RdBu"
        title = f"{title}\ncolours: the clean model's CA {clean:.1f} (white) ± {CA_SPAN:.0f} points"
    else:
        vmin, vmax = 0.0, 100.0
    sns.heatmap(values, ax=ax, annot=labels, fmt="", cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0.5,
                linecolor="white", cbar_kws={"label": bar},
                xticklabels=board.defenses, yticklabels=board.attacks, annot_kws={"fontsize": 9})
    ax.set_facecolor("#eeeeee")  # missing cells
    for i in range(len(board.attacks)):  # label the masked (missing/failed) cells too
        for j in range(len(board.defenses)):
            if math.isnan(values[i, j]):
                ax.text(j + 0.5, i + 0.5, labels[i, j], ha="center", va="center", fontsize=8, color="#666666")
    ax.set_xlabel("defense")
    ax.set_ylabel("attack")
    ax.set_title(title, fontsize=11 if "\n" not in title else 10)
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
    labels: list[Any] = []
    for r in ranked:
        x, y = 100 * r["mean_asr"], 100 * r["mean_ca"]
        on_front = r["pareto"] == "yes"
        ax.scatter([x], [y], s=70 if on_front else 45, color=colors[r["defense"]], edgecolors="black",
                   linewidths=1.2 if on_front else 0.4, zorder=3)
        labels.append(ax.annotate(r["defense"], (x, y), xytext=(6, 4), textcoords="offset points", fontsize=9,
                                  parse_math=False, zorder=4,
                                  arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.6,
                                              "shrinkA": 0, "shrinkB": 4}))
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
    spread_labels(fig, labels)
    return _png(fig)


def spread_labels(fig: Any, labels: list[Any], gap_px: float = 2.0, passes: int = 60) -> None:
    """Move overlapping annotation labels apart vertically (in their offset, so each keeps a thin
    line to its point): deterministic, pairwise, until no two labels' boxes overlap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    if len(labels) < 2:
        return
    renderer = FigureCanvasAgg(fig).get_renderer()
    to_points = 72.0 / fig.dpi

    def box(t: Any) -> Any:  # the text alone (an annotation's own extent includes its line)
        return Text.get_window_extent(t, renderer)

    for _ in range(passes):
        boxes = [box(t) for t in labels]
        moved = False
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                a, b = boxes[i], boxes[j]
                if a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0:
                    continue
                lower, upper = (i, j) if (a.y0 + a.y1, i) < (b.y0 + b.y1, j) else (j, i)
                overlap = min(a.y1, b.y1) - max(a.y0, b.y0) + gap_px
                for k, sign in ((lower, -1), (upper, 1)):
                    x, y = labels[k].xyann
                    labels[k].xyann = (x, y + sign * overlap / 2 * to_points)
                boxes[lower], boxes[upper] = box(labels[lower]), box(labels[upper])
                moved = True
        if not moved:
            return


def suite_figures(board: SuiteBoard) -> dict[str, bytes]:
    """``{"asr": png, "ca": png, "scatter": png}`` for one suite (no scatter with a single defense)."""
    figures = {
        "asr": heatmap(board, "metrics", "asr", f"ASR % of the defended model ({board.suite})", "Reds", "lower"),
        "ca": heatmap(board, "metrics", "clean_accuracy", f"CA % of the defended model ({board.suite})", "Blues",
                      "higher"),
    }
    if len(board.defenses) > 1:  # one defense is nothing to compare: no scatter
        figures["scatter"] = scatter(board)
    return figures
