"""Executors that run stages in other processes: a pool of local worker processes, or Ray tasks.

Both submit :func:`benchmark.worker.run_task` (see :mod:`benchmark.executors` for when
each is chosen and why a pool of single-threaded workers beats one multi-threaded process).
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import traceback
from typing import Any

from .tasks import Outcome, Task, WorkerSpec, available_cores
from .worker import _init_worker, run_task, warm_worker


class ProcessExecutor:
    """A pool of ``jobs`` spawned worker processes on this machine."""

    shares_cores = True  # the runner weighs stages by their threads (see stage_weight)

    def __init__(self, jobs: int):
        import multiprocessing as mp

        self.slots = max(1, jobs)
        # Idle OpenMP threads sleep instead of spinning: with spinning, a 2-thread stage beside
        # other busy processes runs up to ~7x slower (measured on 2 shared cores); the workers
        # inherit this (the parent's OpenMP runtime already started and is unaffected).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
        self._ctx = mp.get_context("spawn")
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=self.slots, mp_context=self._ctx, initializer=_init_worker)

    def warm(self, spec: WorkerSpec) -> None:
        """Start every worker now and import the engine in it (see :func:`warm_worker`)."""
        for _ in range(self.slots):
            self._pool.submit(warm_worker, spec)  # a failure here surfaces in the stage that follows

    def submit(self, task: Task) -> cf.Future:
        fut = self._pool.submit(run_task, task)
        fut.task = task  # type: ignore[attr-defined]
        return fut

    def wait(self, handles: list[cf.Future]) -> list[tuple[cf.Future, Outcome]]:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        out = []
        broken = False
        for fut in done:
            try:
                out.append((fut, fut.result()))
            except Exception as exc:  # a worker died (out of memory, segfault): the pool is broken
                broken = True
                out.append((fut, Outcome(fut.task.node.key, False, 0.0, type(exc).__name__,  # type: ignore[attr-defined]
                                         f"worker process died: {exc}", traceback.format_exc())))
        if broken:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Stop now (Ctrl-C, SIGTERM): kill the workers; their stages were never stored."""
        for proc in list(getattr(self._pool, "_processes", {}).values()):
            proc.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _ray_run(task: Task) -> Outcome:
    return run_task(task)


class RayExecutor:
    """Stages as Ray tasks. ``address=None`` joins a running local cluster or starts one."""

    def __init__(self, address: str | None = None, jobs: int | None = None, cpus_per_task: float = 1,
                 gpus_per_task: float = 0):
        try:
            import ray
        except ImportError:
            from .config import ConfigError

            raise ConfigError("--executor ray needs Ray: pip install 'clipbench[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=jobs or available_cores(), log_to_driver=False, include_dashboard=False)
        total = int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_task, 1e-9))
        self.slots = max(1, min(jobs, total) if jobs else total)
        self.cpus, self.gpus = cpus_per_task, gpus_per_task
        self._remote = ray.remote(_ray_run)

    def submit(self, task: Task) -> Any:
        task.threads = max(1, int(self.cpus))
        ref = self._remote.options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=1).remote(task)
        self._tasks = getattr(self, "_tasks", {})
        self._tasks[ref] = task
        return ref

    def wait(self, handles: list[Any]) -> list[tuple[Any, Outcome]]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            task = self._tasks.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except Exception as exc:  # the worker crashed or the task was lost
                outcome = Outcome(task.node.key, False, 0.0, type(exc).__name__, str(exc), traceback.format_exc())
            out.append((ref, outcome))
        return out

    def close(self) -> None:
        pass
