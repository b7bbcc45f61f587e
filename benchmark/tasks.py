"""What an executor runs and reports: a :class:`Task` (one plan node, the :class:`WorkerSpec`
a worker opens its session from, its thread count) and its :class:`Outcome`; the
:class:`Executor` protocol every executor (:mod:`benchmark.executors`) follows; and the
thread budget of a stage (:func:`stage_threads`, :func:`stage_weight`), fixed by the plan
so that a rerun computes the same numbers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
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
