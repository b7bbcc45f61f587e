"""A result's identity includes its configuration (issue 16).

The acceptance test: on a copy of the committed results, a ``--set`` run leaves every
existing result file byte-identical and the rebuilt leaderboard's existing rows unchanged.
Also: variant folder names, resume on configuration, results of another configuration
moved (never overwritten), seeds never averaged across configurations, and no machine path
anywhere in the committed results.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from benchmark.results import cell_identity, find_cell, variant_name, variant_settings

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".clipbench.lock" and "leaderboard" not in p.relative_to(root).parts}


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_variant_names_are_readable_hashed_and_stable():
    assert variant_name("embedded", {}) == "embedded"
    name = variant_name("embedded", {"attacks.badnet.pattern": "noise"})
    assert re.fullmatch(r"embedded~attacks\.badnet\.pattern=noise-[0-9a-f]{6}", name), name
    assert name == variant_name("embedded", {"attacks.badnet.pattern": "noise"})
    assert name != variant_name("embedded", {"attacks.badnet.pattern": "checkerboard"})
    long = variant_name("embedded", {f"defenses.x.k{i}": "/abs/path/file.png" for i in range(12)})
    assert "/" not in long and len(long) < 120 and long.split(",")[-1].startswith("+")
    own = cell_identity({"data": {"fraction": 1.0}}, "badnet", {"pattern": "checkerboard"}, "none", {})
    this = cell_identity({"data": {"fraction": 0.5}}, "badnet", {"pattern": "checkerboard"}, "none", {})
    assert variant_settings(own, this) == {"data.fraction": 0.5}
    assert variant_settings(own, own) == {}


def test_only_the_cells_an_override_touches_leave_the_suites_folder(tmp_path):
    from benchmark.session import Session

    session = Session.open("embedded", ["attacks.badnet.pattern=noise", "defenses.cleanclip.lambda1=2",
                                        "cost.train_samples_per_s=5"], cache_dir=tmp_path / "cache")
    plan = session.plan("badnet,blended", "none,cleanclip", [0], tmp_path / "r")
    folders = {(c.attack, c.defense): c.result_path.relative_to(tmp_path / "r").parts[0] for c in plan.cells}
    assert folders[("blended", "none")] == "embedded"  # untouched by the overrides: the suite's own
    assert folders[("badnet", "none")].startswith("embedded~attacks.badnet.pattern=noise-")
    assert folders[("blended", "cleanclip")].startswith("embedded~defenses.cleanclip.lambda1=2.0-")
    assert "attacks.badnet.pattern=noise" in folders[("badnet", "cleanclip")]
    assert "defenses.cleanclip.lambda1" in folders[("badnet", "cleanclip")]
    # a no-op override (the suite's own value) is the suite's own configuration
    same = Session.open("embedded", ["attacks.badnet.pattern=white"], cache_dir=tmp_path / "cache")
    assert {c.variant for c in same.plan("badnet", "none", [0], tmp_path / "r").cells} == {"embedded"}


@pytest.mark.slow
def test_a_set_run_leaves_the_committed_results_and_rows_unchanged(tmp_path, cache_dir, tiny_sets, capsys):
    """The acceptance of issue 16, on a copy of the committed results/."""
    from benchmark.cli import main
    from leaderboard.build import build_site

    results = tmp_path / "results"
    shutil.copytree(COMMITTED, results, ignore=shutil.ignore_patterns("leaderboard"))
    before = _files(results)
    assert any(k.startswith("embedded/badnet/none/") for k in before)
    build_site(results, tmp_path / "site-before", figures=False)
    argv = ["run", "--attack", "badnet", "--defense", "none", "--results-dir", str(results), "--quiet",
            "--executor", "local", "--set", "attacks.badnet.pattern=noise"]
    for s in tiny_sets + ["poison_train.epochs=1", "data.fraction=0.03"]:  # bookkeeping, not a backdoor: quick
        argv += ["--set", s]
    assert main(argv) == 0
    after = _files(results)
    assert {k: v for k, v in after.items() if k in before} == before  # every existing file byte-identical
    new = sorted(set(after) - set(before))
    assert len(new) == 1 and new[0].startswith("embedded~") and new[0].endswith("/badnet/none/seed-0.json"), new
    assert "attacks.badnet.pattern=noise" in new[0]
    written = json.loads(after[new[0]])
    assert written["variant"]["settings"]["attacks.badnet.pattern"] == "noise"
    assert written["poison"]["manifest"].startswith("cache:poison/")
    for name in ("defenses.csv", "attacks.csv", "cells.csv"):
        old, rebuilt = _rows(tmp_path / "site-before" / name), _rows(results / "leaderboard" / name)
        assert [r for r in rebuilt if r["suite"] == "embedded"] == old  # the main matrix: rows unchanged
        assert any(r["suite"].startswith("embedded~") for r in rebuilt)  # the variant: its own rows
    page = (results / "leaderboard" / "index.html").read_text()
    assert "Variants of <code>embedded</code>" in page and "attacks.badnet.pattern=noise" in page
    # resume matches on configuration: the same run again computes nothing, the suite's own run neither
    capsys.readouterr()
    assert main(argv + ["--no-leaderboard"]) == 0
    assert "0 computed, 1 already finished" in capsys.readouterr().out
    assert _files(results) == after


def _fake(folder: Path, attack: str, defense: str, seed: int, pattern: str, asr: float, cell_key: str) -> Path:
    path = folder / attack / defense / f"seed-{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    suite = {"model": {"arch": "m"}, "data": {"fraction": 1.0}, "pretrain": None, "poison_train": {"epochs": 1},
             "eval": {"batch_size": 8}}
    path.write_text(json.dumps({
        "schema_version": 1, "status": "ok", "suite": "embedded", "seed": seed,
        "attack": {"name": attack, "source": "builtin", "config": {"pattern": pattern}, "family": "patch"},
        "defense": {"name": defense, "source": "builtin", "stage": "none", "config": {}},
        "config": {"suite": suite, "attack": {"pattern": pattern}, "defense": {}, "seed": seed},
        "metrics": {"clean_accuracy": 0.8, "asr": asr, "ra": 0.1}, "baseline": {"clean_accuracy": 0.8, "asr": asr},
        "clean_model": {"clean_accuracy": 0.85, "asr": 0.01}, "der": 0.5,
        "provenance": {"cell_key": cell_key, "created": f"2026-01-0{seed + 1}T00:00:00+00:00"}}))
    return path


def test_the_leaderboard_never_averages_seeds_of_two_configurations(tmp_path):
    """Results written before folders named configurations: a noise seed among checkerboard seeds."""
    from leaderboard.ranking import build_boards
    from leaderboard.reader import read_results

    folder = tmp_path / "r" / "embedded"
    _fake(folder, "badnet", "none", 0, "noise", 0.5, "k0")
    _fake(folder, "badnet", "none", 1, "checkerboard", 0.99, "k1")
    _fake(folder, "badnet", "none", 2, "checkerboard", 0.97, "k2")
    boards = build_boards(read_results(tmp_path / "r").cells)
    main = next(b for b in boards if b.suite == "embedded")
    assert [r.seed for r in main.cell("badnet", "none").runs] == [1, 2]
    assert main.cell("badnet", "none").mean("metrics", "asr") == pytest.approx(0.98)
    apart = [b for b in boards if b.suite != "embedded"]
    assert len(apart) == 1 and apart[0].is_variant and [r.seed for r in apart[0].cell("badnet", "none").runs] == [0]
    assert main.notes and "seed-0.json" in main.notes[0]
    from leaderboard.build import build_site

    report = build_site(tmp_path / "r", tmp_path / "site", figures=False)
    assert report.notes == main.notes and "seed-0.json" in (tmp_path / "site" / "index.html").read_text()


def test_a_result_of_another_configuration_is_moved_not_overwritten(tmp_path, capsys):
    """A cell's place holds a result of another configuration (an older clipbench's --set run):
    the next run moves it to its configuration's folder, with a warning, before computing."""
    from benchmark.progress import Reporter
    from benchmark.runner import plan_status, set_aside
    from benchmark.session import Session

    session = Session.open("embedded", cache_dir=tmp_path / "cache", reporter=Reporter(enabled=False))
    plan = session.plan("badnet", "none", [0], tmp_path / "r")
    cell = plan.cells[0]
    identity = {k: v for k, v in cell.identity.items()}
    suite_sections: dict = {}
    for key, value in identity.items():  # the suite's own identity back into nested sections
        if key.startswith(("attacks.", "defenses.")):
            continue
        node = suite_sections
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    attack = {k.split(".", 2)[2]: v for k, v in identity.items() if k.startswith("attacks.badnet.")}
    other = dict(attack, pattern="noise")
    cell.result_path.parent.mkdir(parents=True)
    old = {"schema_version": 1, "status": "ok", "suite": "embedded", "seed": 0,
           "attack": {"name": "badnet", "config": other}, "defense": {"name": "none", "config": {}},
           "config": {"suite": suite_sections, "attack": other, "defense": {}, "seed": 0},
           "provenance": {"cell_key": "sha256:old", "created": "2026-01-01T00:00:00+00:00", "git": "abc1234"}}
    text = json.dumps(old)
    cell.result_path.write_text(text)
    status = plan_status(plan, session.stages)
    assert status.todo_cells == [cell] and len(status.found) == 1
    found = status.found[0]
    assert found.destination is not None and "attacks.badnet.pattern=noise" in str(found.destination)
    assert "another configuration" in found.message(done=False)
    dest = set_aside(found)
    assert dest == found.destination and dest.read_text() == text and not cell.result_path.exists()
    assert find_cell(tmp_path / "r", "badnet", "none") == dest
    # the same again with the destination taken: kept beside it, never over it
    cell.result_path.write_text(text)
    again = set_aside(plan_status(plan, session.stages).found[0])
    assert again != dest and again.name.startswith("displaced-seed-0-") and dest.read_text() == text


