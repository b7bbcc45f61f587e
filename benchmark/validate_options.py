"""Checks of ``clipbench run``'s own options, and the collector of what the validation pass finds.

:class:`Findings` gathers one line per problem (and, for ``--dry-run``, notes);
:class:`InvalidInput` carries them to the CLI (exit 2). The option checks: comma lists
(``--attack``, ``--defense``: no empty items, no name twice, ``all`` alone), seeds
(``--seed`` / ``--seeds``: non-negative integers, each once) and writable folders
(probed without creating them). Used by :func:`benchmark.validate.check_run`.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path


class InvalidInput(ValueError):
    """Bad input found by :func:`check_run`; ``problems`` holds one line per problem (exit code 2)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)  # refuse the run
    notes: list[str] = field(default_factory=list)  # --dry-run: data/weights a real run would refuse

    def add(self, message: str) -> None:
        line = " ".join(str(message).split())  # exactly one line
        if line not in self.problems:
            self.problems.append(line)


# ------------------------------------------------------------------------------ options
def split_names(raw: str, option: str, kind: str, findings: Findings) -> list[str]:
    """The names of a comma-separated option; empty items, repeats and ``all`` among names are problems."""
    items = [s.strip() for s in str(raw).split(",")]
    names = [s for s in items if s]
    if not names:
        findings.add(f"{option} {raw!r} names no {kind}; give one or more names, comma-separated, or all")
        return []
    if len(names) < len(items):
        findings.add(f"{option} {raw!r} has an empty item; remove the stray comma: {option} {','.join(names)}")
    twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if twice:
        findings.add(f"{option} {raw!r} names {', '.join(repr(n) for n in twice)} twice; give each {kind} once: "
                     f"{option} {','.join(dict.fromkeys(names))}")
    if "all" in names and len(set(names)) > 1:
        findings.add(f"{option} {raw!r}: 'all' already means every {kind}; give either all or names")
    return list(dict.fromkeys(names))


def parse_seeds(seed: int | None, seeds: str | None, findings: Findings) -> list[int]:
    """``--seed`` / ``--seeds`` as a list of distinct non-negative integers (problems filed)."""
    if seeds is not None and seed is not None:
        findings.add(f"--seed {seed} and --seeds {seeds} contradict each other; give only one of them")
    if seeds is None:
        value = 0 if seed is None else seed
        if value < 0:
            findings.add(f"--seed {value} is negative; seeds are non-negative integers, e.g. --seed 0")
            return []
        return [value]
    out: list[int] = []
    items = [s.strip() for s in seeds.split(",")]
    if not any(items):
        findings.add(f"--seeds {seeds!r} names no seed; give non-negative integers, e.g. --seeds 0,1,2")
        return []
    if not all(items):
        findings.add(f"--seeds {seeds!r} has an empty item; remove the stray comma: --seeds {','.join(s for s in items if s)}")
    for s in filter(None, items):
        try:
            out.append(int(s))
        except ValueError:
            findings.add(f"--seeds {seeds!r}: {s!r} is not an integer; give non-negative integers, e.g. --seeds 0,1,2")
            return []
    negative = [s for s in out if s < 0]
    if negative:
        findings.add(f"--seeds {seeds!r}: seed {negative[0]} is negative; seeds are non-negative integers, e.g. --seeds 0,1,2")
    twice = [s for s in dict.fromkeys(out) if out.count(s) > 1]
    if twice:
        findings.add(f"--seeds {seeds!r} names seed {', '.join(map(str, twice))} twice (a typo?); give each seed once: "
                     f"--seeds {','.join(map(str, dict.fromkeys(out)))}")
    return [s for s in dict.fromkeys(out) if s >= 0]


def writable_problem(folder: Path, option: str) -> str | None:
    """Why ``folder`` could not be written, probed without creating it (None: writable)."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{option} {str(folder)!r} is not writable ({str(existing)!r} is not a folder); choose another with {option}"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".clipbench-write-test-"):
            pass
    except OSError as exc:
        return f"{option} {str(folder)!r} is not writable ({exc.strerror or exc}); choose another with {option}"
    return None
