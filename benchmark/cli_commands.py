"""The ``clipbench`` commands besides ``run``: ``list`` (methods and their sources),
``leaderboard`` (the static site from result files only; it never imports the engine)
and ``preview`` (a PNG of each attack's trigger on clean test images)."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .cli_args import UsageError


#: the methods page shipped with the package: threat model, metrics, every attack and defense
METHODS = Path(__file__).parent / "METHODS.md"


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

    from .registry import DISABLE_ENV, all_registries, plugins_disabled

    if plugins_disabled():
        console.print(f"(installed plugins are not loaded: {DISABLE_ENV} is set)")
    for reg in all_registries(args.plugins):
        reg.try_load_all()
        detectors = reg.kind == "detector"
        table = Table(title=f"{reg.kind}s" + (" (sample: scores training pairs; model: scores encoders)" if detectors else ""))
        for col in ("name", *(("kind",) if detectors else ()), "source", "paper / status"):
            table.add_column(col)
        for e in reg.entries():
            status = f"[red]{escape(e.error)}[/]" if e.error else escape(getattr(e.loaded, "paper", ""))
            if e.conflicts:
                status = f"[red]conflict: {escape(e.target)} ({escape(e.source)}) and {escape(', '.join(e.conflicts))}[/]"
            kind = getattr(getattr(e.loaded, "kind", None), "value", "?")
            table.add_row(e.name, *((kind,) if detectors else ()), escape(e.source), status)
        console.print(table)
        for problem in reg.problems:
            console.print(f"[red]{reg.kind} plugin problem:[/] {problem}", highlight=False)
    console.print(f"threat model, metrics and every built-in method (the papers' settings and where clipbench "
                  f"differs): {METHODS}", highlight=False, soft_wrap=True)
    return 0
