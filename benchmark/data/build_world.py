"""Rebuild the embedded world's attribute table and captions (``embedded/world.json.xz``).

The images of the embedded world are composed at load time (:mod:`benchmark.data.world`)
from the shipped Fashion-MNIST items (``embedded/images.u8.xz``, built by
:mod:`benchmark.data.build_embedded`) and this table: per split and item its colour,
size, position, background, mirroring and drawing geometry (side, x, y), drawn from
:data:`WORLD_SEED`, and its caption for ``caption_seed`` 0 (other caption seeds are
generated at load time from the same table). Everything is a pure function of the
shipped items and the seeds, so rebuilding writes the same bytes::

    python -m benchmark.data.build_world [--out DIR] [--preview results/previews/world.png]

``--preview`` renders a grid of 48 test images with their captions (matplotlib), to
check by eye that every caption is true of its image.

=========  ======  ======================================================================
split      size    used for
=========  ======  ======================================================================
pretrain   14,000  clean pre-training (shared by every cell)
poison      8,000  the attacker's training set (poisoned pairs mixed in)
defense     4,000  clean fine-tuning set of post-training defenses
val         1,000  choosing defense configurations (never the test set)
test        5,000  CA / ASR / RA, colour zero-shot
=========  ======  ======================================================================
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import textwrap
from pathlib import Path

import numpy as np

from .captions import CAPTIONS_VERSION, make_captions
from .world import TABLE_COLUMNS, draw_attributes

#: seed of the attribute draws (split ``k`` uses ``WORLD_SEED + k``)
WORLD_SEED = 3_000
WORLD_FILE = "world.json.xz"
SPLITS = ("pretrain", "poison", "defense", "val", "test")
DEFAULT_OUT = Path(__file__).parent / "embedded"


def caption_stream(caption_seed: int, split: str) -> int:
    """The caption seed of one split: the same images always get the same captions."""
    return caption_seed * 1000 + SPLITS.index(split)


def body_digest(body: dict) -> str:
    """SHA-256 of the table's canonical JSON (the ``sha256`` field excluded)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def build_body(index: dict) -> dict:
    """The world table of the items described by ``index`` (``embedded/index.json``)."""
    splits = {}
    for k, name in enumerate(SPLITS):
        labels = np.asarray(index["splits"][name]["labels"], dtype=np.int64)
        table = draw_attributes(labels, WORLD_SEED + k)
        splits[name] = {
            "table": {c: table[c].tolist() for c in TABLE_COLUMNS},
            "captions": make_captions(labels, caption_stream(0, name), table),
        }
    return {"format": 3, "captions_version": CAPTIONS_VERSION, "world_seed": WORLD_SEED,
            "items_sha256": index["sha256"], "columns": list(TABLE_COLUMNS), "splits": splits}


def encode(body: dict) -> bytes:
    """The file's bytes: xz-compressed JSON with the body's SHA-256."""
    text = json.dumps({**body, "sha256": body_digest(body)}, sort_keys=True, separators=(",", ":"))
    return lzma.compress(text.encode(), preset=9 | lzma.PRESET_EXTREME)


def build(out: Path = DEFAULT_OUT) -> dict:
    """Write ``world.json.xz`` next to the shipped items in ``out``; return its body."""
    index = json.loads((out / "index.json").read_text())
    body = build_body(index)
    (out / WORLD_FILE).write_bytes(encode(body))
    return body


def preview(path: Path, split: str = "test", count: int = 48, columns: int = 8) -> None:
    """A grid of ``count`` images of ``split`` with their captions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .embedded import load_split

    data = load_split(split)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.75 * rows))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        ax.imshow(data.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"{i}: " + "\n".join(textwrap.wrap(data.captions[i], 30)), fontsize=6.5, loc="left")
    fig.suptitle(f"embedded world v3, {split} split, first {count} (captions version {CAPTIONS_VERSION})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.data.build_world", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder holding index.json and images.u8.xz")
    parser.add_argument("--preview", type=Path, default=None, help="also render a grid of test images with captions")
    args = parser.parse_args(argv)
    body = build(args.out)
    size = (args.out / WORLD_FILE).stat().st_size
    print(f"wrote {args.out / WORLD_FILE} ({size / 1024:.0f} KiB; splits "
          f"{ {k: len(v['captions']) for k, v in body['splits'].items()} })")
    if args.preview is not None:
        if args.out != DEFAULT_OUT:
            parser.error("--preview renders the shipped world; omit --out")
        preview(args.preview)
        print(f"wrote {args.preview}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