def test_the_committed_results_name_no_machine_path():
    """No /tmp, home or other absolute path in any committed result, page or table."""
    pattern = re.compile(r"(?<![\w.:/])(/tmp/|/home/|/root/|/work/|/Users/|/var/|/scratch/|[A-Za-z]:\\\\)")
    offenders = []
    for path in sorted(COMMITTED.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".html", ".csv", ".md", ".txt"):
            text = path.read_text(errors="replace")
            for m in pattern.finditer(text):
                offenders.append(f"{path.relative_to(REPO)}: ...{text[max(0, m.start() - 40):m.end() + 40]}...")
    assert not offenders, "\n".join(offenders[:10])
    for path in sorted(COMMITTED.rglob("seed-*.json")):
        manifest = json.loads(path.read_text()).get("poison", {}).get("manifest")
        assert manifest is None or manifest.startswith("cache:"), (path, manifest)


def test_seed_aggregates_stay_within_one_configuration():
    import pandas as pd

    from benchmark.results import aggregate_seeds

    frame = pd.DataFrame({"suite": "embedded", "variant": ["embedded", "embedded", "embedded~x=1-abcdef"],
                          "attack": "badnet", "defense": "none", "seed": [0, 1, 0], "status": "ok",
                          "ca": [0.8, 0.9, 0.5], "asr": [0.9, 1.0, 0.1], "ra": 0.1, "der": 0.5})
    agg = aggregate_seeds(frame).set_index("variant")
    assert agg.loc["embedded", "n"] == 2 and agg.loc["embedded", "asr_mean"] == pytest.approx(0.95)
    assert agg.loc["embedded~x=1-abcdef", "n"] == 1
