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
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol

from .plan import Node


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def stage_threads(node: Node, cores: int, slots: int) -> int:
    """Threads of a stage in a pool of ``slots`` workers, fixed by the node kind so that a rerun
    computes the same numbers (float results depend on the thread count). Pre-training is
    on every cell's critical path and runs before anything else is ready: all cores."""
    return cores if node.kind == "pretrain" else max(1, cores // max(1, slots))


def stage_weight(threads: int, cores: int, slots: int) -> int:
    """Worker slots a stage of ``threads`` threads occupies in a pool sharing ``cores``: a
    pre-training stage with every core takes every slot, so no core is oversubscribed."""
    return min(slots, max(1, -(-threads * slots // max(1, cores))))



@dataclass
class Outcome:
    """What running one node produced."""

    key: str
    ok: bool
    seconds: float = 0.0
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    worker: str = ""

    def exception(self) -> BaseException:
        """The stage's exception, as an exception of the same class name (for the result file)."""
        if self.error_type is None:
            return StageError(self.error or "stage failed")
        return type(self.error_type, (StageError,), {})(self.error)


def error_message(exc: BaseException) -> str:
    """The one-line message of a stage's exception. A DataLoader worker's error arrives wrapped
    ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...\n<module>.DataError:
    <message>"): its original message is kept, the traceback goes to the result's ``traceback``."""
    text = str(exc)
    if "\nOriginal Traceback" in text:
        last = text.strip().splitlines()[-1]
        _, sep, message = last.partition(f"{type(exc).__name__}: ")
        return message if sep else last
    return text


class StageError(RuntimeError):
    """A stage failed in a worker; the message carries the original exception."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to open the same :class:`~benchmark.session.Session` (picklable)."""

    cache_root: str
    suite: Any  # the SuiteConfig (its data and model configs decide what the worker decodes)
    device: str
    plugins: tuple[str, ...] = ()


@dataclass(eq=False)
class Task:
    node: Node
    spec: WorkerSpec
    threads: int


class Executor(Protocol):
    slots: int

    def submit(self, task: Task) -> Any: ...

    def wait(self, handles: list[Any]) -> list[tuple[Any, Outcome]]: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------- workers
_WORKER_STAGES: dict[str, Any] = {}  # per worker process: spec -> StageExecutor (keeps decoded splits)


def _worker_stages(spec: WorkerSpec):
    """One session per worker process and spec (its stage executor): splits are decoded once per process."""
    from .config import canonical_json
    from .session import Session

    key = canonical_json({"root": spec.cache_root, "data": spec.suite.data, "model": spec.suite.model,
                          "device": spec.device, "plugins": list(spec.plugins)})
    if key not in _WORKER_STAGES:
        _WORKER_STAGES.clear()
        _WORKER_STAGES[key] = Session.open(spec.suite, plugins=spec.plugins, cache_dir=spec.cache_root,
                                           device=spec.device).stages
    return _WORKER_STAGES[key]


def run_task(task: Task) -> Outcome:
    """Run one node in this (worker) process; never raises."""
    import torch

    start = time.perf_counter()
    worker = f"pid {os.getpid()}"
    try:
        torch.set_num_threads(max(1, task.threads))
        stages = _worker_stages(task.spec)
        if not stages.done(task.node):
            stages.run(task.node)
        return Outcome(task.node.key, True, time.perf_counter() - start, worker=worker)
    except Exception as exc:  # reported to the runner, which fails the dependent cells
        return Outcome(task.node.key, False, time.perf_counter() - start, type(exc).__name__, error_message(exc),
                       traceback.format_exc(), worker=worker)
    finally:
        if _IN_POOL_WORKER:
            _exit_fast_at_exit()


def warm_worker(spec: WorkerSpec) -> None:
    """Import the engine and open the data in this worker before its first stage.

    Spawned workers start empty: importing torch, torchvision and open_clip takes ~7 s of
    one core. Done at pool start, it overlaps the first stage instead of delaying the
    first stage each worker runs (measured on 2 cores: the second worker's start-up left
    4.5 s between pre-training and the second poisoned training).
    """
    import torch

    torch.set_num_threads(1)
    _worker_stages(spec)
    from . import models  # noqa: F401  (open_clip)

    if _IN_POOL_WORKER:
        _exit_fast_at_exit()


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the parent dies (kill -9 leaves no orphan training)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent already died while we started
            os._exit(1)
    except (OSError, AttributeError):
        pass


def _exit_now() -> None:
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(0)


def _exit_fast_at_exit() -> None:
    """A pool worker skips the interpreter's teardown when the pool shuts it down.

    Unloading torch, torchvision and open_clip at exit takes ~2 s a process (measured: 2.1 s
    with them imported, 0.08 s without the teardown), all after the last stage finished.
    Everything a stage makes is in the cache (atomic writes) and its outcome was sent
    before the worker exits, so nothing is lost. Re-registered after each stage so that it
    runs first (``atexit`` is last-in, first-out). Only pool workers do this: a Ray worker's
    exit belongs to Ray.
    """
    import atexit

    atexit.unregister(_exit_now)
    atexit.register(_exit_now)


_IN_POOL_WORKER = False  # set by the local pool's worker initializer


def _init_worker() -> None:
    import signal

    global _IN_POOL_WORKER
    _IN_POOL_WORKER = True
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


# ----------------------------------------------------------------------------- executors
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
