"""``clipbench run``: check every input, open the session, plan, run under the results lock, report.

:func:`cmd_run` is the command; each step is a function of its own: the validation pass
(:func:`check_inputs`, exit 2 with one line per problem before anything is written), the
session and its plan (:func:`plan_run`), the results directory's lock
(:func:`results_lock`) and what rank 0 prints afterwards (:func:`report_run`).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console

from .cli_args import UsageError, executor_choice, seeds_of


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"results directory {str(folder)!r} is not writable ({exc.strerror or exc}); "
                         "choose another with --results-dir") from None


@contextlib.contextmanager
def results_lock(args: argparse.Namespace) -> Iterator[None]:
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
    from .display import print_plan

    session, plan, choice = plan_run(args, console)
    if args.dry_run:
        print_plan(session, plan, console)
        return 0
    with results_lock(args):
        report = session.run(plan, choice)
        if not session.is_main:  # torchrun: rank 0 reports
            return 0
        report_run(report, plan, args, console)
    if report.failed:
        console.print("[red]failed cells:[/]\n  " + "\n  ".join(report.failed))
    return 1 if report.failed else 0


def check_inputs(args: argparse.Namespace) -> None:
    """Every input, before any work: :class:`~benchmark.validate.InvalidInput` (exit 2, one line
    per problem, nothing written) or nothing; ``--dry-run`` prints what a run would refuse.
    ``args.results_dir`` defaults to :func:`~benchmark.results.default_results_dir`."""
    from .results import default_results_dir
    from .validate import InvalidInput, check_run

    if args.results_dir is None:
        args.results_dir = default_results_dir()
    findings = check_run(args)
    if findings.problems:
        raise InvalidInput(findings.problems)
    for note in findings.notes:  # --dry-run plans without data or weights; say what a run would refuse
        Console(stderr=True).print(f"clipbench: note: without --dry-run this is an error: {note}", highlight=False,
                                   markup=False, soft_wrap=True)


def plan_run(args: argparse.Namespace, console: Console) -> tuple[Any, Any, Any]:
    """The checked inputs' :class:`~benchmark.session.Session` (joining a torchrun job, if any),
    its plan of the cells and the executor choice; the schedule notes are printed (rank 0)."""
    from .progress import Reporter
    from .session import Session

    check_inputs(args)
    seeds, choice = seeds_of(args), executor_choice(args)
    session = Session.open(args.suite, args.overrides, args.plugins, args.cache_dir, distributed=True,
                           reporter=Reporter(enabled=not args.quiet, console=console))
    plan = session.plan(args.attack, args.defense, seeds, args.results_dir, detectors=getattr(args, "detector", None))
    _check_writable(args.results_dir)
    if session.is_main:
        _schedule_notes(plan)
    return session, plan, choice


def report_run(report: Any, plan: Any, args: argparse.Namespace, console: Console) -> None:
    """After a run (rank 0): the CA/ASR matrix, how many cells were computed and where their
    results are, and the regenerated leaderboard (unless ``--no-leaderboard``)."""
    from .display import format_detection, format_matrix

    format_matrix(report.results, console)
    folders = ", ".join(dict.fromkeys(f"{args.results_dir}/{c.variant}/" for c in plan.cells))
    console.print(f"{len(plan.cells)} cell(s): {len(plan.cells) - report.skipped_cells} computed, "
                  f"{report.skipped_cells} already finished (their results reused); results in {folders}",
                  highlight=False, soft_wrap=True)
    if plan.detections:
        format_detection(report.detections, console)
        folders = ", ".join(dict.fromkeys(f"{args.results_dir}/{c.variant}/_detection/" for c in plan.detections))
        console.print(f"{len(plan.detections)} detection result(s): {len(plan.detections) - report.skipped_detections} "
                      f"computed, {report.skipped_detections} already finished; results in {folders}",
                      highlight=False, soft_wrap=True)
    if args.leaderboard:
        _regenerate_leaderboard(args.results_dir, console)


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
