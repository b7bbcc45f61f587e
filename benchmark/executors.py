"""Where stages run: in this process, in a pool of local worker processes, or on Ray.

The runner (:func:`benchmark.runner.run_plan`) owns the DAG: it submits a stage only
when its inputs are in the cache and the executor has a free slot, most expensive
remaining path first. An executor only runs one :class:`~benchmark.plan.Node` at a
time per slot and reports a :class:`Outcome`. Every executor writes artifacts through
the content-addressed cache (atomic), so stages never pass tensors to each other: the
cache directory must be visible to every worker (automatic on one machine; a shared
filesystem on a Ray cluster).

- ``local``: in this process, one stage after another (progress bars; the default for
  one core or a one-stage plan).
- ``process``: ``jobs`` worker processes on this machine (``spawn``). Small convolutions
  scale badly across threads, so N single-threaded workers beat one N-threaded process
  (about 1.3x on 2 cores). Each worker keeps its decoded splits between stages. The
  thread count of a stage is fixed by the plan (pre-training, always on the critical
  path, uses every core; other stages ``cores // jobs``) so that a rerun computes the
  same numbers; a stage occupies as many slots as it has threads (pre-training takes the
  whole pool), so cores are never oversubscribed. Workers die with the parent
  (``PR_SET_PDEATHSIG`` on Linux) and run with ``OMP_WAIT_POLICY=PASSIVE`` and
  ``GOMP_SPINCOUNT=10000`` unless set: idle OpenMP threads spin briefly, then sleep
  (measured on 2 cores, 2-thread training step at batch 256: 233 ms passive, 170-204 ms
  spinning, 190-199 ms with the short spin; with another busy process beside it the
  short spin costs ~10% over passive, the default long spin up to ~7x).
- ``ray``: every stage is a Ray task with ``num_cpus`` / ``num_gpus`` requests; the
  runner keeps the DAG, so a stage starts only after its inputs exist.

The parts: the task, outcome and thread budget in :mod:`benchmark.tasks`, the worker side
in :mod:`benchmark.worker`, the process pool and Ray in :mod:`benchmark.pool_executors`;
:class:`LocalExecutor` and the choice of executor (:func:`make_executor`) here, where every
name is importable as before.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from .pool_executors import ProcessExecutor, RayExecutor
from .tasks import (Executor, Outcome, StageError, Task, WorkerSpec, available_cores, error_message,  # noqa: F401
                    stage_threads, stage_weight)
from .worker import run_task, warm_worker  # noqa: F401


class LocalExecutor:
    """Runs each node in this process when waited on (sequential, progress bars shown)."""

    slots = 1

    def __init__(self, stages):
        self.stages = stages

    def submit(self, task: Task) -> Task:
        return task

    def wait(self, handles: list[Task]) -> list[tuple[Task, Outcome]]:
        import torch

        task = handles[0]
        start = time.perf_counter()
        # the stage's thread count, as in a pool worker: float results depend on it, so a
        # stage must not inherit whatever this process was last set to (a notebook, a test)
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, task.threads))
        try:
            if not self.stages.done(task.node):
                self.stages.run(task.node)
            out = Outcome(task.node.key, True, time.perf_counter() - start, worker="local")
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            out = Outcome(task.node.key, False, time.perf_counter() - start, type(exc).__name__, error_message(exc),
                          traceback.format_exc(), worker="local")
        finally:
            torch.set_num_threads(before)
        return [(task, out)]

    def close(self) -> None:
        pass


@dataclass
class ExecutorChoice:
    """``--executor`` / ``--jobs`` / ``--address`` / ``--gpus-per-task`` as given."""

    kind: str = "auto"  # auto | local | process | ray
    jobs: int | None = None
    address: str | None = None
    gpus_per_task: float | None = None
    cpus_per_task: float = 1
    extra: dict[str, Any] = field(default_factory=dict)


def make_executor(choice: ExecutorChoice, stages, parallel_width: int, uses_cuda: bool) -> Any:
    """Build the executor. ``auto``: a process pool when several stages can run at once and
    there are several cores (CPU), else local."""
    kind = choice.kind
    cores = available_cores()
    if kind == "auto":
        kind = "process" if (not uses_cuda and cores > 1 and parallel_width > 1 and choice.jobs != 1) else "local"
    if kind == "local":
        return LocalExecutor(stages)
    if kind == "process":
        jobs = choice.jobs or (1 if uses_cuda else cores)
        return ProcessExecutor(jobs)
    if kind == "ray":
        gpus = choice.gpus_per_task if choice.gpus_per_task is not None else (1.0 if uses_cuda else 0.0)
        return RayExecutor(choice.address, choice.jobs, choice.cpus_per_task, gpus)
    from .config import ConfigError

    raise ConfigError(f"--executor {kind!r} is unknown; choose auto, local, process or ray")
