"""The no-defense baseline: the backdoored model as it is."""
from __future__ import annotations

from benchmark import Defense, DefenseConfig, DefenseStage


class NoDefense(Defense):
    """Evaluates the backdoored model unchanged (the row every defense is compared to)."""

    name = "none"
    stage = DefenseStage.NONE
    paper = "baseline"
    Config = DefenseConfig
