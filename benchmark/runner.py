"""Run a plan: execute missing stages in DAG order, then write one result per cell.

Cells whose result file already holds an ``ok`` result for the same cell key are skipped
(resumable, CLIP_benchmark style); stages found in the cache are not recomputed. A cell's
file lives in its configuration's folder (:func:`benchmark.results.variant_name`), so a run
of one configuration never overwrites or averages with another's; a result of another
configuration found in a cell's place (written by an older clipbench, or the suite's own
configuration changed since) is moved, with a warning, to the variant folder its recorded
configuration names, and one of the same configuration but older stages is replaced. A stage
that raises fails only the cells that depend on it; the rest of the matrix continues.
"""
from __future__ import annotations

import datetime as _dt
import heapq
import platform
import subprocess
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .cache import Cache
from .config import config_hash, to_dict
from .evaluate import der
from .plan import Cell, Node, Plan
from .results import (IMPLANTED_ASR, SCHEMA_VERSION, cell_path, read_result, result_identity, variant_name,
                      variant_settings, write_result)
from .stages import StageExecutor


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _open_clip_version() -> str | None:
    """open_clip's version without importing it (the import takes ~6 s: torchvision, timm)."""
    import sys
    from importlib import metadata

    if "open_clip" in sys.modules:
        return sys.modules["open_clip"].__version__
    try:
        return metadata.version("open_clip_torch")
    except metadata.PackageNotFoundError:
        return None


