"""Run a plan: execute missing stages in DAG order, then write one result per cell.

Cells whose result file already holds an ``ok`` result for the same cell key are skipped
(resumable, CLIP_benchmark style); stages found in the cache are not recomputed. A cell's
file lives in its configuration's folder (:func:`benchmark.results.variant_name`), so a run
of one configuration never overwrites or averages with another's; a result of another
configuration found in a cell's place (written by an older clipbench, or the suite's own
configuration changed since) is moved, with a warning, to the variant folder its recorded
configuration names, and one of the same configuration but older stages is replaced. A stage
that raises fails only the cells that depend on it; the rest of the matrix continues.

What a run would do is computed in :mod:`benchmark.run_status`, each cell's result record
in :mod:`benchmark.assemble`; their names are importable from here as before.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from .assemble import assemble, defense_training, diagnostics, git_commit, provenance  # noqa: F401
from .detect_run import write_detection
from .plan import Cell, Plan
from .results import write_result
from .run_status import Found, PlanStatus, finished, plan_status, set_aside  # noqa: F401
from .stages import StageExecutor


@dataclass
class RunReport:
    results: list[dict[str, Any]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # node labels computed now
    skipped_cells: int = 0
    failed: list[str] = field(default_factory=list)
    detections: list[dict[str, Any]] = field(default_factory=list)  # detection results (benchmark.detect_results)
    skipped_detections: int = 0



def _write(cell: Cell, plan: Plan, executor: StageExecutor, report: RunReport,
           err: tuple[BaseException, str] | None) -> None:
    result = assemble(cell, plan, executor, *(err or (None, None)))
    if executor.dist is None or executor.dist.is_main:  # torchrun: rank 0 writes
        write_result(cell.result_path, result)
    report.results.append(result)
    if err is not None:
        report.failed.append(f"{cell.attack}/{cell.defense} seed={cell.seed}: {type(err[0]).__name__}: {err[0]}")


def run_plan(plan: Plan, executor: StageExecutor, workers: Any = None, worker_spec: Any = None,
             costs: dict[str, float | None] | None = None, status: "PlanStatus | None" = None) -> RunReport:
    """Execute the stages ``plan`` needs and write every cell's result file.

    ``workers`` (see :mod:`benchmark.executors`; default: in this process) runs the stages;
    the DAG stays here: a stage is submitted once its inputs are cached, the one with the
    most expensive remaining path first (``costs``: estimated seconds per node). A cell's
    result file is written (atomically) as soon as its evaluations exist, so a killed run
    loses at most the stages in flight. A failing stage fails only the cells below it.
    ``status``: :func:`plan_status` of ``plan`` if the caller computed it already.
    """
    from .executors import LocalExecutor, Task, available_cores, stage_threads, stage_weight

    status = status if status is not None else plan_status(plan, executor)
    if executor.dist is None or executor.dist.is_main:
        for found in status.found:  # before anything runs: results of other configurations to their own folders
            if found.destination is not None:
                found.destination = set_aside(found)
            executor.reporter.warn(found.message(done=True))
    report = RunReport(results=[r for _, r in status.finished], skipped_cells=len(status.finished),
                       detections=[r for _, r in status.detections_finished],
                       skipped_detections=len(status.detections_finished))
    todo = list(status.todo_cells)
    pending = {n.key: n for n in status.to_run}
    failures: dict[str, tuple[BaseException, str]] = {}
    waiting = list(todo)
    detections_waiting = list(status.detections_todo)

    def flush() -> None:  # write every cell (and detection result) whose stages are resolved
        nonlocal waiting, detections_waiting
        still = []
        for cell in waiting:
            keys = (cell.eval_key, cell.baseline_key, cell.clean_key)
            err = next((failures[k] for k in keys if k in failures), None)
            if err is None and any(k in pending for k in keys):
                still.append(cell)
                continue
            _write(cell, plan, executor, report, err)
        waiting = still
        still_detections = []
        for cell in detections_waiting:
            err = next((failures[k] for k in cell.keys if k in failures), None)
            if err is None and any(k in pending for k in cell.keys):
                still_detections.append(cell)
                continue
            report.detections.append(write_detection(cell, plan, executor, err))
            if err is not None:
                report.failed.append(f"{cell.attack}/detector {cell.detector} seed={cell.seed}: "
                                     f"{type(err[0]).__name__}: {err[0]}")
        detections_waiting = still_detections

    children: dict[str, list[str]] = {k: [] for k in pending}
    missing = {k: 0 for k in pending}
    for key, node in pending.items():
        for d in node.deps:
            if d in pending:
                children[d].append(key)
                missing[key] += 1
    costs = costs or {}
    order = {k: i for i, k in enumerate(pending)}
    rank: dict[str, float] = {}
    for key in reversed(list(pending)):  # pending is topological: children come later
        rank[key] = (costs.get(key) or 1.0) + max((rank[c] for c in children[key]), default=0.0)
    pool = workers if workers is not None else LocalExecutor(executor)
    if pending and worker_spec is not None and hasattr(pool, "warm"):
        pool.warm(worker_spec)  # workers import the engine while the first stage starts
    if pool.slots == 1:  # one stage at a time: plan order (depth-first), so cells finish early and steadily
        rank = {k: 0.0 for k in rank}
    ready = [(-rank[k], order[k], k) for k in pending if missing[k] == 0]
    heapq.heapify(ready)

    cores = available_cores()
    shares_cores = getattr(pool, "shares_cores", False)  # a local pool: weigh stages by their threads
    running: dict[Any, str] = {}
    weights: dict[Any, int] = {}
    flush()
    try:
        while ready or running:
            while ready and sum(weights.values()) < pool.slots:
                key = ready[0][2]
                threads = stage_threads(pending[key], cores, pool.slots)
                weight = stage_weight(threads, cores, pool.slots) if shares_cores else 1
                if running and sum(weights.values()) + weight > pool.slots:
                    break  # the most urgent stage waits for its cores (no oversubscription)
                heapq.heappop(ready)
                node = pending[key]
                if len(running) or pool.slots > 1:
                    executor.reporter.log(f"[cyan]started[/] {node.label}")
                else:
                    executor.reporter.log(f"[cyan]running[/] {node.label}")
                handle = pool.submit(Task(node, worker_spec, threads))
                running[handle], weights[handle] = key, weight
            for handle, outcome in pool.wait(list(running)):
                key = running.pop(handle)
                weights.pop(handle, None)
                node = pending[key]
                if outcome.ok:
                    report.ran.append(node.label)
                    if pool.slots > 1:
                        executor.reporter.log(f"[green]done[/] {node.label} ({outcome.seconds:.1f} s)")
                    del pending[key]
                    for child in children[key]:
                        missing[child] -= 1
                        if missing[child] == 0 and child not in failures:
                            heapq.heappush(ready, (-rank[child], order[child], child))
                else:
                    err = (outcome.exception(), outcome.traceback or "")
                    executor.reporter.log(f"[red]failed[/] {node.label}: {outcome.error_type}: {outcome.error}")
                    stack = [key]
                    while stack:  # the stage and everything below it
                        k = stack.pop()
                        if k not in failures:
                            failures[k] = err
                            stack.extend(children[k])
                    for k in list(failures):
                        pending.pop(k, None)
                flush()
    except BaseException:
        close = getattr(pool, "abort", None) or pool.close
        close()
        raise
    pool.close()
    flush()
    return report
