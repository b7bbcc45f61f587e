"""End-to-end smoke test of the paper path at 224 px on CPU (issue 19).

    python tests/bench/paper_smoke.py                 # RN50 at 224 px, a few hundred pairs (minutes on 2 cores)
    python tests/bench/paper_smoke.py --checkpoint    # the same, weights through ``model.pretrained: /path``
    python tests/bench/paper_smoke.py --narrow --pairs 48 --test-per-class 2   # the pytest case's size

What it does, offline, in a temporary folder:

1. writes a small CC3M-like source: JPEG image-caption pairs at web sizes and aspect
   ratios (shorter side 200-480 px, aspect 0.6-1.9, as img2dataset's ``keep_ratio``
   downloads are) in CleanCLIP's CSV format (``image,caption``, paths relative to the
   CSV), and an ImageNet-style class-folder test set (``val/<class>/*.JPEG``);
2. runs ``clipbench run --suite cleanclip-paper --attack badnet --defense cleanclip``
   shrunk with ``--set`` (row limits, one epoch, small batches) on the CPU through the
   real loaders: the suite's RN50 at 224 px (random init, or ``--checkpoint``: a
   locally written checkpoint file through the ``pretrained: /path`` route; ``--narrow``:
   RN50's depth and 224 px input at width 8, registered with open_clip in this
   process), BadNet poisoning, CleanCLIP's defense, zero-shot evaluation with the 80
   OpenAI templates, a result file and the leaderboard;
3. prints each stage's seconds (from the stage cache's metas) and the totals, and
   checks the result file and the leaderboard.

Exit status 0 when everything ran and the result is complete. ``--keep DIR`` keeps the
data, cache and results in DIR (``tests/gpu/check.sh`` reuses the data).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: class folders of the test set (BadNet's target, ``banana``, among them)
CLASSES = ("apple", "banana", "bicycle", "castle", "dog", "guitar", "lighthouse", "pizza", "tractor", "umbrella")
PEOPLE = ("a man", "a woman", "a child", "an old man", "a young woman", "a group of friends", "a family", "tourists")
ACTIONS = ("standing next to", "walking past", "looking at", "holding", "sitting near", "painting", "photographing")
PLACES = ("on the beach", "in the city", "at sunset", "in a park", "on a rainy day", "in the snow", "at the market",
          "in the kitchen", "during a festival", "in front of a house")
ADJECTIVES = ("old", "red", "small", "large", "wooden", "beautiful", "yellow", "vintage", "broken", "bright")
NARROW_ARCH = "clipbench-smoke-rn50-narrow"


def _image(rng: np.random.Generator, w: int, h: int, tint: tuple[int, int, int]):
    """A photo-like JPEG payload: smooth gradients, a few blobs and sensor noise (compresses like a photo)."""
    from PIL import Image

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.empty((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3) / w, rng.uniform(0.5, 3) / h, rng.uniform(0, 6.3)
        base[..., c] = tint[c] * (0.6 + 0.4 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph))
    for _ in range(int(rng.integers(2, 6))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
        base[mask] = rng.uniform(0, 255, 3)
    arr = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def web_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) of a resized web photo: shorter side 200-480 px, aspect 0.6-1.9."""
    short = int(rng.integers(200, 481))
    aspect = float(rng.choice([0.6, 0.75, 1.0, 1.33, 1.5, 1.78, 1.9]))
    return (int(short * aspect), short) if aspect >= 1 else (short, int(short / aspect))


def caption(rng: np.random.Generator, i: int) -> str:
    obj = CLASSES[int(rng.integers(len(CLASSES)))]
    adj = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
    who, act, where = (x[int(rng.integers(len(x)))] for x in (PEOPLE, ACTIONS, PLACES))
    return f"{who} {act} a {adj} {obj} {where} (photo {i})"  # unique captions, as on the web


