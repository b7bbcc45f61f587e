"""An advisory lock on a results directory, so two runs never write one directory at once.

``clipbench run`` holds ``<results_dir>/.clipbench.lock`` (``fcntl.flock``, exclusive) for
the whole run. A second run on the same directory waits, printing who holds the lock
(``--wait``, the default), or refuses at once with a one-line error (``--no-wait``).
The kernel releases a ``flock`` when its process dies, even by SIGKILL, so a crashed run
never leaves a stale lock behind. The stage cache needs no lock: its entries are written
to a temporary folder and renamed into place, so runs on different results directories
share one cache safely.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Callable

LOCK_NAME = ".clipbench.lock"


class LockedError(RuntimeError):
    """Another run holds the results directory (and we were told not to wait)."""


class ResultsLock:
    """Exclusive advisory lock on one results directory (POSIX ``flock``)."""

    def __init__(self, results_dir: str | Path):
        self.path = Path(results_dir) / LOCK_NAME
        self._fd: int | None = None

    def holder(self) -> str:
        """A description of the current holder, from the lock file's contents."""
        try:
            info = json.loads(self.path.read_text() or "{}")
            return f"pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}"
        except (OSError, ValueError):
            return "another process"

    def acquire(self, wait: bool = True, timeout: float | None = None,
                notify: Callable[[str], None] | None = None, poll: float = 0.5) -> "ResultsLock":
        """Take the lock; wait for it (polling) or raise :class:`LockedError` at once."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        start = time.monotonic()
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    message = (f"results directory {str(self.path.parent)!r} is in use by another clipbench run "
                               f"({self.holder()})")
                    if not wait:
                        raise LockedError(message + "; wait for it to finish, rerun with --wait, or use another "
                                                    "--results-dir") from None
                    if timeout is not None and time.monotonic() - start > timeout:
                        raise LockedError(message + f"; gave up after {timeout:.0f}s") from None
                    if not told and notify is not None:
                        notify(message + "; waiting for it to finish (Ctrl-C to stop, --no-wait to refuse instead)")
                        told = True
                    time.sleep(poll)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = {"pid": os.getpid(), "host": os.uname().nodename,
                "since": _dt.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "ResultsLock":
        if not self.held:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - safety net
        try:
            self.release()
        except Exception:
            pass
