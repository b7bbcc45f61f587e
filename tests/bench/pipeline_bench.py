"""Data-pipeline throughput at 224 px: can the loaders feed a GPU? (issue 19)

    python tests/bench/pipeline_bench.py                       # 256 images, target 2,000 img/s
    python tests/bench/pipeline_bench.py --images 512 --target 1200 --json out.json

For each external source format that carries image-caption pairs (CleanCLIP's CSV of
JPEG files, webdataset tar shards, a Hugging Face dataset written by ``save_to_disk``),
the same web-sized JPEGs (``paper_smoke.write_source``: shorter side 200-480 px, aspect
0.6-1.9, quality 90) go through the real path of a training loader in ONE process
(``num_workers=0``): :func:`benchmark.data.external.open_split` with RN50's input
transform (decode, RGB check, resize shorter side to 224 bicubic + centre crop, to
float), BadNet's trigger (``attack.apply`` on the batch: what poisoning costs per
image; training itself reads the stored poisoned images) and ``batch_collate``
(batches of 64).

Throughput is images per **CPU second** of that process (``time.process_time``), so it
is the rate of one loader worker on a core of its own, even on a shared machine (wall
rates are printed too). Workers a GPU needs at ``--target`` images/s: ``ceil(target /
rate)`` (data-loader workers scale linearly with cores until memory bandwidth binds).
The default target, 2,000 img/s, is issue 19's ViT-B-32 bf16 CleanCLIP goal on one
H100/H200-class GPU; RN50's is 1,200 img/s.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (str(ROOT), str(Path(__file__).parent)):
    if p not in sys.path:
        sys.path.insert(0, p)


def write_formats(folder: Path, n: int, seed: int = 0) -> dict[str, Path]:
    """The same JPEG pairs as a CleanCLIP CSV, webdataset shards and a saved HF dataset."""
    import csv

    import paper_smoke

    paths = paper_smoke.write_source(folder / "src", n, 0, seed)
    with open(paths["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    base = paths["csv"].parent
    shards = folder / "shards"
    shards.mkdir()
    per = 128
    for s in range(0, len(rows), per):
        with tarfile.open(shards / f"shard-{s // per:05d}.tar", "w") as tar:
            for i in range(s, min(len(rows), s + per)):
                for ext, payload in (("jpg", (base / rows[i]["image"]).read_bytes()), ("txt", rows[i]["caption"].encode())):
                    info = tarfile.TarInfo(f"{i:08d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    out = {"csv": paths["csv"], "webdataset": shards}
    try:
        import datasets

        ds = datasets.Dataset.from_dict({"image": [str(base / r["image"]) for r in rows], "text": [r["caption"] for r in rows]},
                                        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}))
        ds = ds.map(lambda b: b, batched=True)  # embed the JPEG bytes, as a downloaded dataset holds them
        ds.save_to_disk(str(folder / "hf"))
        out["hf"] = folder / "hf"
    except ImportError:
        print("pipeline bench: the datasets package is not installed; skipping the hf source")
    return out


def open_source(fmt: str, path: Path):
    from benchmark.data.external import SplitSource, open_split
    from benchmark.data.images import make_transform
    from benchmark.models import ModelConfig, input_spec

    spec = input_spec(ModelConfig(arch="RN50"))
    extra = {"caption_column": "text"} if fmt == "hf" else {}
    src = SplitSource(format=fmt, path=str(path), **extra)
    return open_split(src, "train", make_transform(spec), (3, spec["image_size"], spec["image_size"]))


def measure(dataset, batch_size: int = 64, trigger=None) -> dict:
    """Images per CPU second and per wall second of decode + transform (+ trigger) + collate, one process."""
    import torch
    from torch.utils.data import DataLoader

    from benchmark.data.dataset import batch_collate

    torch.set_num_threads(1)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=batch_collate)
    n = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in loader:
        images = batch.images
        if trigger is not None:
            images = trigger.apply(images)
        assert images.shape[-2:] == (224, 224)
        n += len(images)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"images": n, "cpu_s": cpu, "wall_s": wall, "per_cpu_s": n / cpu, "per_wall_s": n / wall}


def badnet():
    from benchmark.registry import attack_registry

    return attack_registry().build("badnet", {"pattern": "noise", "location": "random"}, seed=0, image_shape=(3, 224, 224))


def run(n: int, target: float, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="clipbench-pipeline-") as tmp:
        formats = write_formats(Path(tmp), n, seed)
        trigger = badnet()
        out = {"images": n, "image_size": 224, "target_img_per_s": target, "cpu_count": os.cpu_count(),
               "loadavg": os.getloadavg()[0], "sources": {}}
        for fmt, path in formats.items():
            data = open_source(fmt, path)
            measure(data.subset(list(range(min(64, n)))) if hasattr(data, "subset") else data)  # warm: imports, caches
            plain = measure(data)
            with_trigger = measure(data, trigger=trigger)
            rate = plain["per_cpu_s"]
            out["sources"][fmt] = {"decode_collate": plain, "with_trigger": with_trigger,
                                   "img_per_s_per_worker": rate, "workers_for_target": math.ceil(target / rate)}
    return out


def report(fig: dict) -> None:
    print(f"\ndata pipeline at {fig['image_size']} px, {fig['images']} web-sized JPEGs, one process "
          f"(load average {fig['loadavg']:.1f} on {fig['cpu_count']} cores)")
    print(f"| source | img/s per worker (CPU) | wall img/s | + BadNet trigger (CPU) | workers for {fig['target_img_per_s']:,.0f} img/s |")
    print("|---|---|---|---|---|")
    for fmt, s in fig["sources"].items():
        print(f"| {fmt} | {s['img_per_s_per_worker']:.0f} | {s['decode_collate']['per_wall_s']:.0f} | "
              f"{s['with_trigger']['per_cpu_s']:.0f} | {s['workers_for_target']} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--target", type=float, default=2000.0, help="images/s one GPU consumes (default 2,000)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    fig = run(a.images, a.target)
    report(fig)
    if a.json:
        a.json.write_text(json.dumps(fig, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
