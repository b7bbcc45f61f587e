"""The embedded world shipped inside the package (no download): RGB 32x32 scenes.

Two files in ``embedded/``: ``images.u8.xz``, the Fashion-MNIST items (28x28 grey uint8,
built by :mod:`benchmark.data.build_embedded`; split sizes there), and
``world.json.xz``, the attribute table and captions (built by
:mod:`benchmark.data.build_world`). :func:`load_split` composes a split's images from
both (:func:`benchmark.data.world.compose`: colour, size, position, background,
mirroring; about 0.3 s of CPU for the 14,000 pre-training images) and returns them with
their captions (:mod:`benchmark.data.captions`), garment labels and per-image attribute
labels. Both files are checked against their SHA-256.
"""
from __future__ import annotations

import hashlib
import json
import lzma
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .build_world import SPLITS, WORLD_FILE, WORLD_SEED, body_digest, caption_stream
from .captions import CLASS_NAMES, make_captions
from .dataset import TensorPairs
from .world import ATTRIBUTES, TABLE_COLUMNS, compose, draw_attributes

EMBEDDED_DIR = Path(__file__).parent / "embedded"


class EmbeddedDataError(RuntimeError):
    """The shipped data files are missing or corrupt."""


@lru_cache(maxsize=1)
def _load_all(directory: str = str(EMBEDDED_DIR)) -> tuple[np.ndarray, dict]:
    """The shipped items ``(N, 28, 28)`` uint8 and their index."""
    folder = Path(directory)
    try:
        index = json.loads((folder / "index.json").read_text())
        raw = lzma.decompress((folder / "images.u8.xz").read_bytes())
    except (OSError, lzma.LZMAError, json.JSONDecodeError) as exc:
        raise EmbeddedDataError(
            f"embedded Fashion-MNIST data in {folder} is missing or corrupt ({exc}); reinstall clipbench "
            "or rebuild it with `python -m benchmark.data.build_embedded`"
        ) from exc
    if hashlib.sha256(raw).hexdigest() != index["sha256"]:
        raise EmbeddedDataError(f"embedded data in {folder} fails its checksum; rebuild with `python -m benchmark.data.build_embedded`")
    h, w = index["shape"]
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, h, w), index


@lru_cache(maxsize=1)
def _load_world(directory: str = str(EMBEDDED_DIR)) -> dict:
    """The attribute table and captions (``world.json.xz``), checked against its SHA-256 and the items."""
    folder = Path(directory)
    fix = "reinstall clipbench or rebuild it with `python -m benchmark.data.build_world`"
    try:
        world = json.loads(lzma.decompress((folder / WORLD_FILE).read_bytes()))
    except (OSError, lzma.LZMAError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EmbeddedDataError(f"embedded world table {folder / WORLD_FILE} is missing or corrupt ({exc}); {fix}") from exc
    digest = world.pop("sha256", None)
    if digest != body_digest(world):
        raise EmbeddedDataError(f"embedded world table {folder / WORLD_FILE} fails its checksum; {fix}")
    try:
        items_sha256 = json.loads((folder / "index.json").read_text())["sha256"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise EmbeddedDataError(f"embedded Fashion-MNIST index {folder / 'index.json'} is missing or corrupt ({exc}); "
                                "reinstall clipbench or rebuild it with `python -m benchmark.data.build_embedded`") from exc
    if world["items_sha256"] != items_sha256:
        raise EmbeddedDataError(f"embedded world table {folder / WORLD_FILE} was built for other items than "
                                f"{folder / 'images.u8.xz'}; {fix}")
    return world


def split_table(split: str, directory: str = str(EMBEDDED_DIR)) -> dict[str, np.ndarray]:
    """The attribute table of one split: int64 columns :data:`benchmark.data.world.TABLE_COLUMNS`."""
    table = _load_world(directory)["splits"][split]["table"]
    return {c: np.asarray(table[c], dtype=np.int64) for c in TABLE_COLUMNS}


def load_split(split: str, caption_seed: int = 0) -> TensorPairs:
    """One embedded split: RGB 32x32 uint8 images, captions, garment labels and attribute labels."""
    if split not in SPLITS:
        raise KeyError(f"unknown embedded split {split!r}; choose from {', '.join(SPLITS)}")
    if caption_seed == 0:
        return _scene_pairs(split, lambda labels: split_table(split),
                            lambda labels, table: list(_load_world()["splits"][split]["captions"]))
    return _scene_pairs(split, lambda labels: split_table(split),
                        lambda labels, table: make_captions(labels, caption_stream(caption_seed, split), table))


def _scene_pairs(split: str, draw_table, write_captions) -> TensorPairs:
    """One split's shipped items composed into the scenes of ``draw_table(labels)``, with
    ``write_captions(labels, table)``: what :func:`load_split` and :func:`render_split` share."""
    items, index = _load_all()
    info = index["splits"][split]
    labels = np.asarray(info["labels"], dtype=np.int64)
    table = draw_table(labels)
    images = compose(items[info["offset"] : info["offset"] + info["count"]], table)
    attributes = {k: torch.from_numpy(table[k]) for k in ATTRIBUTES}
    return TensorPairs(torch.from_numpy(images), write_captions(labels, table), torch.from_numpy(labels), CLASS_NAMES,
                       attributes=attributes)


def render_split(split: str, rendering: int) -> TensorPairs:
    """One embedded split's items in another draw of the world: grounded augmentation.

    Rendering 0 is the shipped split (:func:`load_split`). Rendering ``r > 0`` draws the
    same Fashion-MNIST items with fresh attributes (colour, size, position, background,
    mirroring; seed ``WORLD_SEED + 1000 * r + k`` for the split's index ``k``, disjoint from
    the shipped tables' seeds) and fresh captions that state them, so every caption stays
    true of its image while the model sees each garment in many scenes. Used by
    :mod:`benchmark.pretrain_embedded` (``renderings``); deterministic.
    """
    if rendering == 0:
        return load_split(split)
    if split not in SPLITS or rendering < 0:
        raise KeyError(f"unknown embedded split {split!r} or rendering {rendering}; choose from {', '.join(SPLITS)}, r >= 0")
    k = SPLITS.index(split)
    return _scene_pairs(split, lambda labels: draw_attributes(labels, WORLD_SEED + 1000 * rendering + k),
                        lambda labels, table: make_captions(labels, 1_000_000 + 1000 * rendering + k, table))


def render_splits(split: str, renderings: int) -> TensorPairs:
    """Renderings ``0 .. renderings - 1`` of one split, concatenated (:func:`render_split`)."""
    parts = [render_split(split, r) for r in range(renderings)]
    if len(parts) == 1:
        return parts[0]
    return TensorPairs(torch.cat([p.images for p in parts]), [c for p in parts for c in p.captions],
                       torch.cat([p.labels for p in parts]), CLASS_NAMES,
                       attributes={name: torch.cat([p.attributes[name] for p in parts]) for name in ATTRIBUTES})
