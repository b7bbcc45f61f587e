"""The embedded Fashion-MNIST subset shipped inside the package (no download).

Built by :mod:`benchmark.data.build_embedded` from the original idx files; see that
module for the split sizes. Images are stored as one xz-compressed uint8 array.
"""
from __future__ import annotations

import hashlib
import json
import lzma
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .captions import CLASS_NAMES, make_captions
from .dataset import TensorPairs

EMBEDDED_DIR = Path(__file__).parent / "embedded"
SPLITS = ("pretrain", "poison", "defense", "val", "test")


class EmbeddedDataError(RuntimeError):
    """The shipped data files are missing or corrupt."""


@lru_cache(maxsize=1)
def _load_all(directory: str = str(EMBEDDED_DIR)) -> tuple[np.ndarray, dict]:
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
    images = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 1, h, w)
    return images, index


def load_split(split: str, caption_seed: int = 0) -> TensorPairs:
    """One embedded split as a :class:`TensorPairs` with seeded template captions."""
    if split not in SPLITS:
        raise KeyError(f"unknown embedded split {split!r}; choose from {', '.join(SPLITS)}")
    images, index = _load_all()
    info = index["splits"][split]
    block = images[info["offset"] : info["offset"] + info["count"]]
    labels = np.asarray(info["labels"], dtype=np.int64)
    # A split-specific caption stream: the same images always get the same captions.
    seed = caption_seed * 1000 + SPLITS.index(split)
    return TensorPairs(torch.from_numpy(block.copy()), make_captions(labels, seed), torch.from_numpy(labels), CLASS_NAMES)
