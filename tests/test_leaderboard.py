"""The leaderboard: result files -> rankings, CSV/Markdown, a static page (no browser here)."""
from __future__ import annotations

import csv
import json
import os
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest

from leaderboard.build import LeaderboardError, build_site
from leaderboard.columns import ATTACK_COLUMNS, CELL_COLUMNS, DEFENSE_COLUMNS
from leaderboard.ranking import build_boards, pareto_front
from leaderboard.reader import read_results
from leaderboard_data import ATTACKS, DEFENSES, PLUGIN, cell, write_tree

GOLDEN = Path(__file__).parent / "golden" / "leaderboard"
TABLE_FILES = ("defenses.csv", "attacks.csv", "cells.csv", "leaderboard.md")
EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("lb") / "results")


@pytest.fixture(scope="module")
def site(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("lb-site")
    return build_site(results, out)


@pytest.fixture(scope="module")
def board(results):
    (b,) = build_boards(read_results(results).cells)
    return b


def _json_cells(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.rglob("seed-*.json"))]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_site_files(site):
    out = site.out_dir
    assert site.index == out / "index.html" and site.index.read_text().startswith("<!DOCTYPE html>")
    for name in TABLE_FILES:
        assert (out / name).stat().st_size > 100
    pngs = sorted((out / "img").glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    html = site.index.read_text()
    for p in pngs:  # the page references its images by relative path (works from file://)
        assert f'src="img/{p.name}"' in html
    assert "http://" not in html and "https://" not in html  # no CDN, nothing remote
    assert site.cells == 57 and site.failed == 4 and site.suites == ["embedded"]


def test_deterministic_and_golden(results, site, tmp_path):
    again = build_site(results, tmp_path / "again")
    first = sorted(p.relative_to(site.out_dir) for p in site.out_dir.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again.out_dir) for p in again.out_dir.rglob("*") if p.is_file())
    assert first == second
    for rel in first:  # page, images and tables: byte-identical for the same results
        assert (site.out_dir / rel).read_bytes() == (again.out_dir / rel).read_bytes(), rel
    if os.environ.get("CLIPBENCH_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name in TABLE_FILES:
            (GOLDEN / name).write_text((site.out_dir / name).read_text())
    for name in TABLE_FILES:
        assert (site.out_dir / name).read_text() == (GOLDEN / name).read_text(), (
            f"{name} differs from tests/golden/leaderboard/{name}; if the change is intended, rerun with "
            "CLIPBENCH_UPDATE_GOLDEN=1")


def test_defense_means_match_the_files(results, site):
    """Recompute the ranking's numbers straight from the JSON files."""
    data = _json_cells(results)
    rows = {r["defense"]: r for r in _csv_rows(site.out_dir / "defenses.csv") if r["scope"] == "all"}
    for defense in ("cleanclip", "roclip", "finetune", "none"):
        per_attack_asr, per_attack_ca = [], []
        for attack in ATTACKS:
            ok = [d for d in data if d["attack"]["name"] == attack and d["defense"]["name"] == defense
                  and d["status"] == "ok"]
            per_attack_asr.append(statistics.fmean(d["metrics"]["asr"] for d in ok))
            per_attack_ca.append(statistics.fmean(d["metrics"]["clean_accuracy"] for d in ok))
        assert float(rows[defense]["mean_asr"]) == pytest.approx(statistics.fmean(per_attack_asr), abs=1e-6)
        assert float(rows[defense]["worst_asr"]) == pytest.approx(max(per_attack_asr), abs=1e-6)
        assert float(rows[defense]["mean_ca"]) == pytest.approx(statistics.fmean(per_attack_ca), abs=1e-6)
    ranked = sorted((r for r in rows.values() if r["rank"]), key=lambda r: int(r["rank"]))
    asr = [float(r["mean_asr"]) for r in ranked]
    assert asr == sorted(asr) and len(ranked) == 4
    assert rows["none"]["delta_ca"] == "0.000000" and float(rows["none"]["mean_der"]) == pytest.approx(0.5)
    assert rows["roclip"]["failed"] == "1"  # the failed seed is counted, not averaged in


def test_a_failed_seed_is_left_out_of_the_mean(board):
    c = board.cell("blended", "roclip")
    assert [r.seed for r in c.ok_runs] == [0, 2] and len(c.runs) == 3
    expected = statistics.fmean(r.data["metrics"]["asr"] for r in c.ok_runs)
    assert c.row()["asr"] == pytest.approx(expected) and c.row()["failed"] == 1


def test_a_defense_missing_an_attack_gets_no_mean(board, site):
    row = next(r for r in board.defense_rankings["all"] if r["defense"] == PLUGIN)
    # the plugin has the lowest ASR of all on the attacks it did finish: a partial mean would rank it near the top
    assert row["coverage"] == (2, 4)
    for key in ("mean_asr", "worst_asr", "mean_ca", "delta_ca", "mean_ra", "mean_der", "rank"):
        assert row[key] is None, key
    assert board.defense_rankings["all"][-1]["defense"] == PLUGIN  # unranked rows go last
    md = (site.out_dir / "leaderboard.md").read_text()
    line = next(l for l in md.splitlines() if f"| {PLUGIN} |" in l and "plugin clipbench-tidy" in l)
    assert "| – | – | – |" in line and "| 2/4 |" in line
    # within the patch family it covers every attack, so there it gets a mean and a rank
    patch = next(r for r in board.defense_rankings["patch"] if r["defense"] == PLUGIN)
    assert patch["coverage"] == (1, 1) and patch["rank"] is not None and patch["mean_asr"] is not None


def test_plugin_and_family_fields(board):
    rows = {r["defense"]: r for r in board.defense_rankings["all"]}
    assert rows[PLUGIN]["origin"] == "plugin" and rows["cleanclip"]["origin"] == "builtin"
    assert rows["roclip"]["stage"] == "training"
    fams = {r["attack"]: r["family"] for r in board.attack_ranking}
    assert fams == {"badnet": "patch", "blended": "blend", "wanet": "warp", "label_consistent": "clean_label"}
    assert set(board.defense_rankings) == {"all", "patch", "blend", "warp", "clean_label"}


def test_an_attack_that_was_not_implanted_is_marked_and_left_out_of_defense_means(tmp_path):
    root = write_tree(tmp_path / "results")
    for path in (root / "embedded" / "label_consistent").rglob("seed-*.json"):
        data = json.loads(path.read_text())
        if data["status"] == "ok":  # the backdoor never took: undefended ASR 30%
            data["baseline"]["asr"] = 0.30
            if data["defense"]["stage"] == "none":
                data["metrics"]["asr"] = 0.30
            path.write_text(json.dumps(data))
    (b,) = build_boards(read_results(root).cells)
    assert b.not_implanted == ["label_consistent"]
    lc = next(r for r in b.attack_ranking if r["attack"] == "label_consistent")
    assert lc["implant"] == "not implanted" and not lc["implanted"]
    assert all(r["implanted"] for r in b.attack_ranking if r["attack"] != "label_consistent")
    rows = {r["defense"]: r for r in b.defense_rankings["all"]}
    assert rows["cleanclip"]["coverage"] == (3, 3)  # scored over the three implanted attacks only
    three = [b.cell(a, "cleanclip").mean("metrics", "asr") for a in ("badnet", "blended", "wanet")]
    assert rows["cleanclip"]["mean_asr"] == pytest.approx(sum(three) / 3)
    assert "clean_label" not in b.defense_rankings


def test_attack_family_comes_from_the_result_file():
    from leaderboard.reader import attack_family

    assert attack_family({"name": "badnet", "family": "patch"}) == "patch"
    assert attack_family({"name": "mine", "config": {"family": "signal"}}) == "signal"
    assert attack_family({"name": "badnet"}) == "other"  # no name-based guess: the file is the truth


def test_attack_ranking(board, results):
    rows = {r["attack"]: r for r in board.attack_ranking}
    # wanet misses the plugin defense: no mean, no rank
    assert rows["wanet"]["mean_asr_defended"] is None and rows["wanet"]["coverage"] == (3, 4)
    data = _json_cells(results)
    undefended = statistics.fmean(d["baseline"]["asr"] for d in data
                                  if d["attack"]["name"] == "badnet" and d["defense"]["name"] == "none")
    assert rows["badnet"]["undefended_asr"] == pytest.approx(undefended)
    assert rows["badnet"]["best_defense"] == min(
        (d for d in DEFENSES if d != "none"), key=lambda d: board.cell("badnet", d).mean("metrics", "asr"))


def test_pareto_front():
    pts = {"a": (0.90, 0.50), "b": (0.85, 0.10), "c": (0.80, 0.20), "d": (0.90, 0.60), "e": (0.85, 0.10)}
    # c is dominated by b; d by a; b and e tie (neither dominates the other)
    assert pareto_front(pts) == ["b", "e", "a"]


class _Headers(HTMLParser):
    def __init__(self):
        super().__init__()
        self.th: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "th" and "data-key" in dict(attrs):
            self.th.append(dict(attrs))


def test_column_directions(site):
    expected = {"mean_asr": "lower", "worst_asr": "lower", "mean_ca": "higher", "delta_ca": "higher",
                "mean_ra": "higher", "mean_der": "higher", "cost_s": "lower", "failed": "lower"}
    cols = {c.key: c for c in DEFENSE_COLUMNS}
    assert {k: cols[k].better for k in expected} == expected
    assert {c.key: c.better for c in CELL_COLUMNS}["asr"] == "lower"
    # one direction per meaning, in every table: an ASR is lower-is-better, a CA higher-is-better
    by_label: dict[str, set] = {}
    for c in DEFENSE_COLUMNS + ATTACK_COLUMNS + CELL_COLUMNS:
        by_label.setdefault(c.label, set()).add(c.better)
        if "ASR" in c.label and "std" not in c.label:
            assert c.better == "lower", c.key
        if c.label.startswith("CA") and "std" not in c.label:
            assert c.better == "higher", c.key
    assert {label: dirs for label, dirs in by_label.items() if len(dirs) > 1} == {}
    for c in DEFENSE_COLUMNS + ATTACK_COLUMNS + CELL_COLUMNS:  # every metric says its direction
        assert c.better is not None or c.kind in ("text", "int") and c.key in (
            "rank", "defense", "stage", "source", "pareto", "attack", "family", "best_defense", "implant"), c.key
        assert c.description
    parser = _Headers()
    parser.feed(site.index.read_text())
    seen = {(h["data-key"], h["data-better"]) for h in parser.th}
    assert ("mean_asr", "lower") in seen and ("mean_ca", "higher") in seen
    th = next(h for h in parser.th if h["data-key"] == "mean_asr")
    assert "lower is better" in th["title"] and "every attack" in th["title"]


def test_page_defines_the_metrics(site):
    html = site.index.read_text()
    assert "Target-class images are excluded" in html
    for term in ("CA (clean accuracy)", "ASR (attack success rate)", "RA (robust accuracy)",
                 "DER (defense effectiveness rating)"):
        assert term in html


def test_untrusted_names_are_escaped(tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1):
        evil = cell("badnet", PLUGIN, seed, defense_name=EVIL)
        evil["attack"]["config"]["note"] = "</pre><img src=x onerror=alert(2)>"
        evil["attack"]["family"] = "$\\frac{a}{b}$ <b>fam</b>"  # mathtext in plots must not be parsed
        path = results / "embedded" / "badnet" / "evil" / f"seed-{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(evil))
        plain = cell("badnet", "none", seed)
        path = results / "embedded" / "badnet" / "none" / f"seed-{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(plain))
    report = build_site(results, tmp_path / "site")
    html = report.index.read_text()
    assert EVIL not in html and "<img src=x" not in html and "<b>fam</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # only the page's own script
    assert EVIL in (report.out_dir / "defenses.csv").read_text()  # CSV keeps the raw text


def test_bad_input(tmp_path):
    with pytest.raises(LeaderboardError, match="does not exist"):
        build_site(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "seed-0.json").write_text("{not json")
    with pytest.raises(LeaderboardError, match="no cell results"):
        build_site(tmp_path / "empty")


def test_other_schema_is_skipped_and_reported(results, tmp_path):
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(results / "embedded" / "badnet", copy / "embedded" / "badnet")
    (copy / "embedded" / "badnet" / "none" / "seed-9.json").write_text(json.dumps({"schema_version": 2}))
    report = build_site(copy, tmp_path / "site", figures=False)
    assert report.skipped == ["embedded/badnet/none/seed-9.json: not a schema-1 cell result"]
    assert "seed-9.json" in report.index.read_text()


def test_cli_leaderboard(results, tmp_path, capsys):
    from benchmark.cli import main

    assert main(["leaderboard", "--results-dir", str(results), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "index.html").is_file() and (tmp_path / "out" / "defenses.csv").is_file()
    assert "index.html" in capsys.readouterr().out
    assert main(["leaderboard", "--results-dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--results-dir" in err and len(err.strip().splitlines()) == 1


def _sweep(defense: str, lrs: list[float], asrs: list[float], drops: list[float], chosen: int) -> dict:
    rows = [{"candidate": {"train": {"lr": lr}}, "mean_asr": a, "mean_ca_drop": d, "min_asr": a,
             "per_attack": {"badnet/0": {"asr": a, "ca": 0.8, "ca_drop": d}}} for lr, a, d in zip(lrs, asrs, drops)]
    return {"kind": "clipbench-sweep", "version": 1, "defense": defense, "attacks": ["badnet"], "seeds": [0],
            "split": "val", "grid": ["train.lr=" + ",".join(map(str, lrs))], "suite_grid": [],
            "rule": {"max_ca_drop": 2.0, "min_asr": None}, "candidates": rows, "chosen": rows[chosen]["candidate"]}


def test_published_sweeps_are_plotted_and_listed(tmp_path):
    root = write_tree(tmp_path / "results")
    sweeps = root / "sweeps" / "embedded"
    sweeps.mkdir(parents=True)
    (sweeps / "cleanclip.json").write_text(json.dumps(_sweep("cleanclip", [1e-4, 1e-3, 4e-3], [0.9, 0.05, 0.02], [0.0, 0.01, 0.05], 1)))
    (sweeps / "finetune.json").write_text(json.dumps(_sweep("finetune", [1e-4, 1e-3, 4e-3], [0.95, 0.3, 0.04], [0.0, 0.005, 0.06], 1)))
    (sweeps / "broken.json").write_text("{not json")
    site = build_site(root, tmp_path / "site")
    html = site.index.read_text()
    (png,) = (site.out_dir / "img").glob("*-sweep.png")
    assert f'src="img/{png.name}"' in html and png.stat().st_size > 1000
    assert "How the settings were chosen" in html and "train.lr=0.001" in html
    assert any("broken.json" in s for s in site.skipped)  # reported, not silently dropped
    rows = _csv_rows(site.out_dir / "sweeps.csv")
    assert {r["defense"]: r["chosen"] for r in rows} == {"cleanclip": "train.lr=0.001", "finetune": "train.lr=0.001"}
    assert float(rows[0]["chosen_asr"]) == pytest.approx(0.05)


def test_scatter_labels_never_overlap():
    """Two defenses at nearly the same (ASR, CA): their labels are moved apart."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from leaderboard.plots import spread_labels

    fig = Figure(figsize=(7, 4.6))
    ax = fig.add_subplot()
    ax.set_xlim(0, 100)
    ax.set_ylim(60, 80)
    labels = [ax.annotate(name, (10 + 0.2 * i, 70 + 0.05 * i), xytext=(6, 4), textcoords="offset points",
                          fontsize=9, arrowprops={"arrowstyle": "-"}) for i, name in enumerate(
                              ["ta_cleaner", "cleanclip", "finetune_aug", "finetune"])]
    renderer = FigureCanvasAgg(fig).get_renderer()

    def overlaps() -> int:
        boxes = [Text.get_window_extent(t, renderer) for t in labels]  # the text, not its line
        return sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])

    assert overlaps() > 0
    spread_labels(fig, labels)
    assert overlaps() == 0


def test_colour_scales_do_not_exaggerate(site):
    """ASR 0-100; CA centred on the clean model with a stated span (checked on the page's caption)."""
    from leaderboard.plots import CA_SPAN

    html = site.index.read_text()
    assert "centred on the clean model" in html and f"&plusmn;{CA_SPAN:.0f} points" in html


def test_a_single_cell_page_has_no_empty_artefacts(tmp_path):
    """One attack x none: no scatter (nothing to compare), no Pareto caption, no unexplained 0/0."""
    results = tmp_path / "results"
    path = results / "embedded" / "badnet" / "none" / "seed-0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(cell("badnet", "none", 0)))
    report = build_site(results, tmp_path / "site")
    html = report.index.read_text()
    assert not list((tmp_path / "site" / "img").glob("*scatter*")) and "dashed line joins the Pareto front" not in html
    assert "0/0" not in html  # the attack row's "defenses" column: – when only none ran
    assert "centred on the clean model" in html


def test_cell_page_shows_paper_schedule_and_loss_parts_escaped(tmp_path):
    """Issue 21: ``defense.paper`` (untrusted plugin text), ``defense.schedule`` and the per-epoch
    means of ``defense.training.parts`` appear on the cell's page, the script only as text."""
    results = tmp_path / "results"
    for seed in (0, 1):
        r = cell("badnet", PLUGIN, seed)
        r["defense"]["paper"] = f"{EVIL} Doe et al. 2025"
        r["attack"]["paper"] = "Gu et al. 2017 <i>BadNets</i>"
        r["defense"]["schedule"] = {"source": "defense_common.train", "train": {"epochs": 5}, "method_default": {"epochs": 2},
                                    "overridden": {"epochs": [2, 5], "lr": [0.0001, 0.001]}}
        r["defense"]["training"] = {"stage": "defense", "steps": 10, "loss_per_epoch": [2.5, 2.0],
                                    "parts": {"clip": [2.5, 1.99], "l2_anchor": [0.00125, 0.0042 + seed]}}
        path = results / "embedded" / "badnet" / PLUGIN / f"seed-{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    html = build_site(results, tmp_path / "site", figures=False).index.read_text()
    assert EVIL not in html and "<i>BadNets</i>" not in html and html.count("<script>") == 1
    assert "defense paper: &lt;script&gt;alert(1)&lt;/script&gt; Doe et al. 2025" in html
    assert "attack paper: Gu et al. 2017 &lt;i&gt;BadNets&lt;/i&gt;" in html
    assert "defense_common.train (overrides the method&#39;s own default: epochs 2 → 5, lr 0.0001 → 0.001)" in html
    assert "<code>l2_anchor</code> 0.00125, 0.0042" in html and "<code>l2_anchor</code> 0.00125, 1.004" in html
    assert "<code>clip</code> 2.5, 1.99" in html


def test_cli_leaderboard_strict_fails_on_an_unreadable_result(results, tmp_path, capsys):
    import shutil

    from benchmark.cli import main

    copy = tmp_path / "results"
    shutil.copytree(results / "embedded" / "badnet", copy / "embedded" / "badnet")
    assert main(["leaderboard", "--results-dir", str(copy), "--out", str(tmp_path / "a"), "--strict"]) == 0
    capsys.readouterr()
    (copy / "embedded" / "badnet" / "none" / "seed-7.json").write_text('{"schema_version": 1, "suite": ')  # truncated
    assert main(["leaderboard", "--results-dir", str(copy), "--out", str(tmp_path / "b")]) == 0  # default: reported only
    assert "skipped" in capsys.readouterr().out
    assert main(["leaderboard", "--results-dir", str(copy), "--out", str(tmp_path / "c"), "--strict"]) == 1
    captured = capsys.readouterr()
    assert "seed-7.json: unreadable" in captured.out
    assert captured.err.strip() == ("clipbench: error: --strict: 1 result file(s) could not be read (listed above as "
                                    "skipped); fix or remove them")
    assert (tmp_path / "c" / "index.html").is_file()  # the site is still written


def test_a_rate_swept_at_a_fixed_weight_is_plotted_on_the_rate_axis_and_labelled_with_it():
    """A second pass (lambda2 fixed at 1, the rate swept) plots on the rate axis, its line
    named with the fixed weight; a weight sweep (lambda2 varies, the rate fixed) is listed,
    not drawn on the rate axis."""
    from leaderboard.sweeps import Sweep

    rate = _sweep("cleanclip", [5e-4, 1e-3, 2e-3], [0.3, 0.1, 0.05], [0.0, 0.01, 0.02], 1)
    for row, lr in zip(rate["candidates"], [5e-4, 1e-3, 2e-3]):
        row["candidate"] = {"lambda2": 1, "train": {"lr": lr}}
    rate["chosen"] = rate["candidates"][1]["candidate"]
    weight = _sweep("cleanclip", [5e-4] * 3, [0.3, 0.31, 0.35], [0.0, 0.01, 0.02], 0)
    for row, lam in zip(weight["candidates"], [1, 2, 4]):
        row["candidate"] = {"lambda2": lam, "train": {"lr": 5e-4}}
    r, w = Sweep("sweeps/embedded/cc-pass2.json", "embedded", rate), Sweep("sweeps/embedded/cc-l2.json", "embedded", weight)
    assert (r.axis(), r.fixed(), r.label()) == ("train.lr", {"lambda2": 1}, "cleanclip (lambda2=1)")
    assert [p[0] for p in r.points()] == [5e-4, 1e-3, 2e-3] and [p[3] for p in r.points()] == [False, True, False]
    assert (w.axis(), w.fixed()) == ("lambda2", {"train.lr": 5e-4})
    several = _sweep("roclip", [1e-3, 2e-3], [0.5, 0.4], [0.0, 0.0], 0)
    several["candidates"][1]["candidate"] = {"image_aug": True, "train": {"lr": 2e-3}}
    assert Sweep("x.json", "embedded", several).axis() is None  # two keys vary: listed only


def test_an_attacker_sweep_alone_is_listed_without_a_figure(tmp_path):
    root = write_tree(tmp_path / "results")
    (root / "sweeps" / "embedded").mkdir(parents=True)
    sweep = _sweep("none", [1e-3, 2e-3], [0.6, 0.8], [0.0, 0.01], 1)
    for row in sweep["candidates"]:
        row["candidate"] = {"suite": {"poison_train": row["candidate"]["train"]}}
    sweep.update(chosen=sweep["candidates"][1]["candidate"], rule={"max_ca_drop": 2.0, "min_asr": 0.95})
    (root / "sweeps" / "embedded" / "attacker.json").write_text(json.dumps(sweep))
    site = build_site(root, tmp_path / "site")
    html = site.index.read_text()
    assert "poison_train.lr=0.002" in html and "every ASR &gt;= 95%" in html
    assert not list((site.out_dir / "img").glob("*-sweep.png"))


def _with_more_families(root: Path) -> Path:
    """The tree plus copies of badnet's cells as a signal attack and two optimised ones."""
    for name, family, factor in (("sig", "signal", 0.9), ("badclip", "optimised", 1.0), ("badclip_eot", "optimised", 1.02)):
        for path in (root / "embedded" / "badnet").rglob("seed-*.json"):
            data = json.loads(path.read_text())
            data["attack"] = {**data["attack"], "name": name, "family": family}
            if data["status"] == "ok":
                data["metrics"]["asr"] = min(1.0, data["metrics"]["asr"] * factor)
            dest = root / "embedded" / name / path.relative_to(root / "embedded" / "badnet")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps(data))
    return root


def test_attack_ranking_is_grouped_by_family_and_shows_trigger_thumbnails(tmp_path):
    from PIL import Image

    from leaderboard.ranking import FAMILY_ORDER

    root = _with_more_families(write_tree(tmp_path / "results"))
    (b,) = build_boards(read_results(root).cells)
    families = [r["family"] for r in b.attack_ranking]
    assert families == sorted(families, key=FAMILY_ORDER.index)  # patch, blend, warp, signal, optimised, clean_label
    assert [r["group"] for r in b.attack_ranking] == ["start" if i == 0 or families[i - 1] != f else ""
                                                      for i, f in enumerate(families)]
    optimised = [r for r in b.attack_ranking if r["family"] == "optimised"]
    assert [r["attack"] for r in optimised] == ["badclip_eot", "badclip"]  # strongest first within the family
    ranked = sorted((r for r in b.attack_ranking if r["rank"]), key=lambda r: r["rank"])
    assert [r["mean_asr_defended"] for r in ranked] == sorted((r["mean_asr_defended"] for r in ranked), reverse=True)
    assert b.families == [f for f in FAMILY_ORDER if f in families]

    previews = root / "previews" / "attacks"
    previews.mkdir(parents=True)
    for name, shade in (("badnet", 40), ("badclip", 200)):
        Image.new("RGB", (30, 10), (shade, shade, shade)).save(previews / f"{name}.png")
    (previews / "sig.png").write_text("not a png")  # ignored
    site = build_site(root, tmp_path / "site")
    html = site.index.read_text()
    thumbs = sorted(p.name for p in (site.out_dir / "img").glob("attack-*.png"))
    assert len(thumbs) == 2 and all(f'class="thumb" src="img/{t}"' in html for t in thumbs)
    for t in thumbs:
        assert (site.out_dir / "img" / t).read_bytes() in {(previews / f"{n}.png").read_bytes() for n in ("badnet", "badclip")}
    attacks_table = html[html.index('<table class="sortable attacks">'):]
    attacks_table = attacks_table[:attacks_table.index("</table>")]
    assert attacks_table.count('class="thumb"') == 2 and 'alt="trigger of badclip' in attacks_table
    assert 'data-group="start"' in attacks_table and "signal" in attacks_table
    again = build_site(root, tmp_path / "site2")
    assert again.index.read_bytes() == site.index.read_bytes()  # deterministic with thumbnails
    # a removed preview drops its thumbnail on the next build
    (previews / "badnet.png").unlink()
    assert len(list((build_site(root, tmp_path / "site").out_dir / "img").glob("attack-*.png"))) == 1
