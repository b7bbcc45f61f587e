"""Shared fixtures: a tiny suite that trains in seconds, isolated cache/results dirs."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch



def _worker_cores() -> int:
    """Under pytest-xdist (``-n``), worker k of n keeps every n-th core of this process's
    affinity set, so the workers split the machine instead of oversubscribing it: torch,
    clipbench's planner (``available_cores``) and the subprocesses a test starts all see
    the worker's share. Without xdist: the whole machine, at most 2 threads."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and count.isdigit() and hasattr(os, "sched_setaffinity")):
        return min(2, os.cpu_count() or 1)
    cores = sorted(os.sched_getaffinity(0))
    share = cores[int(worker[2:]) % int(count)::int(count)] or cores
    os.sched_setaffinity(0, share)
    return len(share)


torch.set_num_threads(_worker_cores())
# Nothing may download at test time: Hugging Face hub and datasets stay offline (set before they are imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# A run without --results-dir writes to the user's results folder: never the tester's during tests.
os.environ.setdefault("CLIPBENCH_RESULTS", os.path.join(tempfile.mkdtemp(prefix="clipbench-test-results-"), "results"))

#: --set overrides that make a whole cell run in seconds: a micro model, 5% of the data.
TINY_SETS = [
    # the shipped clean CLIP (no pre-training in a run), 8% of the data, 10% poisoned pairs
    "data.fraction=0.08",
    "poison_train.epochs=10", "poison_train.batch_size=64", "poison_train.lr=2e-3", "poison_train.warmup_steps=5",
    "attack_common.poison_rate=0.1", "eval.batch_size=500",
]


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that changes torch's thread count (distributed, contract checks) leaves it as it found it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_sets() -> list[str]:
    return list(TINY_SETS)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("CLIPBENCH_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_suite():
    from benchmark.config import parse_set
    from benchmark.suite import load_suite

    return load_suite("embedded", parse_set(TINY_SETS))


def need(component: str, available: bool, how: str) -> None:
    """Skip a test whose system component is missing, or fail under CI.

    CI sets ``CLIPBENCH_REQUIRE_SYSTEM=1`` after installing every component (see
    ``.ci/run``), which turns such skips into failures: nothing is silently untested.
    """
    if available:
        return
    message = f"{component} is not available ({how})"
    if os.environ.get("CLIPBENCH_REQUIRE_SYSTEM") == "1":
        pytest.fail(message + "; CI requires it", pytrace=False)
    pytest.skip(message)
