"""Split sizes for cost estimates without touching the data (``clipbench run --dry-run``).

:func:`benchmark.plan.estimate_cost` turns them into seconds with the suite's ``cost``
section (``train_samples_per_s``, ``eval_samples_per_s``). Sizes come from the data
config (``limit`` of an external split), then ``cost.split_sizes``, then the embedded
split sizes (times ``data.fraction``); ``None`` when unknown.
"""
from __future__ import annotations

from typing import Any

EMBEDDED_SIZES = {"pretrain": 14000, "poison": 8000, "defense": 4000, "val": 1000, "test": 5000}


def split_size(suite: Any, role: str) -> int | None:
    """Number of samples of ``role`` (pretrain, train, defense, val, test), or None if unknown."""
    data = suite.data
    if data.source == "embedded":
        size = EMBEDDED_SIZES.get(getattr(data, f"{role}_split", ""))
        return None if size is None else max(1, round(size * data.fraction))
    src = getattr(data, role, None)
    if src is not None and src.limit is not None:
        return src.limit
    return (getattr(suite.cost, "split_sizes", None) or {}).get(role)
