"""Screenshot of a built leaderboard page, for the README: ``python -m leaderboard.screenshot SITE_DIR``.

Uses Debian's Chromium (``/usr/bin/chromium``) through playwright-python (the ``dev``
extra); never ``playwright install``, which downloads a browser. Writes, for each of
``--widths`` (default 1400 and 900 px), the top of the page (definitions, filters, defense
ranking and heatmaps): ``SITE_DIR/screenshot.png`` at the first width and
``SITE_DIR/screenshot-<width>.png`` at the others (``--out`` names the first file).
"""
from __future__ import annotations

import argparse
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def screenshot(index: Path, out: Path, *, width: int = 1400, height: int = 1420,
               executable: str = "/usr/bin/chromium") -> Path:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(Path(index).resolve().as_uri())
            page.wait_for_load_state("load")
            page.screenshot(path=str(out))
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m leaderboard.screenshot", description=__doc__.splitlines()[0])
    ap.add_argument("site", type=Path, help="folder holding index.html (e.g. results/leaderboard)")
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default SITE/screenshot.png)")
    ap.add_argument("--height", type=int, default=1420, help="viewport height in pixels (default 1420)")
    ap.add_argument("--widths", default="1400,900", help="viewport widths, comma-separated (default 1400,900)")
    args = ap.parse_args(argv)
    index = args.site / "index.html"
    if not index.is_file():
        ap.error(f"{index} does not exist; build it first with `clipbench leaderboard`")
    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        ap.error(f"--widths {args.widths!r} must be comma-separated integers, e.g. 1400,900")
    for i, width in enumerate(widths):
        out = (args.out or args.site / "screenshot.png") if i == 0 else args.site / f"screenshot-{width}.png"
        print(screenshot(index, out, width=width, height=args.height))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