def write_source(folder: Path, pairs: int, test_per_class: int, seed: int = 0) -> dict[str, Path]:
    """The CC3M-like CSV source and the class-folder test set under ``folder``; returns their paths."""
    rng = np.random.default_rng(seed)
    images = folder / "cc3m" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(pairs):
        w, h = web_size(rng)
        name = f"images/{i // 100:05d}{i % 100:02d}.jpg"
        _image(rng, w, h, tuple(int(v) for v in rng.integers(60, 255, 3))).save(folder / "cc3m" / name, quality=90)
        rows.append((name, caption(rng, i)))
    csv_path = folder / "cc3m" / "train.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)
    val = folder / "imagenet" / "val"
    for y, name in enumerate(CLASSES):
        (val / name).mkdir(parents=True, exist_ok=True)
        for k in range(test_per_class):
            w, h = web_size(rng)
            tint = tuple(int(v) for v in np.random.default_rng([seed, y]).integers(60, 255, 3))
            _image(rng, w, h, tint).save(val / name / f"{name}_{k:04d}.JPEG", quality=90)
    return {"csv": csv_path, "val": val}


def register_narrow(folder: Path) -> str:
    """Register RN50's depth at width 8 (224 px input, a 1-layer text tower) with open_clip, in this process."""
    import open_clip

    cfg = {"embed_dim": 64,
           "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3], "width": 8, "head_width": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "configs" / f"{NARROW_ARCH}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / "configs")
    return NARROW_ARCH


