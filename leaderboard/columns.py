"""Every leaderboard column, declared once: label, definition and which direction is better.

The HTML page, the CSV files and the Markdown tables are all rendered from these
declarations, so a column's meaning and its "lower/higher is better" mark cannot drift
between views. The arrows take the defender's side in every table: an ASR is always
lower-is-better and a CA higher-is-better, also in the attack ranking, whose descriptions
say which way a stronger attack goes. Values are fractions in [0, 1] (percent only on display), seconds, or text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Better = Literal["lower", "higher"]
Kind = Literal["text", "int", "pct", "pp", "ratio", "seconds", "coverage"]


@dataclass(frozen=True)
class Column:
    """One column: ``key`` into a row dict; ``better`` is None only for labels (names, stage)."""

    key: str
    label: str
    description: str
    better: Better | None = None
    kind: Kind = "text"

    @property
    def arrow(self) -> str:
        return {"lower": "↓", "higher": "↑"}.get(self.better or "", "")

    @property
    def direction_text(self) -> str:
        return f"{self.better} is better" if self.better else ""

    def display(self, value: Any) -> str:
        """Human text for the page and Markdown (percent for rates); '–' when missing."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if self.kind == "pct":
            return f"{100 * value:.1f}"
        if self.kind == "pp":
            return f"{100 * value:+.1f}"
        if self.kind == "ratio":
            return f"{value:.3f}"
        if self.kind == "seconds":
            return f"{value:.1f}"
        if self.kind == "coverage":
            return f"{value[0]}/{value[1]}" if value[1] else "–"  # nothing to cover (e.g. only `none` was run)
        return str(value)

    def raw(self, value: Any) -> str:
        """Machine text for CSV: fractions with 6 decimals, empty when missing."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if self.kind in ("pct", "pp", "ratio"):
            return f"{value:.6f}"
        if self.kind == "seconds":
            return f"{value:.3f}"
        if self.kind == "coverage":
            return f"{value[0]}/{value[1]}"
        return str(value)

    def sort_value(self, value: Any) -> str:
        """The ``data-sort`` attribute the page's script sorts by (numbers as numbers)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if self.kind == "coverage":
            return f"{value[0] / value[1]:.6f}" if value[1] else "0"
        if self.kind in ("pct", "pp", "ratio", "seconds"):
            return f"{value:.6f}"
        if self.kind == "int":
            return str(int(value))
        return str(value)

    @property
    def numeric(self) -> bool:
        return self.kind != "text"


# --------------------------------------------------------------------------- defenses
DEFENSE_COLUMNS: tuple[Column, ...] = (
    Column("rank", "#", "Rank by mean ASR (then CA). Defenses that miss an attack are unranked.", None, "int"),
    Column("defense", "defense", "Registry name of the defense.", None, "text"),
    Column("stage", "stage", "When the defense acts: none (baseline), training (replaces the poisoned-training "
           "objective) or post_training (fine-tunes the backdoored model on clean data).", None, "text"),
    Column("source", "source", "Where the defense comes from: builtin, or the plugin distribution and version.",
           None, "text"),
    Column("mean_asr", "mean ASR", "Mean over attacks of the defended model's ASR (each attack: mean over seeds). "
           "Empty unless the defense has results for every attack: no flattering partial means.", "lower", "pct"),
    Column("worst_asr", "worst ASR", "Highest ASR over attacks (each: mean over seeds). Empty unless every "
           "attack is covered.", "lower", "pct"),
    Column("mean_ca", "CA", "Mean over attacks of the defended model's clean accuracy. Empty unless every attack "
           "is covered.", "higher", "pct"),
    Column("delta_ca", "ΔCA vs none", "Mean over attacks of CA(defended) − CA(undefended backdoored model on the "
           "same poisoned set), in percentage points.", "higher", "pp"),
    Column("mean_ra", "RA", "Mean over attacks of robust accuracy (triggered images classified as their true "
           "class).", "higher", "pct"),
    Column("mean_der", "DER", "Mean over attacks of the defense effectiveness rating, in [0, 1]; 0.5 means no "
           "change.", "higher", "ratio"),
    Column("coverage", "attacks", "Attacks with at least one successful seed / attacks in the suite.", "higher",
           "coverage"),
    Column("failed", "failed runs", "Seeds whose run failed (see the cell details for the error).", "lower", "int"),
    Column("cost_s", "cost (s)", "Mean seconds the defense adds per cell: the post-training stage's time, or the "
           "whole defended training for a training-stage defense; 0 for none. Measured on the machine that ran it.",
           "lower", "seconds"),
    Column("pareto", "Pareto", "On the CA-vs-ASR Pareto front: no other defense has both higher mean CA and "
           "lower mean ASR.", None, "text"),
)

