"""The ``clipbench`` command line: run | list | leaderboard | preview.

Bad input (unknown method, malformed ``--set``, invalid config, unwritable results
directory, a ``--plugin`` that cannot be loaded, a missing data source or checkpoint)
prints one line per problem naming the problem and the fix and exits with code 2; ``run``
checks every input first (:mod:`benchmark.validate`) and reports all its problems at once,
before any stage ran or any file was written; ``--debug`` shows the traceback instead.
Exit codes: 0 all cells ok; 1 the run started and some cells failed (listed; each failed
cell's result file holds the traceback; finished cells are kept); 2 bad input (nothing
ran); 75 the results directory is in use (``--no-wait``); 130 / 143 interrupted by SIGINT /
SIGTERM (finished files are kept, no file is half-written; rerun to resume).
``leaderboard --strict`` exits 1 when a result file could not be read (the site is still built).

The command line is split by job: the parser in :mod:`benchmark.cli_args`, ``run`` in
:mod:`benchmark.cli_run`, ``list`` / ``leaderboard`` / ``preview`` in
:mod:`benchmark.cli_commands`; this module dispatches and maps errors to exit codes.
"""
from __future__ import annotations

import signal
import sys
from typing import Sequence

from rich.console import Console

from .cli_args import UsageError, build_parser
from .cli_commands import METHODS, cmd_leaderboard, cmd_list, cmd_preview  # noqa: F401
from .cli_run import cmd_run

EXIT_USAGE = 2
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the results directory (--no-wait)


class Terminated(KeyboardInterrupt):
    """SIGTERM (cluster pre-emption), handled like Ctrl-C; exit code 128 + signum."""

    signum = signal.SIGTERM


def _terminate_as_interrupt():
    """Make SIGTERM unwind like SIGINT (finish the current file, exit 143); returns the old handler."""
    def handler(signum, frame):
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a worker): keep the default
        return None


def main(argv: Sequence[str] | None = None) -> int:
    from .config import ConfigError
    from .lock import LockedError
    from .registry import RegistryError

    from .validate import InvalidInput

    args = build_parser().parse_args(argv)
    previous_sigterm = _terminate_as_interrupt()
    console = Console()
    err = Console(stderr=True)
    try:
        return {"run": cmd_run, "list": cmd_list, "leaderboard": cmd_leaderboard,
                "preview": cmd_preview}[args.command](args, console)
    except InvalidInput as exc:
        if args.debug:
            raise
        for problem in exc.problems:
            err.print(f"clipbench: error: {problem}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_USAGE
    except (UsageError, ConfigError, RegistryError) as exc:
        if args.debug:
            raise
        err.print(f"clipbench: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_USAGE
    except LockedError as exc:
        err.print(f"clipbench: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_LOCKED
    except KeyboardInterrupt as exc:
        err.print("clipbench: interrupted; finished results are kept, rerun to resume", highlight=False)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
