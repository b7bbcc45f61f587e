"""Rebuild the embedded Fashion-MNIST subset shipped with clipbench.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence) is read from its original
idx files, by default from Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``). A class-balanced, seeded subset is drawn
into fixed, disjoint splits and written as one xz-compressed uint8 array plus a JSON
index next to this file::

    python -m benchmark.data.build_embedded [--source DIR] [--out DIR]

Splits (per class, so every split is balanced over the 10 classes):

=========  ======  ============  ====================================================
split      size    from          used for
=========  ======  ============  ====================================================
pretrain   14,000  train set     clean pre-training (shared by every cell)
poison      8,000  train set     the attacker's training set (poisoned pairs mixed in)
defense     4,000  train set     clean fine-tuning set of post-training defenses
val         1,000  train set     choosing defense configurations (never the test set)
test        5,000  test set      CA / ASR / RA
=========  ======  ============  ====================================================
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
from pathlib import Path

import numpy as np

SPLITS_PER_CLASS = {"pretrain": 1400, "poison": 800, "defense": 400, "val": 100}
TEST_PER_CLASS = 500
SEED = 20171025  # Fashion-MNIST's arXiv date; any fixed value works
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT = Path(__file__).parent / "embedded"


def _read_idx(path: Path, offset: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


def _load(source: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(source / f"{kind}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = _read_idx(source / f"{kind}-labels-idx1-ubyte.gz", 8)
    return images, labels


def _balanced_pick(labels: np.ndarray, per_class: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    picks: dict[str, list[np.ndarray]] = {name: [] for name in per_class}
    for cls in range(10):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for name, n in per_class.items():
            picks[name].append(idx[start : start + n])
            start += n
    return {name: rng.permutation(np.concatenate(parts)) for name, parts in picks.items()}


def build(source: Path = DEFAULT_SOURCE, out: Path = DEFAULT_OUT) -> dict:
    """Write ``images.u8.xz`` and ``index.json`` into ``out``; return the index."""
    train_x, train_y = _load(source, "train")
    test_x, test_y = _load(source, "t10k")
    rng = np.random.default_rng(SEED)
    train_picks = _balanced_pick(train_y, SPLITS_PER_CLASS, rng)
    test_picks = _balanced_pick(test_y, {"test": TEST_PER_CLASS}, rng)

    blocks, index = [], {"format": 1, "shape": [28, 28], "seed": SEED, "splits": {}}
    offset = 0
    for name, (src, xs, ys, idx) in {
        **{k: ("train", train_x, train_y, v) for k, v in train_picks.items()},
        "test": ("t10k", test_x, test_y, test_picks["test"]),
    }.items():
        blocks.append(xs[idx])
        index["splits"][name] = {
            "offset": offset,
            "count": int(len(idx)),
            "source": src,
            "source_index": idx.tolist(),
            "labels": ys[idx].tolist(),
        }
        offset += len(idx)
    raw = np.concatenate(blocks).tobytes()
    index["sha256"] = hashlib.sha256(raw).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    (out / "images.u8.xz").write_bytes(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
    (out / "index.json").write_text(json.dumps(index, separators=(",", ":")))
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with the idx .gz files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    index = build(args.source, args.out)
    sizes = {k: v["count"] for k, v in index["splits"].items()}
    print(f"wrote {args.out} with splits {sizes}")


if __name__ == "__main__":
    main()
