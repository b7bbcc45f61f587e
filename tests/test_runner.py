"""The runner: DAG scheduling, executors (local, process pool, Ray), resuming after kill -9."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.cache import Cache
from benchmark.cli import main
from benchmark.config import parse_set
from benchmark.data.sources import open_data
from benchmark.executors import ExecutorChoice, LocalExecutor, ProcessExecutor, WorkerSpec, make_executor, stage_threads
from benchmark.cost import estimate_cost
from benchmark.plan import Plan, make_plan
from benchmark.registry import attack_registry, defense_registry
from benchmark.runner import plan_status, run_plan
from benchmark.session import Session
from benchmark.stages import StageExecutor
from benchmark.suite import load_suite

from conftest import TINY_SETS, need

#: even smaller than TINY_SETS: these tests check bookkeeping, not backdoors
QUICK_SETS = TINY_SETS + ["pretrain.epochs=1", "poison_train.epochs=1", "data.fraction=0.03"]


def _setup(tmp_path, attacks, defenses, seeds=(0,)):
    suite = load_suite("embedded", parse_set(QUICK_SETS))
    data = open_data(suite.data, suite.model)
    plan = make_plan(suite, data, attacks, defenses, list(seeds), attack_registry(), defense_registry(), tmp_path / "results")
    stages = StageExecutor(Cache(tmp_path / "cache"), data, attack_registry(), defense_registry(), __import__("torch").device("cpu"))
    spec = WorkerSpec(str(tmp_path / "cache"), suite, "cpu")
    return plan, stages, spec


def _metrics(report):
    return {(r["attack"]["name"], r["defense"]["name"], r["seed"]): r["metrics"] for r in report.results}


def test_plan_shares_pretraining_and_backdoored_models_and_dry_run_lists_it(tmp_path, capsys):
    plan, stages, _ = _setup(tmp_path, ["badnet", "blended"], ["none", "finetune", "cleanclip"])
    kinds = [n.kind for n in plan.nodes.values()]
    assert kinds.count("pretrain") == 1
    assert kinds.count("train") == 2  # one backdoored model per attack, reused by both post-training defenses
    assert kinds.count("defend") == 4
    status = plan_status(plan, stages)
    assert len(status.to_run) == len(plan.nodes) and not status.cached and len(status.todo_cells) == 6
    assert status.width >= 2  # the two poisonings can run side by side
    costs = estimate_cost(plan, status.to_run, tmp_path / "cache", lambda role: len(stages.split(role)))
    assert all(costs.seconds[n.key] for n in status.to_run if n.kind in ("pretrain", "train", "defend"))
    assert 0 < costs.critical_path(plan) < costs.total()
    args = ["run", "--attack", "badnet,blended", "--defense", "none,finetune,cleanclip", "--dry-run",
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    for s in QUICK_SETS:
        args += ["--set", s]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pretrain seed=0" in out and "to run" in out and "estimated" in out and "critical path" in out
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("meta.json"))  # ran nothing


def test_stage_threads_are_fixed_by_the_plan_not_by_timing():
    from benchmark.plan import Node

    pre, ev = Node("a", "pretrain", "p", (), {}), Node("b", "evaluate", "e", (), {})
    assert stage_threads(pre, 2, 2) == 2 and stage_threads(ev, 2, 2) == 1 and stage_threads(ev, 8, 2) == 4


def test_a_local_pool_never_oversubscribes_its_cores(tmp_path, monkeypatch):
    """Pre-training (every core) runs alone; other stages fill the slots two at a time."""
    import benchmark.executors as ex
    from benchmark.executors import LocalExecutor, Outcome
    from benchmark.executors import stage_weight

    assert stage_weight(2, 2, 2) == 2 and stage_weight(1, 2, 2) == 1 and stage_weight(4, 8, 2) == 1
    monkeypatch.setattr(ex, "available_cores", lambda: 2)
    plan, stages, spec = _setup(tmp_path, ["badnet", "blended"], ["none"], seeds=[0, 1])

    class Recording(LocalExecutor):
        slots, shares_cores = 2, True

        def __init__(self, stages):
            super().__init__(stages)
            self.running: list = []
            self.peaks: list[tuple[int, ...]] = []

        def submit(self, task):
            self.running.append(task)
            self.peaks.append(tuple(sorted(t.threads for t in self.running)))
            return task

        def wait(self, handles):
            task = handles[0]
            self.running.remove(task)
            return [(task, Outcome(task.node.key, True, 0.0, worker="fake"))]

    pool = Recording(stages)
    monkeypatch.setattr(stages, "done", lambda node: False)  # nothing computed: only the schedule is tested
    monkeypatch.setattr("benchmark.runner._write", lambda *a, **k: None)
    run_plan(plan, stages, pool, spec)
    assert len(pool.peaks) == len(plan.nodes)
    assert all(sum(p) <= 2 for p in pool.peaks), pool.peaks  # never more threads than cores
    assert (2,) in pool.peaks and (1, 1) in pool.peaks  # pre-training alone, the rest in pairs


@pytest.mark.slow
def test_process_pool_runs_each_stage_once_and_a_rerun_runs_nothing(tmp_path):
    plan, stages, spec = _setup(tmp_path / "a", ["badnet", "blended"], ["none"])
    pool = ProcessExecutor(2)
    report = run_plan(plan, stages, pool, spec)
    assert not report.failed and len(report.results) == 2
    assert sorted(report.ran) == sorted(n.label for n in plan.nodes.values())  # each stage once
    assert all(stages.done(n) for n in plan.nodes.values())
    for r in report.results:
        assert r["status"] == "ok" and r["timings_s"]["pretrain"] > 0
    # a rerun finds every cell finished and runs nothing
    again = run_plan(plan, stages, ProcessExecutor(2), spec)
    assert again.skipped_cells == 2 and not again.ran and _metrics(again) == _metrics(report)


@pytest.mark.slow
def test_ray_executor_runs_a_two_cell_matrix_on_a_local_instance(tmp_path):
    need("ray", importlib.util.find_spec("ray") is not None, "pip install 'clipbench[ray]'")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        plan, stages, spec = _setup(tmp_path, ["badnet", "blended"], ["none"])
        workers = make_executor(ExecutorChoice("ray"), stages, 2, False)
        assert workers.slots == 2
        report = run_plan(plan, stages, workers, spec)
    finally:
        ray.shutdown()
    assert not report.failed, report.failed
    assert len(report.results) == 2 and {r["attack"]["name"] for r in report.results} == {"badnet", "blended"}
    # the DAG held: one pre-training shared by both cells, each stage computed once, all stored
    assert sum(label.startswith("pretrain") for label in report.ran) == 1
    assert len(report.ran) == len(plan.nodes)
    assert all(stages.done(n) for n in plan.nodes.values())
    for r in report.results:
        assert r["status"] == "ok" and 0 <= r["metrics"]["asr"] <= 1
        assert Path(plan.cells[0].result_path).parent.parent.exists()


@pytest.mark.slow
def test_sigkill_mid_matrix_then_rerun_recomputes_only_unfinished_cells(tmp_path):
    env = {**os.environ, "CLIPBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(Path(__file__).parents[1])}
    results = tmp_path / "results"
    args = ["run", "--attack", "badnet", "--defense", "none", "--seeds", "0,1", "--executor", "local",
            "--results-dir", str(results), "--quiet", "--no-leaderboard"]
    for s in QUICK_SETS:
        args += ["--set", s]
    # the --set run's cells live in their variant folder (benchmark.results.variant_name)
    folder = Session.open("embedded", QUICK_SETS, cache_dir=tmp_path / "plan-cache").plan(
        "badnet", "none", [0], results).cells[0].result_path.parents[2]
    first = folder / "badnet/none/seed-0.json"
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.exists(), "the first cell never finished"
        assert proc.poll() is None, "the run finished before it could be killed; the test needs a slower second cell"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    before = first.read_text()
    assert not (folder / "badnet/none/seed-1.json").exists()
    # no half-written file anywhere: results and cache hold only complete entries
    assert not [p for p in tmp_path.rglob("*.tmp")]

    os.environ["CLIPBENCH_CACHE"] = env["CLIPBENCH_CACHE"]
    suite = load_suite("embedded", parse_set(QUICK_SETS))
    data = open_data(suite.data, suite.model)
    plan = make_plan(suite, data, ["badnet"], ["none"], [0, 1], attack_registry(), defense_registry(), results,
                     own=load_suite("embedded"))  # the CLI's --set run: its cells are in their variant folder
    stages = StageExecutor(Cache(tmp_path / "cache"), data, attack_registry(), defense_registry(), __import__("torch").device("cpu"))
    resumed = run_plan(plan, stages)
    assert resumed.skipped_cells == 1 and not resumed.failed
    assert first.read_text() == before  # the finished cell was not recomputed
    assert all("seed=0" not in label for label in resumed.ran), resumed.ran

    # an uninterrupted run from scratch gives the same matrix
    plan2, stages2, _ = _setup(tmp_path / "fresh", ["badnet"], ["none"], seeds=(0, 1))
    clean = run_plan(plan2, stages2)
    assert _metrics(resumed) == _metrics(clean)


def test_seed_aggregate_is_mean_std_and_t_interval():
    import pandas as pd
    from scipy import stats

    from benchmark.results import aggregate_seeds

    frame = pd.DataFrame({"suite": "s", "attack": "a", "defense": "d", "seed": [0, 1, 2, 3], "status": ["ok"] * 3 + ["failed"],
                          "ca": [0.8, 0.9, 0.85, None], "asr": [0.1, 0.3, 0.2, None], "ra": [0.5] * 3 + [None],
                          "der": [0.6, 0.7, 0.8, None]})
    row = aggregate_seeds(frame).iloc[0]
    assert row.n == 3  # the failed seed does not count
    assert abs(row.asr_mean - 0.2) < 1e-12 and abs(row.asr_std - 0.1) < 1e-12
    half = stats.t.ppf(0.975, 2) * 0.1 / 3 ** 0.5
    assert abs(row.asr_ci_low - max(0.0, 0.2 - half)) < 1e-12 and abs(row.asr_ci_high - (0.2 + half)) < 1e-12
    assert row.ra_std == 0 and row.ra_ci_low == row.ra_ci_high == 0.5


def test_result_provenance_names_open_clip_without_importing_it():
    """The parent writes every result's provenance while workers train: importing open_clip
    there (torchvision, timm: ~6 s of CPU) would take that time from the running stages."""
    code = ("import sys; from benchmark.runner import provenance; p = provenance('h', 'k'); "
            "import importlib.metadata as m; "
            "assert p['open_clip'] == m.version('open_clip_torch'), p; "
            "assert 'open_clip' not in sys.modules, 'provenance imported open_clip'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_a_warmed_process_pool_runs_its_stages_and_stops_its_workers(tmp_path):
    plan, stages, spec = _setup(tmp_path, ["badnet"], ["none"])
    pool = ProcessExecutor(2)
    workers: list = []
    close = pool.close

    def recording_close() -> None:
        workers.extend(pool._pool._processes.values())
        close()

    pool.close = recording_close  # type: ignore[method-assign]
    report = run_plan(plan, stages, pool, spec)  # warms both workers, then runs the DAG
    assert not report.failed and len(report.results) == 1
    assert report.results[0]["status"] == "ok"
    assert len(workers) == 2, "the pool should have started both workers"
    assert [w.exitcode for w in workers] == [0, 0], "the workers should have exited cleanly at close()"
