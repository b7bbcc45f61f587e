"""The leaderboard page in a real browser: Debian's headless Chromium driven by playwright.

Never ``playwright install`` (it downloads a browser): the tests use the system Chromium
at /usr/bin/chromium (``apt-get install chromium``; .ci/run installs it).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import need
from leaderboard.build import build_site
from leaderboard.ranking import build_boards
from leaderboard.reader import read_results
from leaderboard_data import PLUGIN, cell, write_tree

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def browser():
    need("chromium", CHROMIUM.exists() and importlib.util.find_spec("playwright") is not None,
         "apt-get install chromium; pip install playwright (never `playwright install`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    results = write_tree(tmp_path_factory.mktemp("lbb") / "results")
    report = build_site(results, tmp_path_factory.mktemp("lbb-site"))
    (board,) = build_boards(read_results(results).cells)
    return report, board


@pytest.fixture
def page(browser):
    """A fresh page that records console errors, page errors, failed requests and dialogs."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.problems = []
    pg.on("console", lambda m: pg.problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
          else None)
    pg.on("pageerror", lambda e: pg.problems.append(f"pageerror: {e}"))
    pg.on("requestfailed", lambda r: pg.problems.append(f"requestfailed: {r.url}"))
    pg.on("dialog", lambda d: (pg.problems.append(f"dialog: {d.message}"), d.dismiss()))
    yield pg
    context.close()


def _open(page, report) -> None:
    page.goto(report.index.resolve().as_uri())
    page.wait_for_load_state("load")


def _visible_column(page, table_selector: str, key: str) -> list[str]:
    """The data-sort values of one column, in row order, of the table's visible rows."""
    return page.eval_on_selector(table_selector, """(table, key) => {
        const idx = [...table.tHead.rows[0].cells].findIndex(th => th.dataset.key === key);
        return [...table.tBodies[0].rows].filter(r => !r.hidden).map(r => r.cells[idx].dataset.sort);
    }""", key)


DEFENSES_ALL = "div.scope[data-scope='all'] table.defenses"


def test_page_loads_without_errors_and_images_load(page, site):
    report, _ = site
    _open(page, report)
    assert page.title() == "clipbench leaderboard"
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == 3
    for src, complete, width, height in images:
        assert complete and width > 200 and height > 100, src
    assert {src.rsplit("-", 1)[1] for src, *_ in images} == {"asr.png", "ca.png", "scatter.png"}
    assert page.is_visible("#definitions") and "Target-class images are excluded" in page.inner_text("#definitions")
    assert page.problems == []


def test_sorting_reorders_rows(page, site):
    report, board = site
    _open(page, report)
    expected = sorted(r["mean_asr"] for r in board.defense_rankings["all"] if r["mean_asr"] is not None)
    page.click(f"{DEFENSES_ALL} th[data-key='mean_asr']")  # lower is better: first click sorts ascending
    values = _visible_column(page, DEFENSES_ALL, "mean_asr")
    assert [float(v) for v in values if v] == pytest.approx(expected, abs=1e-6)
    assert values[-1] == ""  # the defense without a mean stays last
    assert page.get_attribute(f"{DEFENSES_ALL} th[data-key='mean_asr']", "aria-sort") == "ascending"
    page.click(f"{DEFENSES_ALL} th[data-key='mean_asr']")
    values = _visible_column(page, DEFENSES_ALL, "mean_asr")
    assert [float(v) for v in values if v] == pytest.approx(expected[::-1], abs=1e-6) and values[-1] == ""
    page.click(f"{DEFENSES_ALL} th[data-key='mean_ca']")  # higher is better: first click sorts descending
    ca = [float(v) for v in _visible_column(page, DEFENSES_ALL, "mean_ca") if v]
    assert ca == sorted(ca, reverse=True) and len(ca) == 4
    names = _visible_column(page, DEFENSES_ALL, "defense")
    best_ca = max((r for r in board.defense_rankings["all"] if r["mean_ca"] is not None), key=lambda r: r["mean_ca"])
    assert names[0] == best_ca["defense"]
    # a text column in the cells table
    page.click("table.cells th[data-key='defense']")
    defenses = _visible_column(page, "table.cells", "defense")
    assert defenses == sorted(defenses) and len(defenses) == len(board.cells)
    assert page.problems == []


