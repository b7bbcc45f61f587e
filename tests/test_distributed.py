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


# Every registered defense's objective, a few steps each (2 epochs of 4 global batches: RoCLIP's
# second epoch is a matching epoch; TA-Cleaner re-draws its subset each epoch).
DEFENSE_CFG = TrainConfig(epochs=2, batch_size=32, lr=2e-3, warmup_steps=2)
DEFENSE_OVERRIDES = {"roclip": {"match_every": 2}}


def _objective_defenses() -> list[str]:
    from benchmark import DefenseStage
    from benchmark.registry import defense_registry

    reg = defense_registry()
    return [n for n in reg.names() if reg.get(n).stage != DefenseStage.NONE]


def _train_defense(name: str):
    from benchmark import DefenseContext
    from benchmark.registry import defense_registry

    data = _data()
    defense = defense_registry().build(name, DEFENSE_OVERRIDES.get(name), seed=5)
    objective = defense.objective(DefenseContext(class_names=(), seed=5, clean_data=data, train_data=data))
    model = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0).double()
    stats = train(model, data, objective, DEFENSE_CFG, seed=3)
    return model, stats


def _defense_worker(rank: int, world: int, port: int, out: str, names: list[str]) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = {}
        for name in names:
            model, stats = _train_defense(name)
            results[name] = {"loss": stats.step_losses, "parts": stats.parts,
                             "state": {k: v for k, v in model.state_dict().items() if v.is_floating_point()}}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_defense_objective_on_two_gloo_processes_matches_one_process(tmp_path):
    """Each defense's objective (gathered features, per-sample augmentations drawn for the global
    batch, TA-Cleaner's rows of its own rank, RoCLIP's pool fed the global batch) gives the
    single-process loss at every step and the same weights."""
    names = _objective_defenses()
    assert {"finetune", "finetune_aug", "cleanclip", "ta_cleaner", "roclip"} <= set(names)
    out = str(tmp_path / "ddp.pt")
    mp.start_processes(_defense_worker, args=(2, _free_port(), out, names), nprocs=2, start_method="spawn", join=True)
    ddp = torch.load(out)
    torch.set_num_threads(1)
    for name in names:
        model, single = _train_defense(name)
        assert single.steps == 8, name
        # the mechanism was exercised, so the comparison covers it
        if name == "ta_cleaner":
            assert all(v and v > 0 for v in single.parts["ta_selected"]), single.parts
        if name == "roclip":
            assert single.parts["match"][1] is not None, single.parts
        torch.testing.assert_close(torch.tensor(ddp[name]["loss"]), torch.tensor(single.step_losses), rtol=1e-7, atol=0,
                                   msg=lambda m, n=name: f"{n}: {m}")
        assert ddp[name]["parts"].keys() == single.parts.keys(), name
        for part, values in single.parts.items():
            got = ddp[name]["parts"][part]
            assert [v is None for v in got] == [v is None for v in values], (name, part)
            torch.testing.assert_close(torch.tensor([v for v in got if v is not None], dtype=torch.float64),
                                       torch.tensor([v for v in values if v is not None], dtype=torch.float64),
                                       rtol=1e-6, atol=1e-9, msg=lambda m, n=name, p=part: f"{n}.{p}: {m}")
        state = model.state_dict()
        for key, value in ddp[name]["state"].items():
            diff = float((value - state[key]).abs().max())
            assert diff <= 1e-5 * float(state[key].abs().max()) + 1e-9, (name, key, diff)


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
