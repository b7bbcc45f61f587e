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
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from rich.console import Console
from rich.table import Table

EXIT_USAGE = 2
#: the methods page shipped with the package: threat model, metrics, every attack and defense
METHODS = Path(__file__).parent / "METHODS.md"
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


class UsageError(Exception):
    """Bad input from the user; printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipbench", description="Backdoor attacks x defenses on CLIP models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run attack x defense cells and print the CA/ASR matrix")
    r.add_argument("--attack", default="all", help="attack names, comma-separated, or 'all' (default)")
    r.add_argument("--defense", default="none", help="defense names, comma-separated, or 'all' (default: none)")
    r.add_argument("--suite", default="embedded", help="suite name or YAML path (default: embedded)")
    r.add_argument("--seed", type=int, default=None, help="one seed (default 0)")
    r.add_argument("--seeds", default=None, help="several seeds, e.g. 0,1,2")
    r.add_argument("--results-dir", default=None, type=Path,
                   help="where cell JSON files go (default $CLIPBENCH_RESULTS or ~/.local/share/clipbench/results; "
                        "the repository's committed matrix: --results-dir results)")
    r.add_argument("--cache-dir", default=None, type=Path, help="stage cache (default $CLIPBENCH_CACHE or ~/.cache/clipbench)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite setting, e.g. --set pretrain.epochs=4 (repeatable)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--dry-run", action="store_true",
                   help="print the plan (stages to run, cache hits, estimated cost) and exit without running")
    r.add_argument("--executor", default="auto", choices=["auto", "local", "process", "ray"],
                   help="where stages run: local (this process), process (a pool of --jobs worker processes), "
                        "ray (Ray tasks; --address), auto (process on several CPU cores, else local; default)")
    r.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="stages run at once (process: worker processes, default = cores; ray: concurrent tasks)")
    r.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    r.add_argument("--gpus-per-task", type=float, default=None, metavar="G",
                   help="Ray: GPUs each stage requests (default 1 when the suite runs on CUDA, else 0)")
    r.add_argument("--no-leaderboard", dest="leaderboard", action="store_false",
                   help="do not regenerate <results-dir>/leaderboard at the end")
    r.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE:CLASS|FILE.py",
                   help="also load an attack/defense from module:Class or every one a .py file defines (repeatable)")
    w = r.add_mutually_exclusive_group()
    w.add_argument("--wait", dest="wait", action="store_true", default=True,
                   help="if another run uses the results directory, wait for it (default)")
    w.add_argument("--no-wait", dest="wait", action="store_false",
                   help="if another run uses the results directory, refuse at once (exit 75)")

    ls = sub.add_parser("list", help="list attacks and defenses with their sources")
    ls.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE:CLASS|FILE.py",
                    help="also load an attack/defense from module:Class or a .py file (repeatable)")
    lb = sub.add_parser("leaderboard", help="build the static leaderboard site (HTML, CSV, Markdown) from result files")
    lb.add_argument("--results-dir", default=None, type=Path,
                    help="where the cell JSON files are (default: clipbench run's, $CLIPBENCH_RESULTS or "
                         "~/.local/share/clipbench/results; the committed matrix: --results-dir results)")
    lb.add_argument("--out", default=None, type=Path, help="output folder (default <results-dir>/leaderboard)")
    lb.add_argument("--strict", action="store_true",
                    help="exit 1 when a result file is unreadable or of another schema (the site is still built; for CI)")
    pv = sub.add_parser("preview", help="save a PNG grid of clean vs triggered test images per attack")
    pv.add_argument("--attack", default="all", help="attack names, comma-separated, or 'all' (default)")
    pv.add_argument("--out", default=Path("results/previews/triggers.png"), type=Path,
                    help="PNG path (default results/previews/triggers.png)")
    pv.add_argument("--suite", default="embedded", help="suite name or YAML path (default: embedded)")
    pv.add_argument("--seed", type=int, default=0, help="attack seed (seeded triggers differ per seed; default 0)")
    pv.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a suite setting, e.g. --set attacks.wanet.s=1 (repeatable)")
    pv.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE:CLASS|FILE.py",
                    help="also load an attack from module:Class or a .py file (repeatable)")
    return p


def _seeds(args: argparse.Namespace) -> list[int]:
    if args.seeds and args.seed is not None:
        raise UsageError(f"--seed {args.seed} and --seeds {args.seeds} contradict each other; give only one of them")
    if args.seeds:
        try:
            return [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--seeds {args.seeds!r} is not a comma-separated list of integers; e.g. --seeds 0,1,2") from None
    return [args.seed if args.seed is not None else 0]


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"results directory {str(folder)!r} is not writable ({exc.strerror or exc}); "
                         "choose another with --results-dir") from None


def _executor_choice(args: argparse.Namespace):
    from .executors import ExecutorChoice

    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs} must be at least 1")
    return ExecutorChoice(args.executor, args.jobs, args.address, args.gpus_per_task)


@contextlib.contextmanager
def _results_lock(args: argparse.Namespace) -> Iterator[None]:
    """Hold the results directory's lock while running (torchrun: rank 0 holds it for the job)."""
    from .lock import ResultsLock

    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    err = Console(stderr=True)
    with ResultsLock(args.results_dir).acquire(
            wait=args.wait, notify=lambda msg: err.print(f"clipbench: {msg}", highlight=False, markup=False, soft_wrap=True)):
        yield


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """Plan the cells, run the missing stages under the results lock, print the matrix."""
    from .display import format_matrix, print_plan
    from .progress import Reporter
    from .session import Session
    from .results import default_results_dir
    from .validate import InvalidInput, check_run

    if args.results_dir is None:
        args.results_dir = default_results_dir()
    findings = check_run(args)  # every input, before any work: exit 2 with one line per problem, nothing written
    if findings.problems:
        raise InvalidInput(findings.problems)
    for note in findings.notes:  # --dry-run plans without data or weights; say what a run would refuse
        Console(stderr=True).print(f"clipbench: note: without --dry-run this is an error: {note}", highlight=False,
                                   markup=False, soft_wrap=True)
    seeds, choice = _seeds(args), _executor_choice(args)
    session = Session.open(args.suite, args.overrides, args.plugins, args.cache_dir, distributed=True,
                           reporter=Reporter(enabled=not args.quiet, console=console))
    plan = session.plan(args.attack, args.defense, seeds, args.results_dir)
    _check_writable(args.results_dir)
    if session.is_main:
        _schedule_notes(plan)
    if args.dry_run:
        print_plan(session, plan, console)
        return 0
    with _results_lock(args):
        report = session.run(plan, choice)
        if not session.is_main:  # torchrun: rank 0 reports
            return 0
        format_matrix(report.results, console)
        folders = ", ".join(dict.fromkeys(f"{args.results_dir}/{c.variant}/" for c in plan.cells))
        console.print(f"{len(plan.cells)} cell(s): {len(plan.cells) - report.skipped_cells} computed, "
                      f"{report.skipped_cells} already finished (their results reused); results in {folders}",
                      highlight=False, soft_wrap=True)
        if args.leaderboard:
            _regenerate_leaderboard(args.results_dir, console)
    if report.failed:
        console.print("[red]failed cells:[/]\n  " + "\n  ".join(report.failed))
    return 1 if report.failed else 0


