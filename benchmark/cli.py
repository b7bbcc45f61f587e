"""The ``clipbench`` command line: run | list.

Bad input (unknown method, malformed ``--set``, invalid config, unwritable results
directory) prints one line naming the problem and the fix and exits with code 2;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table

EXIT_USAGE = 2


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
    r.add_argument("--results-dir", default="results", type=Path, help="where cell JSON files go (default ./results)")
    r.add_argument("--cache-dir", default=None, type=Path, help="stage cache (default $CLIPBENCH_CACHE or ~/.cache/clipbench)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite setting, e.g. --set pretrain.epochs=4 (repeatable)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("list", help="list attacks and defenses with their sources")
    return p


def _seeds(args: argparse.Namespace) -> list[int]:
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


def format_matrix(results: list[dict], console: Console) -> None:
    """Print attacks x defenses as 'CA / ASR' (mean +/- std over seeds)."""
    import pandas as pd

    from .results import to_frame

    df = to_frame(results)
    if df.empty:
        console.print("no results")
        return
    ok = df[df.status == "ok"]
    attacks = list(dict.fromkeys(df.attack))
    defenses = list(dict.fromkeys(df.defense))
    nseeds = df.seed.nunique()
    table = Table(title=f"clean accuracy / attack success rate (%), {nseeds} seed(s)" + (", mean ± std" if nseeds > 1 else ""))
    table.add_column("attack")
    table.add_column("clean model ASR", justify="right")
    for d in defenses:
        table.add_column(d, justify="right")

    def fmt(values: pd.Series) -> str:
        values = values.dropna() * 100
        if values.empty:
            return "–"
        return f"{values.mean():.1f}" + (f"±{values.std(ddof=1):.1f}" if len(values) > 1 else "")

    for a in attacks:
        row = [a, fmt(ok[ok.attack == a].drop_duplicates("seed").clean_model_asr)]
        for d in defenses:
            cell = ok[(ok.attack == a) & (ok.defense == d)]
            failed = df[(df.attack == a) & (df.defense == d) & (df.status != "ok")]
            if cell.empty:
                row.append("[red]failed[/]" if not failed.empty else "–")
            else:
                row.append(f"{fmt(cell.ca)} / {fmt(cell.asr)}")
        table.add_row(*row)
    console.print(table)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from .cache import Cache
    from .config import parse_set
    from .data.sources import open_data
    from .plan import make_plan
    from .progress import Reporter
    from .registry import attack_registry, defense_registry
    from .runner import run_plan
    from .stages import StageExecutor, pick_device
    from .suite import load_suite

    seeds = _seeds(args)
    suite = load_suite(args.suite, parse_set(args.overrides))
    attacks_reg, defenses_reg = attack_registry(), defense_registry()
    attacks = attacks_reg.resolve(args.attack)
    defenses = defenses_reg.resolve(args.defense)
    _check_writable(args.results_dir)
    data = open_data(suite.data)
    plan = make_plan(suite, data, attacks, defenses, seeds, attacks_reg, defenses_reg, args.results_dir)
    reporter = Reporter(enabled=not args.quiet, console=console)
    executor = StageExecutor(Cache(args.cache_dir), data, attacks_reg, defenses_reg, pick_device(suite.device), reporter)
    report = run_plan(plan, executor)
    format_matrix(report.results, console)
    console.print(f"{len(plan.cells)} cell(s): {len(plan.cells) - report.skipped_cells} computed, "
                  f"{report.skipped_cells} already finished; results in {args.results_dir}/{suite.name}/")
    if report.failed:
        console.print("[red]failed cells:[/]\n  " + "\n  ".join(report.failed))
        return 1
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from .registry import attack_registry, defense_registry

    for reg in (attack_registry(), defense_registry()):
        reg.try_load_all()
        table = Table(title=f"{reg.kind}s")
        for col in ("name", "source", "paper / status"):
            table.add_column(col)
        for e in reg.entries():
            status = f"[red]{e.error}[/]" if e.error else getattr(e.loaded, "paper", "")
            if e.conflicts:
                status = f"[red]conflict: also {', '.join(e.conflicts)}[/]"
            table.add_row(e.name, e.source, status)
        console.print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .config import ConfigError
    from .registry import RegistryError

    args = _parser().parse_args(argv)
    console = Console()
    err = Console(stderr=True)
    try:
        return {"run": cmd_run, "list": cmd_list}[args.command](args, console)
    except (UsageError, ConfigError, RegistryError) as exc:
        if args.debug:
            raise
        err.print(f"clipbench: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("clipbench: interrupted; finished results are kept, rerun to resume", highlight=False)
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
