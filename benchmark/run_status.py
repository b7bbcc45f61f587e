"""What a run of a plan would do now: :func:`plan_status` (finished cells, stages cached and to run).

A cell is finished when its result file holds an ``ok`` result for the same cell key.
An ``ok`` result of another configuration in a cell's place (written by an older
clipbench, or the suite's own configuration changed since) is a :class:`Found`: the
runner moves it (:func:`set_aside`), with a warning, to the variant folder its recorded
configuration names; one of the same configuration but older stages is replaced.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plan import Cell, Node, Plan
from .results import cell_path, read_result, result_identity, variant_name, variant_settings
from .stages import StageExecutor


def finished(cell: Cell) -> dict[str, Any] | None:
    result = read_result(cell.result_path)
    if result and result.get("status") == "ok" and result.get("provenance", {}).get("cell_key") == cell.cell_key:
        return result
    return None


@dataclass
class Found:
    """An ``ok`` result in a planned cell's place that this run would not reuse."""

    cell: Cell
    result: dict[str, Any]
    destination: Path | None  # its configuration's own place; None: same configuration, older stages (replaced)

    def message(self, done: bool) -> str:
        prov = self.result.get("provenance") or {}
        written = f"written {prov.get('created', '?')} by clipbench {prov.get('clipbench', '?')} (git {prov.get('git') or '?'})"
        if self.destination is None:
            return (f"{self.cell.result_path} holds a result of the same configuration whose stages differ ({written}); "
                    + ("it is replaced" if done else "a run replaces it"))
        return (f"{self.cell.result_path} holds a result of another configuration ({written}); "
                + ("moved" if done else "a run moves it") + f" to {self.destination}, where its configuration's results go")


def _found(cell: Cell, result: dict[str, Any]) -> Found:
    identity = result_identity(result)
    suite = str(result.get("suite") or cell.variant.split("~")[0])
    if identity is None:  # no recorded configuration: keep it apart under its cell key
        name = f"{suite}~unrecorded-{str((result.get('provenance') or {}).get('cell_key', 'x')).removeprefix('sha256:')[:6]}"
    else:
        name = variant_name(suite, variant_settings(cell.identity, identity))
    if name == cell.variant:
        return Found(cell, result, None)
    root = cell.result_path.parents[3]
    return Found(cell, result, cell_path(root, name, cell.attack, cell.defense, cell.seed))


def set_aside(found: Found) -> Path | None:
    """Move a result of another configuration to its configuration's folder (never over a file:
    if one is there, as ``displaced-seed-<k>-<hash>.json``, which no reader takes for a cell)."""
    import hashlib
    import os

    if found.destination is None:
        return None
    dest = found.destination
    if dest.exists():
        digest = hashlib.sha256(found.cell.result_path.read_bytes()).hexdigest()[:8]
        dest = dest.with_name(f"displaced-seed-{found.cell.seed}-{digest}.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(found.cell.result_path, dest)
    return dest


@dataclass
class PlanStatus:
    """What a run of ``plan`` would do now."""

    finished: list[tuple[Cell, dict[str, Any]]]  # cells whose result file is final, with that result
    todo_cells: list[Cell]
    cached: list[Node]  # needed stages already in the cache
    to_run: list[Node]  # needed stages to compute, in DAG order
    found: list[Found] = field(default_factory=list)  # ok results in a cell's place that are not reused
    #: detection results (benchmark.plan.DetectionCell): finished ones with their content, and those to write
    detections_finished: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    detections_todo: list[Any] = field(default_factory=list)

    @property
    def finished_cells(self) -> list[Cell]:
        return [c for c, _ in self.finished]

    @property
    def width(self) -> int:
        """How many stages to run could start at once at best (the widest DAG level)."""
        level: dict[str, int] = {}
        keys = {n.key for n in self.to_run}
        for n in self.to_run:
            level[n.key] = 1 + max((level[d] for d in n.deps if d in keys), default=0)
        counts: dict[int, int] = {}
        for v in level.values():
            counts[v] = counts.get(v, 0) + 1
        return max(counts.values(), default=0)


def plan_status(plan: Plan, executor: StageExecutor) -> PlanStatus:
    done, todo, found = [], [], []
    for cell in plan.cells:
        result = finished(cell)
        if result is not None:
            done.append((cell, result))
        else:
            todo.append(cell)
            other = read_result(cell.result_path)
            if other is not None and other.get("status") == "ok":
                found.append(_found(cell, other))
    from .detect_run import detection_status

    detections_done, detections_todo = detection_status(plan)
    needed = plan.needed({k for c in todo for k in (c.eval_key, c.baseline_key, c.clean_key)}
                         | {k for d in detections_todo for k in d.keys})
    cached, to_run = [], []
    for node in needed:
        (cached if executor.done(node) else to_run).append(node)
    return PlanStatus(done, todo, cached, to_run, found, detections_done, detections_todo)