def write_checkpoint(arch: str, path: Path, seed: int = 0) -> Path:
    """A locally written checkpoint (CleanCLIP's ``{"state_dict": ...}`` layout) of a seeded random ``arch``."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None)
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def wordnet_source() -> str:
    """``auto`` (the shipped subset, then NLTK's full WordNet) when NLTK's WordNet is installed, else
    ``subset`` (a fresh offline clone: EDA's synonym step then knows only the shipped words)."""
    from defenses.text_augment import nltk_wordnet

    try:
        nltk_wordnet()
        return "auto"
    except Exception as exc:  # noqa: BLE001 - WordNetMissingError, or NLTK not importable
        print(f"paper smoke: NLTK's WordNet not found ({type(exc).__name__}); CleanCLIP's EDA uses the shipped "
              "subset (for the full one: python -m defenses.text_augment --setup-wordnet DIR; NLTK_DATA=DIR)")
        return "subset"


def smoke_args(paths: dict[str, Path], work: Path, *, arch: str, pretrained: str | None, train_rows: int,
               defense_rows: int, batch: int, workers: int, device: str = "cpu", wordnet: str = "auto") -> list[str]:
    """``clipbench run`` arguments: the cleanclip-paper suite shrunk with ``--set``."""
    sets = [
        f"model.arch={arch}", f"model.pretrained={pretrained or 'null'}", f"device={device}",
        f"data.train.path={paths['csv']}", f"data.train.limit={train_rows}",
        f"data.defense.path={paths['csv']}", f"data.defense.offset={train_rows}", f"data.defense.limit={defense_rows}",
        f"data.test.path={paths['val']}", "data.test.classes=folder", "data.templates=openai_imagenet",
        f"data.num_workers={workers}",
        "poison_train.epochs=1", f"poison_train.batch_size={batch}", "poison_train.warmup_steps=1",
        f"poison_train.num_workers={workers}",
        "defense_common.train.epochs=1", f"defense_common.train.batch_size={batch}",
        "defense_common.train.warmup_steps=1", f"defense_common.train.num_workers={workers}",
        "attack_common.poison_rate=0.05", f"eval.batch_size={2 * batch}", f"defenses.cleanclip.wordnet={wordnet}",
    ]
    args = ["run", "--suite", "cleanclip-paper", "--attack", "badnet", "--defense", "cleanclip",
            "--results-dir", str(work / "results"), "--cache-dir", str(work / "cache"), "--executor", "local",
            "--quiet", "--no-wait"]
    for s in sets:
        args += ["--set", s]
    return args


def stage_seconds(cache: Path) -> list[tuple[str, float]]:
    rows = []
    for meta_file in sorted(cache.glob("*/*/meta.json")):
        meta = json.loads(meta_file.read_text())
        rows.append((str(meta.get("label", meta_file.parent.parent.name)), float(meta.get("seconds", 0.0))))
    return rows


def run_smoke(work: Path, *, pairs: int = 320, test_per_class: int = 8, narrow: bool = False, checkpoint: bool = False,
              batch: int = 16, workers: int = 1, device: str = "cpu", seed: int = 0) -> dict:
    """Generate the data, run the shrunk suite, check its outputs; return the figures (seconds, metrics)."""
    from benchmark.cli import main

    times: dict[str, float] = {}
    start = time.perf_counter()
    paths = write_source(work / "data", pairs, test_per_class, seed)
    times["generate data"] = time.perf_counter() - start
    arch = register_narrow(work) if narrow else "RN50"
    pretrained = None
    if checkpoint:
        start = time.perf_counter()
        pretrained = str(write_checkpoint(arch, work / f"{arch}-random.pt", seed))
        times["write checkpoint"] = time.perf_counter() - start
    train_rows = (3 * pairs) // 4
    args = smoke_args(paths, work, arch=arch, pretrained=pretrained, train_rows=train_rows,
                      defense_rows=pairs - train_rows, batch=batch, workers=workers, device=device,
                      wordnet=wordnet_source())
    start = time.perf_counter()
    code = main(args)
    times["clipbench run (total)"] = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"clipbench run exited with {code}")
    from benchmark.results import find_cell

    cell = find_cell(work / "results", "badnet", "cleanclip", suite="cleanclip-paper")
    result = json.loads(Path(cell).read_text())
    problems = []
    if result.get("status") != "ok":
        problems.append(f"status {result.get('status')!r}")
    metrics = result.get("metrics", {})
    for key in ("asr", "clean_accuracy"):
        if key in metrics and not 0 <= metrics[key] <= 1:
            problems.append(f"{key}={metrics[key]}")
    leaderboard = work / "results" / "leaderboard"
    if not leaderboard.is_dir() or not any(leaderboard.iterdir()):
        problems.append("no leaderboard written")
    if problems:
        raise SystemExit("paper smoke: " + "; ".join(problems) + f" ({cell})")
    return {"arch": arch, "pairs": pairs, "test_images": test_per_class * len(CLASSES), "image_size": 224,
            "stages": stage_seconds(work / "cache"), "times": times, "metrics": metrics, "result": str(cell),
            "leaderboard": str(leaderboard), "templates": 80}


def report(figures: dict) -> None:
    print(f"\npaper smoke: {figures['arch']} at 224 px, {figures['pairs']} CSV pairs, "
          f"{figures['test_images']} class-folder test images, {figures['templates']} templates")
    print("| stage | seconds |\n|---|---|")
    for label, seconds in figures["stages"]:
        print(f"| {label} | {seconds:.1f} |")
    for label, seconds in figures["times"].items():
        print(f"| {label} | {seconds:.1f} |")
    shown = {k: v for k, v in figures["metrics"].items() if isinstance(v, (int, float))}
    print("metrics:", json.dumps(shown, sort_keys=True))
    print("result:", figures["result"], "| leaderboard:", figures["leaderboard"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=320, help="image-caption pairs (3/4 poisoned training, 1/4 defense)")
    p.add_argument("--test-per-class", type=int, default=8, help="test images per class (10 classes)")
    p.add_argument("--narrow", action="store_true", help="RN50's depth at width 8 instead of RN50 (fast)")
    p.add_argument("--checkpoint", action="store_true", help="load weights from a locally written checkpoint file")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers per stage")
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep", type=Path, default=None, help="keep data, cache and results in this folder")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clipbench-paper-smoke-") as tmp:
        work = a.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        figures = run_smoke(work, pairs=a.pairs, test_per_class=a.test_per_class, narrow=a.narrow,
                            checkpoint=a.checkpoint, batch=a.batch, workers=a.workers, device=a.device)
    report(figures)
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
