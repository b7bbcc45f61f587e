"""The runner's side of detection results: which are finished, and writing each one.

A detection result (:class:`~benchmark.plan.DetectionCell`) is finished when its file holds an
``ok`` result of the same cell key (its detect stages and attack), like a cell; it is written
(atomically) as soon as every stage it needs is cached, or as failed when one of them failed.
"""
from __future__ import annotations

from typing import Any

from .plan import DetectionCell, Plan
from .results import read_result, write_result


def finished_detection(cell: DetectionCell) -> dict[str, Any] | None:
    """The ``ok`` result in ``cell``'s file when it has ``cell``'s key, else None."""
    result = read_result(cell.result_path)
    if (result and result.get("kind") == "detection" and result.get("status") == "ok"
            and result.get("provenance", {}).get("cell_key") == cell.cell_key):
        return result
    return None


def detection_status(plan: Plan) -> tuple[list[tuple[DetectionCell, dict[str, Any]]], list[DetectionCell]]:
    """(finished detection results with their content, detection results still to write)."""
    done, todo = [], []
    for cell in plan.detections:
        result = finished_detection(cell)
        (done.append((cell, result)) if result is not None else todo.append(cell))
    return done, todo


def write_detection(cell: DetectionCell, plan: Plan, executor, err: tuple[BaseException, str] | None) -> dict[str, Any]:
    """Assemble and write one detection result (rank 0 writes in a torchrun job); returns it."""
    from .detect_results import assemble_detection

    result = assemble_detection(cell, plan, executor, *(err or (None, None)))
    if executor.dist is None or executor.dist.is_main:
        write_result(cell.result_path, result)
    return result