def _schedule_notes(plan) -> None:
    """One line per defense whose own schedule default the suite overrides (the precedence is
    documented in the README's "Add your own defense"; each result records it)."""
    from .plan import schedule_note

    seen: set[str] = set()
    for cell in plan.cells:
        if cell.defense in seen:
            continue
        seen.add(cell.defense)
        note = schedule_note(cell.defense, cell.defense_schedule)
        if note:
            Console(stderr=True).print(f"clipbench: note: {note}", highlight=False, markup=False, soft_wrap=True)


def _regenerate_leaderboard(results_dir: Path, console: Console) -> None:
    """End of ``run``: rebuild ``<results-dir>/leaderboard``; a failure here never fails the run."""
    from rich.markup import escape

    from leaderboard.build import build_site

    try:
        report = build_site(results_dir)
    except Exception as exc:  # the cells are written; the site can be rebuilt with `clipbench leaderboard`
        console.print(f"[yellow]leaderboard not rebuilt[/] ({type(exc).__name__}: {escape(str(exc))}); "
                      "run `clipbench leaderboard` to retry", highlight=False)
        return
    console.print(f"leaderboard: {report.index}", highlight=False)


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    """Build the static site from result files only (the leaderboard never imports the engine)."""
    from rich.markup import escape

    from leaderboard.build import LeaderboardError, build_site

    from .results import default_results_dir

    default = args.results_dir is None
    if default:
        args.results_dir = default_results_dir()
    try:
        report = build_site(args.results_dir, args.out)
    except LeaderboardError as exc:
        hint = " (your results folder, the default; the repository's committed matrix: --results-dir results)"
        raise UsageError(str(exc) + (hint if default else "")) from None
    except OSError as exc:
        raise UsageError(f"cannot write the leaderboard to {str(args.out or args.results_dir)!r} "
                         f"({exc.strerror or exc}); choose another folder with --out") from None
    console.print(f"{report.cells} result file(s) ({report.failed} failed), suite(s) {', '.join(report.suites)}",
                  highlight=False)
    for skipped in report.skipped:
        console.print(f"[yellow]skipped[/] {escape(skipped)}", highlight=False)
    for note in report.notes:
        console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    console.print(f"leaderboard: {report.index} (+ defenses.csv, attacks.csv, cells.csv, leaderboard.md)",
                  highlight=False)
    if args.strict and report.skipped:
        Console(stderr=True).print(f"clipbench: error: --strict: {len(report.skipped)} result file(s) could not be read "
                                   f"(listed above as skipped); fix or remove them", highlight=False, markup=False,
                                   soft_wrap=True)
        return 1
    return 0


