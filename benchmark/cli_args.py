"""The ``clipbench`` command line's arguments: the parser of every subcommand, and the
``run`` options turned into values (seeds, the executor choice). Bad values raise
:class:`UsageError` (one line, exit code 2)."""
from __future__ import annotations

import argparse
from pathlib import Path


class UsageError(Exception):
    """Bad input from the user; printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipbench", description="Backdoor attacks x defenses on CLIP models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run attack x defense cells and print the CA/ASR matrix")
    r.add_argument("--attack", default="all", help="attack names, comma-separated, or 'all' (default)")
    r.add_argument("--defense", default="none", help="defense names, comma-separated, or 'all' (default: none)")
    r.add_argument("--detector", default=None,
                   help="detector names, comma-separated, or 'all': also score detection, one result per attack x "
                        "detector x seed (default: none)")
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
                   help="also load an attack/defense/detector from module:Class or every one a .py file defines "
                        "(repeatable)")
    w = r.add_mutually_exclusive_group()
    w.add_argument("--wait", dest="wait", action="store_true", default=True,
                   help="if another run uses the results directory, wait for it (default)")
    w.add_argument("--no-wait", dest="wait", action="store_false",
                   help="if another run uses the results directory, refuse at once (exit 75)")

    ls = sub.add_parser("list", help="list attacks, defenses and detectors with their sources")
    ls.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE:CLASS|FILE.py",
                    help="also load an attack/defense/detector from module:Class or a .py file (repeatable)")
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


def seeds_of(args: argparse.Namespace) -> list[int]:
    if args.seeds and args.seed is not None:
        raise UsageError(f"--seed {args.seed} and --seeds {args.seeds} contradict each other; give only one of them")
    if args.seeds:
        try:
            return [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--seeds {args.seeds!r} is not a comma-separated list of integers; e.g. --seeds 0,1,2") from None
    return [args.seed if args.seed is not None else 0]


def executor_choice(args: argparse.Namespace):
    from .executors import ExecutorChoice

    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs} must be at least 1")
    return ExecutorChoice(args.executor, args.jobs, args.address, args.gpus_per_task)
