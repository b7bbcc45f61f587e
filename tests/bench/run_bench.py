"""clipbench performance harness (not part of the default test run).

    python tests/bench/run_bench.py                      # everything, embedded default
    python tests/bench/run_bench.py --only throughput    # trainer vs bare loop only
    python tests/bench/run_bench.py --attack badnet --defense none --set pretrain.epochs=2   # a quick look

Measures, in one run, and prints a Markdown table:

- **cold** matrix time: ``clipbench run --attack A --defense D`` with an empty stage cache
  and an empty results directory (pre-training included), as a subprocess;
- **warm** rerun of the same command (every cell finished: served from the result files);
- **per-stage** seconds, read from the cache metas the cold run wrote;
- **trainer throughput** (samples/s of :func:`benchmark.train.train` with the CLIP loss)
  versus a bare torch loop (``encode_image`` / ``encode_text`` / loss / AdamW step) over
  pre-made tensors, on the same model, batch size and thread count; the ratio is the
  engine's overhead (target >= 0.9);
- **machine speed**: the median 1-thread bare training step at batch 128, so that wall
  times measured on different machines can be compared;
- **peak RSS** of the largest process (the run, or one of its worker processes; target <= 3 GB).

Times are printed in seconds and in **machine-speed units**: wall milliseconds divided by
the index's milliseconds. The index is a fixed reference workload (the
``clipbench-tiny-rn`` step on seeded inputs), not the embedded model, so units stay
comparable when the embedded model or data change; our 2-core machines differ about 2x in
seconds, much less in units. Targets (2 cores, embedded default, cold = empty cache):
``--attack badnet --defense none`` <= 600 units, ``--attack all --defense cleanclip``
<= 1,400 units, ``--attack all --defense all`` <= 4,500 units, warm rerun <= 10 s, peak
RSS <= 3 GB. Wall times depend on what else loads the machine: the table records
``os.getloadavg()`` before and after; measure on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: cold-run targets in machine-speed units (wall ms / index ms), embedded default, 2 cores
TARGET_UNITS = {("badnet", "none"): 600, ("all", "cleanclip"): 1400, ("all", "all"): 4500}


def _run_cli(args: list[str], cache: Path, results: Path) -> tuple[float, int, str]:
    env = {**os.environ, "CLIPBENCH_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "benchmark.cli", "run", *args, "--results-dir", str(results), "--quiet",
           "--no-leaderboard"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    return seconds, proc.returncode, proc.stdout


def stage_times(cache: Path) -> list[tuple[str, float]]:
    rows = []
    for meta_file in sorted(cache.glob("*/*/meta.json")):
        meta = json.loads(meta_file.read_text())
        rows.append((meta["label"], float(meta["seconds"])))
    return sorted(rows, key=lambda r: -r[1])


def throughput(steps: int = 30, batch_size: int = 256, arch: str = "clipbench-tiny-rn") -> dict[str, float]:
    """Samples/s of the trainer and of a bare loop, same model/batch/threads (interleaved, best of 2)."""
    import torch

    from benchmark.data.embedded import load_split
    from benchmark.losses import ClipObjective, clip_loss
    from benchmark.models import ModelConfig, create_model
    from benchmark.train import TrainConfig, make_optimizer, train

    data = load_split("pretrain").subset(range(steps * batch_size))
    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=2e-3, warmup_steps=5)

    def trainer() -> float:
        model = create_model(ModelConfig(arch=arch), seed=0)
        start = time.perf_counter()
        train(model, data, ClipObjective(), cfg, seed=0)
        return steps * batch_size / (time.perf_counter() - start)

    def bare() -> float:
        model = create_model(ModelConfig(arch=arch), seed=0).train()
        images = [data.images[i * batch_size:(i + 1) * batch_size].float().div(255) for i in range(steps)]
        tokens = [model.tokenize(data.captions[i * batch_size:(i + 1) * batch_size]) for i in range(steps)]
        opt = make_optimizer(model, cfg, torch.device("cpu"))
        start = time.perf_counter()
        for x, t in zip(images, tokens):
            img, txt = model.encode_image(x), model.encode_text(t)
            loss = clip_loss(img, txt, model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return steps * batch_size / (time.perf_counter() - start)

    t, b = [], []
    for _ in range(2):
        b.append(bare())
        t.append(trainer())
    return {"trainer": max(t), "bare": max(b), "ratio": max(t) / max(b), "threads": torch.get_num_threads()}


def machine_speed(steps: int = 20, batch_size: int = 128, arch: str = "clipbench-tiny-rn") -> float:
    """Milliseconds per bare training step on one thread (batch 128, the poisoned-training
    batch): a speed index of this machine, so that wall times from different machines can be
    compared (the same code ran 1.3x slower on one 2-core VM than on another)."""
    import torch

    from benchmark.losses import clip_loss
    from benchmark.models import ModelConfig, create_model
    from benchmark.train import TrainConfig, make_optimizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # A fixed reference workload, independent of the embedded data (which changes between
        # worlds): seeded RGB 32x32 images and captions that fill the tiny text tower's 16
        # tokens. Compute does not depend on pixel values, so the index stays comparable.
        model = create_model(ModelConfig(arch=arch), seed=0).train()
        gen = torch.Generator().manual_seed(0)
        images = [torch.randint(0, 256, (batch_size, 3, 32, 32), generator=gen).float().div(255) for _ in range(steps)]
        caption = "a photo of a small red sneaker on a striped background at the top left"
        tokens = [model.tokenize([caption] * batch_size) for _ in range(steps)]
        opt = make_optimizer(model, TrainConfig(epochs=1, batch_size=batch_size, lr=2e-3), torch.device("cpu"))
        times = []
        for x, t in zip(images, tokens):
            start = time.perf_counter()
            loss = clip_loss(model.encode_image(x), model.encode_text(t), model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        times = sorted(times[3:])  # skip warm-up; median
        return 1000 * times[len(times) // 2]
    finally:
        torch.set_num_threads(threads)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attack", default="all")
    p.add_argument("--defense", default="cleanclip")
    p.add_argument("--set", dest="sets", action="append", default=[], help="passed to clipbench run")
    p.add_argument("--executor", default="auto")
    p.add_argument("--only", choices=["throughput", "matrix"], default=None)
    p.add_argument("--keep", type=Path, default=None, help="keep the cache/results in this folder")
    args = p.parse_args()
    index = machine_speed()

    def units(seconds: float) -> str:
        """Seconds and machine-speed units (wall ms / index ms): comparable across machines."""
        return f"{seconds:.1f} s = {1000 * seconds / index:.0f} units"

    rows: list[tuple[str, str]] = [("load average before", " ".join(f"{x:.2f}" for x in os.getloadavg())),
                                   ("cores", str(len(os.sched_getaffinity(0)))),
                                   ("machine-speed index: bare 1-thread clipbench-tiny-rn training step, batch 128 "
                                    "(median)", f"{index:.0f} ms")]
    if args.only in (None, "throughput"):
        tp = throughput()
        rows += [("trainer samples/s", f"{tp['trainer']:.0f}"), ("bare-loop samples/s", f"{tp['bare']:.0f}"),
                 ("trainer / bare loop", f"{tp['ratio']:.2f}  (target >= 0.9; {tp['threads']} threads)")]
    stages: list[tuple[str, float]] = []
    if args.only in (None, "matrix"):
        work = args.keep or Path(tempfile.mkdtemp(prefix="clipbench-bench-"))
        cache, results = work / "cache", work / "results"
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(results, ignore_errors=True)
        cli = ["--attack", args.attack, "--defense", args.defense, "--executor", args.executor]
        for s in args.sets:
            cli += ["--set", s]
        cold, rc1, out = _run_cli(cli, cache, results)
        warm, rc2, _ = _run_cli(cli, cache, results)
        rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
        stages = stage_times(cache)
        target = TARGET_UNITS.get((args.attack, args.defense))
        rows += [(f"cold `run --attack {args.attack} --defense {args.defense}`",
                  f"{units(cold)} (exit {rc1})" + (f"; target <= {target} units" if target else "")),
                 ("warm rerun", f"{units(warm)} (exit {rc2}); target <= 10 s"),
                 ("sum of stage seconds (serial work)", units(sum(s for _, s in stages))),
                 ("parallel speed-up (serial work / cold wall)", f"{sum(s for _, s in stages) / cold:.2f}x"),
                 ("peak RSS, largest process", f"{rss_gb:.2f} GB (target <= 3 GB)")]
        print(out)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    rows.append(("load average after", " ".join(f"{x:.2f}" for x in os.getloadavg())))
    print("| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if stages:
        print("\n| stage | seconds |\n|---|---|")
        for label, s in stages:
            print(f"| {label} | {units(s)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