def cmd_preview(args: argparse.Namespace, console: Console) -> int:
    """Render each attack's test-time trigger on clean test images into one PNG."""
    from .preview import save_preview
    from .session import Session
    from .validate import Findings, InvalidInput, split_names

    found = Findings()  # the list option is checked as in ``run``: no empty items, no name twice
    split_names(args.attack, "--attack", "attack", found)
    if args.seed < 0:
        found.add(f"--seed {args.seed} is negative; seeds are non-negative integers, e.g. --seed 0")
    if found.problems:
        raise InvalidInput(found.problems)
    session = Session.open(args.suite, args.overrides, args.plugins)
    attacks = session.attacks.resolve(args.attack)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {str(out)!r} must end in .png; e.g. --out triggers.png")
    try:
        path = save_preview(attacks, out, session=session, seed=args.seed)
    except OSError as exc:
        raise UsageError(f"cannot write the preview to {str(out)!r} ({exc.strerror or exc}); choose another --out") from None
    console.print(str(path), highlight=False, soft_wrap=True)
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from rich.markup import escape

    from .registry import DISABLE_ENV, plugins_disabled, registries

    if plugins_disabled():
        console.print(f"(installed plugins are not loaded: {DISABLE_ENV} is set)")
    for reg in registries(args.plugins):
        reg.try_load_all()
        table = Table(title=f"{reg.kind}s")
        for col in ("name", "source", "paper / status"):
            table.add_column(col)
        for e in reg.entries():
            status = f"[red]{escape(e.error)}[/]" if e.error else escape(getattr(e.loaded, "paper", ""))
            if e.conflicts:
                status = f"[red]conflict: {escape(e.target)} ({escape(e.source)}) and {escape(', '.join(e.conflicts))}[/]"
            table.add_row(e.name, escape(e.source), status)
        console.print(table)
        for problem in reg.problems:
            console.print(f"[red]{reg.kind} plugin problem:[/] {problem}", highlight=False)
    console.print(f"threat model, metrics and every built-in method (the papers' settings and where clipbench "
                  f"differs): {METHODS}", highlight=False, soft_wrap=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .config import ConfigError
    from .lock import LockedError
    from .registry import RegistryError

    from .validate import InvalidInput

    args = _parser().parse_args(argv)
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
