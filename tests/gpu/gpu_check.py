"""The Python entry points of tests/gpu/check.sh (issue 19); each prints and writes one JSON.

    python tests/gpu/gpu_check.py device OUT.json
    python tests/gpu/gpu_check.py train OUT.json --arch RN50 --data memory|loader [--batch 256 --steps 30]
    torchrun --nproc_per_node=N tests/gpu/gpu_check.py train OUT.json --arch RN50 --data memory   # DDP (NCCL on CUDA)
    python tests/gpu/gpu_check.py merge OUT.json PART.json ...

``train`` fine-tunes with CleanCLIP's objective (``defenses.cleanclip``, the paper's
lambdas; AutoAugment and EDA included) through :func:`benchmark.train.train`, bf16
autocast on CUDA, on ``memory`` (seeded synthetic uint8 images, 224 px, in a
TensorPairs) or ``loader`` (``paper_smoke``'s web-sized JPEG CSV through the real
external loader: decode + resize/crop in ``--workers`` DataLoader workers). A short
warm-up run (cuDNN autotuning, allocator) precedes the measured one; images/s is the
measured run's global samples per second, peak memory ``torch.cuda.max_memory_allocated``
of the measured run. ``--cpu-dry`` shapes (tiny steps on the CPU) are chosen by check.sh.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (str(ROOT), str(ROOT / "tests" / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

#: captions of the synthetic set: unique, CC3M-like
WORDS = ("a man", "a dog", "the city", "a red car", "a beach", "an old house", "a child", "the mountains")


def device_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info.update(cuda=torch.version.cuda, gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                    gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
                    bf16=torch.cuda.is_bf16_supported(), nccl=torch.distributed.is_nccl_available())
    return info


def synthetic(n: int, size: int, seed: int = 0):
    import torch

    from benchmark import TensorPairs

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    captions = [f"{WORDS[i % len(WORDS)]} next to {WORDS[(i // 8) % len(WORDS)]}, picture {i}" for i in range(n)]
    return TensorPairs(images, captions, torch.zeros(n, dtype=torch.long))


def loader_data(n: int, folder: Path):
    import paper_smoke

    from benchmark.data.external import SplitSource, open_split
    from benchmark.data.images import make_transform
    from benchmark.models import ModelConfig, input_spec

    csv = folder / "cc3m" / "train.csv"
    if not csv.exists():
        paper_smoke.write_source(folder, n, 0)
    spec = input_spec(ModelConfig(arch="RN50"))
    return open_split(SplitSource(format="csv", path=str(csv), limit=n), "train", make_transform(spec),
                      (3, spec["image_size"], spec["image_size"]))


def train_check(a) -> dict:
    import torch

    from benchmark import DefenseContext, train
    from benchmark.distributed import init_from_env
    from benchmark.models import ModelConfig, create_model
    from benchmark.registry import defense_registry
    from benchmark.train import TrainConfig

    dist = init_from_env(a.device)
    device = dist.device if dist is not None else torch.device(a.device)
    world = dist.world_size if dist is not None else 1
    if a.arch == "narrow":  # RN50's depth at width 8 (the CPU dry run)
        import paper_smoke

        arch = paper_smoke.register_narrow(Path(a.work))
    else:
        arch = a.arch
    per_step = a.batch * world
    n = per_step * (a.steps + a.warmup)
    data = synthetic(n, 224) if a.data == "memory" else loader_data(n, Path(a.work) / "smoke-data")
    defense = defense_registry().build("cleanclip", {"wordnet": a.wordnet}, seed=0)
    objective = defense.objective(DefenseContext(class_names=(), seed=0, clean_data=None))
    model = create_model(ModelConfig(arch=arch), seed=0)
    precision = "bf16" if device.type == "cuda" else "fp32"
    common = dict(batch_size=per_step, lr=1e-5, warmup_steps=1, precision=precision, num_workers=a.workers)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    warm = train(model, data.subset(list(range(per_step * a.warmup))) if hasattr(data, "subset") else data, objective,
                 TrainConfig(epochs=1, **common), seed=0, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    stats = train(model, data.subset(list(range(per_step * a.warmup, n))) if hasattr(data, "subset") else data,
                  objective, TrainConfig(epochs=1, **common), seed=1, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    out = {"arch": a.arch, "data": a.data, "objective": "cleanclip", "precision": precision, "image_size": 224,
           "device": str(device), "world_size": world,
           "backend": (torch.distributed.get_backend() if dist is not None else None),
           "global_batch": per_step, "steps": stats.steps, "warmup_steps": warm.steps, "workers": a.workers,
           "images_per_s": stats.steps * per_step / wall, "trainer_samples_per_s": stats.samples_per_s,
           "seconds": wall, "final_loss": stats.step_losses[-1] if stats.step_losses else None,
           "peak_gpu_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)}
    if dist is None or dist.is_main:
        print(json.dumps(out))
        Path(a.out).write_text(json.dumps(out, indent=1))
    if dist is not None:
        torch.distributed.destroy_process_group()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("device")
    d.add_argument("out")
    t = sub.add_parser("train")
    t.add_argument("out")
    t.add_argument("--arch", default="RN50", help="RN50, ViT-B-32, any open_clip name, or narrow (CPU dry run)")
    t.add_argument("--data", choices=["memory", "loader"], default="memory")
    t.add_argument("--batch", type=int, default=256, help="per process")
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--workers", type=int, default=0)
    t.add_argument("--device", default="cuda")
    t.add_argument("--wordnet", default="auto", help="CleanCLIP's EDA WordNet: auto, subset or full")
    t.add_argument("--work", default=os.environ.get("TMPDIR", "/tmp"))
    m = sub.add_parser("merge")
    m.add_argument("out")
    m.add_argument("parts", nargs="*")
    a = p.parse_args(argv)
    if a.cmd == "device":
        info = device_info()
        print(json.dumps(info))
        Path(a.out).write_text(json.dumps(info, indent=1))
    elif a.cmd == "train":
        train_check(a)
    else:
        merged = {}
        for part in a.parts:
            path = Path(part)
            merged[path.stem] = json.loads(path.read_text()) if path.exists() else {"missing": True}
        Path(a.out).write_text(json.dumps(merged, indent=1))
        print(json.dumps(merged, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