def provenance(config_hash_: str, cell_key: str) -> dict[str, Any]:
    import torch

    return {"clipbench": __version__, "git": git_commit(), "torch": torch.__version__,
            "open_clip": _open_clip_version(), "python": platform.python_version(),
            "config_hash": config_hash_, "cell_key": cell_key,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


@dataclass
class RunReport:
    results: list[dict[str, Any]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # node labels computed now
    skipped_cells: int = 0
    failed: list[str] = field(default_factory=list)


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


def _metrics_block(m: dict[str, Any]) -> dict[str, Any]:
    block = {k: m[k] for k in ("clean_accuracy", "asr", "ra", "asr_at_k", "intervals", "counts")}
    for k in ("attribute_accuracy", "target_cosine"):  # absent from evaluations cached before they existed
        if m.get(k):
            block[k] = m[k]
    return block


def diagnostics(cell: Cell, plan: Plan, executor: StageExecutor, m: dict, b: dict, c: dict) -> dict[str, Any]:
    """The defense's mechanism, measured: the triggered images' cosine to the target class's
    text before (undefended) and after the defense, and what the defense's objective
    recorded (RoCLIP: per matching epoch, the poisoned images whose retrieved caption names
    the target class, i.e. comes from a poisoned pair or a clean target-class pair)."""
    out: dict[str, Any] = {}
    if m.get("target_cosine") and b.get("target_cosine"):
        out["target_cosine_triggered"] = {"clean_model": c.get("target_cosine", {}).get("triggered"),
                                          "before": b["target_cosine"]["triggered"],
                                          "after": m["target_cosine"]["triggered"]}
    key = cell.stage_keys.get("defense") or (cell.stage_keys["poison_train"] if cell.defense_stage == "training" else None)
    meta = executor.cache.meta("model", key) if key else None
    recorded = (meta or {}).get("train", {}).get("diagnostics") or {}
    target = plan.nodes[cell.eval_key].spec["target"]
    for entry in recorded.get("roclip_retrieval", []):
        n = entry["poisoned_images"]
        named = entry["retrieved_poisoned"] + entry["retrieved_label_counts"].get(str(target), 0)
        out.setdefault("roclip_retrieval", []).append({**entry, "fraction_naming_target": named / n if n else None})
    return out


def defense_training(cell: Cell, executor: StageExecutor) -> dict[str, Any] | None:
    """What the defense's own training recorded: steps, the mean loss per epoch and the per-epoch
    means of every ``LossOutput.parts`` entry (None for ``none``-stage defenses)."""
    if cell.defense_stage == "post_training":
        key, stage = cell.stage_keys.get("defense"), "defense"
    elif cell.defense_stage == "training":
        key, stage = cell.stage_keys.get("poison_train"), "poison_train"
    else:
        return None
    meta = executor.cache.meta("model", key) if key else None
    train = (meta or {}).get("train")
    if not train:
        return None
    return {"stage": stage, "steps": train.get("steps"), "loss_per_epoch": train.get("loss_history"),
            "parts": train.get("parts") or {}}


def assemble(cell: Cell, plan: Plan, executor: StageExecutor, error: BaseException | None = None,
             tb: str | None = None) -> dict[str, Any]:
    suite = plan.suite
    config = {"suite": to_dict(suite), "attack": cell.attack_config, "defense": cell.defense_config, "seed": cell.seed}
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "status": "ok" if error is None else "failed", "suite": suite.name,
        "variant": {"name": cell.variant or suite.name, "settings": cell.variant_settings},
        "seed": cell.seed, "model": {"arch": suite.model.arch, "pretrained": suite.model.pretrained},
        "attack": {"name": cell.attack, "source": cell.attack_source, "config": cell.attack_config,
                   "family": cell.attack_family, "paper": cell.attack_paper},
        "defense": {"name": cell.defense, "source": cell.defense_source, "stage": cell.defense_stage, "config": cell.defense_config,
                    "paper": cell.defense_paper, "schedule": cell.defense_schedule},
        "config": config, "provenance": provenance(config_hash(config), cell.cell_key), "error": None,
    }
    if error is not None:
        result["error"] = {"type": type(error).__name__, "message": str(error), "traceback": tb}
        return result
    m, b, c = (executor.metrics(k) for k in (cell.eval_key, cell.baseline_key, cell.clean_key))
    result["metrics"] = _metrics_block(m)
    result["baseline"] = _metrics_block(b)
    result["clean_model"] = _metrics_block(c)
    result["der"] = der(b["asr"], m["asr"], b["clean_accuracy"], m["clean_accuracy"])
    result["implanted"] = bool(b["asr"] >= IMPLANTED_ASR)
    result["diagnostics"] = diagnostics(cell, plan, executor, m, b, c)
    training = defense_training(cell, executor)
    if training is not None:
        result["defense"]["training"] = training
    poison_meta = executor.cache.meta("poison", cell.stage_keys["poison"])
    result["poison"] = {"num_poisoned": poison_meta["num_poisoned"],
                        "manifest": executor.cache.ref("poison", cell.stage_keys["poison"], "manifest.json")}
    timings = {}
    kinds = {"pretrain": "model", "poison": "poison", "poison_train": "model", "defense": "model"}
    for stage, key in cell.stage_keys.items():
        meta = executor.cache.meta(kinds[stage], key)  # None: an upstream entry was removed (corrupt) after use
        timings[stage] = round(meta["seconds"], 3) if meta else None
    timings["evaluate"] = round(executor.cache.meta("eval", cell.eval_key)["seconds"], 3)
    result["timings_s"] = timings
    return result


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
    report = RunReport(results=[r for _, r in status.finished], skipped_cells=len(status.finished))
    todo = list(status.todo_cells)
    pending = {n.key: n for n in status.to_run}
    failures: dict[str, tuple[BaseException, str]] = {}
    waiting = list(todo)

    def flush() -> None:  # write every cell whose evaluations are resolved
        nonlocal waiting
        still = []
        for cell in waiting:
            keys = (cell.eval_key, cell.baseline_key, cell.clean_key)
            err = next((failures[k] for k in keys if k in failures), None)
            if err is None and any(k in pending for k in keys):
                still.append(cell)
                continue
            _write(cell, plan, executor, report, err)
        waiting = still

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


@dataclass
class PlanStatus:
    """What a run of ``plan`` would do now."""

    finished: list[tuple[Cell, dict[str, Any]]]  # cells whose result file is final, with that result
    todo_cells: list[Cell]
    cached: list[Node]  # needed stages already in the cache
    to_run: list[Node]  # needed stages to compute, in DAG order
    found: list[Found] = field(default_factory=list)  # ok results in a cell's place that are not reused

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
    needed = plan.needed({k for c in todo for k in (c.eval_key, c.baseline_key, c.clean_key)})
    cached, to_run = [], []
    for node in needed:
        (cached if executor.done(node) else to_run).append(node)
    return PlanStatus(done, todo, cached, to_run, found)