# --------------------------------------------------------------------------- attacks
ATTACK_COLUMNS: tuple[Column, ...] = (
    Column("rank", "#", "Rank by mean ASR under defenses (strongest attack first).", None, "int"),
    Column("attack", "attack", "Registry name of the attack.", None, "text"),
    Column("family", "family", "Kind of trigger: patch, blend, warp, clean_label, ...", None, "text"),
    Column("source", "source", "Where the attack comes from: builtin, or the plugin distribution and version.",
           None, "text"),
    Column("clean_model_asr", "clean-model ASR", "ASR of the clean pre-trained model with the trigger applied: the "
           "floor every defense is read against. Lower is better for a backdoor benchmark (a trigger that fools a "
           "clean model is an adversarial patch, not a backdoor).", "lower", "pct"),
    Column("undefended_asr", "ASR, no defense", "ASR of the backdoored model, no defense. As in every table, lower "
           "is better for the defender; a higher value is a stronger attack.", "lower", "pct"),
    Column("implant", "implanted", "Whether the backdoor was implanted: the mean undefended ASR reached 50%. An "
           "attack that was not implanted is left out of every defense mean and ranking (there was nothing to "
           "remove).", None, "text"),
    Column("undefended_ca", "CA, no defense", "Clean accuracy of the backdoored model. Higher is better; a higher "
           "value is also a stealthier attack.", "higher", "pct"),
    Column("mean_asr_defended", "mean ASR under defenses", "Mean ASR over the defenses other than none. Empty "
           "unless every defense has a result. Lower is better for the defender; higher = an attack harder to "
           "remove (the ranking's order).", "lower", "pct"),
    Column("best_defense_asr", "best defense's ASR", "Lowest ASR any defense reaches against this attack. Lower is "
           "better for the defender; higher = an attack harder to remove.", "lower", "pct"),
    Column("best_defense", "best defense", "The defense with the lowest ASR against this attack.", None, "text"),
    Column("coverage", "defenses", "Defenses (other than none) with a result / defenses other than none in the "
           "results; – when only none was run.", "higher", "coverage"),
)

# --------------------------------------------------------------------------- cells
CELL_COLUMNS: tuple[Column, ...] = (
    Column("attack", "attack", "Attack name.", None, "text"),
    Column("family", "family", "Attack family.", None, "text"),
    Column("defense", "defense", "Defense name.", None, "text"),
    Column("stage", "stage", "Defense stage.", None, "text"),
    Column("seeds", "seeds", "Seeds with a successful run.", "higher", "int"),
    Column("failed", "failed", "Seeds whose run failed.", "lower", "int"),
    Column("ca", "CA", "Clean accuracy of the defended model, mean over seeds.", "higher", "pct"),
    Column("ca_std", "CA std", "Standard deviation of CA over seeds (ddof=1).", "lower", "pct"),
    Column("asr", "ASR", "Attack success rate of the defended model, mean over seeds.", "lower", "pct"),
    Column("asr_std", "ASR std", "Standard deviation of ASR over seeds (ddof=1).", "lower", "pct"),
    Column("ra", "RA", "Robust accuracy, mean over seeds.", "higher", "pct"),
    Column("der", "DER", "Defense effectiveness rating, mean over seeds.", "higher", "ratio"),
    Column("baseline_ca", "CA, no defense", "CA of the undefended backdoored model on the same poisoned set.",
           "higher", "pct"),
    Column("baseline_asr", "ASR, no defense", "ASR of the undefended backdoored model.", "lower", "pct"),
    Column("clean_model_asr", "clean-model ASR", "ASR of the clean pre-trained model, trigger applied.", "lower",
           "pct"),
    Column("cost_s", "cost (s)", "Seconds the defense adds (see the defense ranking).", "lower", "seconds"),
)


def by_key(columns: tuple[Column, ...]) -> dict[str, Column]:
    return {c.key: c for c in columns}