def test_filters_hide_the_right_rows(page, site):
    report, board = site
    _open(page, report)
    page.select_option("#filter-stage", "training")
    assert _visible_column(page, DEFENSES_ALL, "defense") == ["roclip"]
    assert set(_visible_column(page, "table.cells", "defense")) == {"roclip"}
    visible_details = page.eval_on_selector_all("details", "ds => ds.filter(d => !d.hidden).map(d => d.dataset.stage)")
    assert visible_details and set(visible_details) == {"training"}
    assert len(_visible_column(page, "table.attacks", "attack")) == 4  # attacks have no stage: untouched

    page.select_option("#filter-stage", "")
    page.select_option("#filter-origin", "plugin")
    assert _visible_column(page, DEFENSES_ALL, "defense") == [PLUGIN]

    page.select_option("#filter-origin", "")
    page.select_option("#filter-family", "patch")
    assert page.is_hidden("div.scope[data-scope='all']") and page.is_visible("div.scope[data-scope='patch']")
    patch = "div.scope[data-scope='patch'] table.defenses"
    # against the patch family alone the plugin covers every attack, so it is ranked there
    ranks = dict(zip(_visible_column(page, patch, "defense"), _visible_column(page, patch, "rank")))
    assert ranks[PLUGIN] != "" and len(ranks) == len(board.defenses)
    assert _visible_column(page, "table.attacks", "attack") == ["badnet"]
    assert set(_visible_column(page, "table.cells", "family")) == {"patch"}

    page.select_option("#filter-family", "")
    assert page.is_visible("div.scope[data-scope='all']")
    assert len(_visible_column(page, "table.cells", "attack")) == len(board.cells)
    assert page.problems == []


def test_attack_thumbnails_load_and_families_stay_grouped_until_resorted(page, tmp_path):
    from PIL import Image

    from test_leaderboard import _with_more_families

    results = _with_more_families(write_tree(tmp_path / "results"))
    previews = results / "previews" / "attacks"
    previews.mkdir(parents=True)
    for i, name in enumerate(("badnet", "sig", "badclip")):
        Image.new("RGB", (104, 36), (60 * i, 120, 200)).save(previews / f"{name}.png")
    report = build_site(results, tmp_path / "site")
    _open(page, report)
    thumbs = page.eval_on_selector_all("table.attacks img.thumb", "imgs => imgs.map(i => [i.alt, i.complete, "
                                       "i.naturalWidth, i.getBoundingClientRect().height])")
    assert len(thumbs) == 3 and all(done and width == 104 and 30 < height < 50 for _, done, width, height in thumbs)
    assert sorted(alt.split(":")[0] for alt, *_ in thumbs) == ["trigger of badclip", "trigger of badnet", "trigger of sig"]
    families = _visible_column(page, "table.attacks", "family")
    assert families == ["patch", "blend", "warp", "signal", "optimised", "optimised", "clean_label"]
    border = "tr[data-group='start']:not(:first-child) td"
    assert page.eval_on_selector(f"table.attacks {border}", "td => getComputedStyle(td).borderTopWidth") == "2px"
    page.click("table.attacks th[data-key='undefended_asr']")  # sorted across families: no group separators
    assert page.eval_on_selector(f"table.attacks {border}", "td => getComputedStyle(td).borderTopWidth") != "2px"
    page.select_option("#filter-family", "optimised")
    assert sorted(_visible_column(page, "table.attacks", "attack")) == ["badclip", "badclip_eot"]
    assert page.problems == []


def test_script_in_a_defense_name_renders_as_text(page, tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1):
        evil = cell("badnet", PLUGIN, seed, defense_name=EVIL)
        path = results / "embedded" / "badnet" / "evil" / f"seed-{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(evil))
    report = build_site(results, tmp_path / "site")
    _open(page, report)
    names = _visible_column(page, "div.scope[data-scope='all'] table.defenses", "defense")
    assert names == [EVIL]
    assert EVIL in page.inner_text("div.scope[data-scope='all'] table.defenses")
    assert page.eval_on_selector_all("script", "s => s.length") == 1
    assert page.problems == []  # no alert dialog, no error


OVERFLOW = """() => {
    document.querySelectorAll('details').forEach(d => { d.open = true; });
    const wide = [];
    const doc = document.documentElement;
    if (doc.scrollWidth > doc.clientWidth) wide.push(['page', doc.scrollWidth, doc.clientWidth]);
    document.querySelectorAll('.tablewrap').forEach(w => {
        if (w.offsetParent !== null && w.scrollWidth > w.clientWidth + 1)
            wide.push([(w.querySelector('caption') || w.querySelector('th')).textContent.slice(0, 60),
                       w.scrollWidth, w.clientWidth]);
    });
    return wide;
}"""


@pytest.mark.parametrize("which", ["synthetic", "committed"])
def test_no_horizontal_overflow_at_1400_px(page, site, tmp_path, which):
    """Every table (cell details opened) fits a 1400 px window: nothing hides behind a scrollbar."""
    if which == "synthetic":
        report, _ = site
    else:
        report = build_site(Path(__file__).resolve().parents[1] / "results", tmp_path / "site", figures=False)
    page.set_viewport_size({"width": 1400, "height": 900})
    _open(page, report)
    assert page.evaluate(OVERFLOW) == []
