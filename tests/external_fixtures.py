"""Tiny local image-caption fixtures in every external format (generated, nothing downloaded)."""
from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np

CLASSES = ("apple", "banana", "cherry", "grape")
COLORS = ((200, 30, 30), (230, 210, 40), (120, 0, 40), (90, 40, 160))


def make_image(label: int, rng: np.random.Generator, mode: str = "RGB", size: tuple[int, int] = (40, 36)):
    """A class-coloured image with noise; greyscale/alpha/palette variants exercise conversion."""
    from PIL import Image

    w, h = size
    arr = np.clip(np.array(COLORS[label])[None, None, :] + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    return img.convert(mode) if mode != "RGB" else img


def pairs(n: int, seed: int) -> list[tuple[object, str, int]]:
    rng = np.random.default_rng(seed)
    modes = ("RGB", "RGB", "RGB", "RGBA", "L", "P")
    out = []
    for i in range(n):
        y = int(i % len(CLASSES))
        size = (int(rng.integers(32, 48)), int(rng.integers(32, 48)))
        out.append((make_image(y, rng, modes[i % len(modes)], size), f"a photo of a {CLASSES[y]} on a table.", y))
    return out


def write_csv(folder: Path, n: int = 96, seed: int = 0) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (img, caption, _) in enumerate(pairs(n, seed)):
        name = f"images/{i:04d}.png"
        img.save(folder / name)
        rows.append((name, caption))
    path = folder / "pairs.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    return path


def write_hf(folder: Path, n: int = 96, seed: int = 0, classification: bool = False) -> Path:
    import datasets

    data = pairs(n, seed)
    features = {"image": datasets.Image()}
    if classification:
        features["label"] = datasets.ClassLabel(names=list(CLASSES))
        cols = {"image": [d[0] for d in data], "label": [d[2] for d in data]}
    else:
        features["text"] = datasets.Value("string")
        cols = {"image": [d[0].convert("RGB") for d in data], "text": [d[1] for d in data]}
    ds = datasets.Dataset.from_dict(cols, features=datasets.Features(features))
    ds.save_to_disk(str(folder))
    return folder


def write_shards(folder: Path, n: int = 96, seed: int = 0, per_shard: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = pairs(n, seed)
    for s in range(0, n, per_shard):
        with tarfile.open(folder / f"shard-{s // per_shard:03d}.tar", "w") as tar:
            for i in range(s, min(n, s + per_shard)):
                img, caption, y = data[i]
                buf = io.BytesIO()
                img.convert("RGB").save(buf, format="JPEG", quality=95)
                for ext, payload in (("jpg", buf.getvalue()), ("txt", caption.encode()), ("cls", str(y).encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return folder


def write_class_folders(folder: Path, per_class: int = 10, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    for y, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(y, rng, "RGB" if i % 3 else "L", (int(rng.integers(32, 48)), 40)).save(folder / name / f"{i}.png")
    return folder
