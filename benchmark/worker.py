"""The worker side of the process pool and of Ray: run one task in this process, never raise.

A worker opens one :class:`~benchmark.session.Session` per :class:`~benchmark.tasks.WorkerSpec`
(its decoded splits are kept between stages), runs the node unless the cache already
holds it and reports an :class:`~benchmark.tasks.Outcome`. Pool workers die with their
parent (``PR_SET_PDEATHSIG`` on Linux), ignore Ctrl-C (the parent's to handle) and skip
the interpreter's teardown when the pool shuts them down.
"""
from __future__ import annotations

import os
import time
import traceback
from typing import Any

from .tasks import Outcome, Task, WorkerSpec, error_message


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
