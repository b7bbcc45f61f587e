"""Data-parallel training (gloo, 2 CPU processes) follows the single-process trajectory."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from benchmark.config import parse_set
from benchmark.data.sources import open_data
from benchmark.losses import ClipObjective
from benchmark.models import ModelConfig, create_model
from benchmark.suite import load_suite
from benchmark.train import TrainConfig, train

CFG = TrainConfig(epochs=3, batch_size=32, lr=2e-3, warmup_steps=2)


def _data():
    suite = load_suite("embedded", parse_set(["data.fraction=0.01"]))
    return open_data(suite.data).split("pretrain")  # 140 pairs: 4 global batches of 32 per epoch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0).double()
        stats = train(model, _data(), ClipObjective(), CFG, seed=3)
        if rank == 0:
            torch.save({"loss": stats.step_losses, "state": model.state_dict(), "steps": stats.steps}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.start_processes(_worker, args=(2, _free_port(), out), nprocs=2, start_method="spawn", join=True)
    ddp = torch.load(out)

    torch.set_num_threads(1)
    model = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0).double()
    single = train(model, _data(), ClipObjective(), CFG, seed=3)

    assert ddp["steps"] == single.steps == 12
    ref = torch.tensor(single.step_losses)
    assert ref[0] - ref[-1] > 0.3  # it learned: the comparison is not between two flat lines
    # In float64 (so that rounding cannot hide a difference; in float32 Adam amplifies rounding
    # noise of the stem's ill-conditioned gradients to ~1% after a few steps) every step's loss
    # agrees. A per-rank loss (no feature gather: 16 instead of 32 negatives), per-rank batch-norm
    # statistics or another batch order would be off by far more than this tolerance.
    torch.testing.assert_close(torch.tensor(ddp["loss"]), ref, rtol=1e-7, atol=0)
    state = model.state_dict()
    assert any(n.endswith("running_mean") for n in state)
    # Batch norm tracked the global statistics. Rank 0's statistics from its own 16 samples would
    # differ by ~10% of the values; 12 Adam steps amplify float64 rounding to ~1e-6 relative
    # in the deepest layers (measured 1.7e-6), hence 1e-5.
    for name, value in ddp["state"].items():
        if name.endswith(("running_mean", "running_var")):
            diff = float((value - state[name]).abs().max())
            assert diff <= 1e-5 * float(state[name].abs().max()) + 1e-9, (name, diff, float(state[name].abs().max()))


@pytest.mark.slow
def test_torchrun_cli_run_writes_one_result_from_rank_0(tmp_path):
    """``torchrun --nproc_per_node=2 -m benchmark.cli run``: stages in step, rank 0 writes."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import TINY_SETS

    root = Path(__file__).parents[1]
    env = {**os.environ, "CLIPBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    args = ["run", "--attack", "badnet", "--defense", "none", "--results-dir", str(tmp_path / "results"),
            "--quiet", "--no-leaderboard"]
    for s in TINY_SETS + ["pretrain.epochs=1", "poison_train.epochs=1", "data.fraction=0.03"]:
        args += ["--set", s]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "benchmark.cli", *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from benchmark.results import find_cell

    result = json.loads(find_cell(tmp_path / "results", "badnet", "none").read_text())
    assert result["status"] == "ok" and 0 <= result["metrics"]["asr"] <= 1
    assert proc.stdout.count("1 cell(s)") == 1  # only rank 0 reports
    metas = list((tmp_path / "cache").glob("*/*/meta.json"))
    assert len(metas) == 5  # pretrain, poison, train, two evaluations: each stored once
