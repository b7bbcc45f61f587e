"""Reliability and security (issue 8): config errors, isolation of a raising plugin, NaN
losses, corrupt / malicious / truncated files, the results-directory lock, SIGINT and
SIGKILL followed by a resume."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from benchmark.cache import Cache
from benchmark.cli import EXIT_LOCKED, main
from benchmark.lock import LockedError, ResultsLock
from benchmark.results import find_cell
from conftest import TINY_SETS

FAST_SETS = TINY_SETS + ["data.fraction=0.04", "pretrain.epochs=1", "poison_train.epochs=1"]
ROOT = Path(__file__).resolve().parents[1]


def _sets(extra=()) -> list[str]:
    out: list[str] = []
    for s in [*FAST_SETS, *extra]:
        out += ["--set", s]
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One stage cache for the module: the micro model is pre-trained once."""
    return tmp_path_factory.mktemp("reliability-cache")


@pytest.fixture(scope="module")
def base_run(cache, tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished badnet/none cell (results dir, CLI args)."""
    results = tmp_path_factory.mktemp("base-results")
    args = ["run", "--attack", "badnet", "--defense", "none", "--results-dir", str(results),
            "--cache-dir", str(cache), "--quiet", *_sets()]
    assert main(args) == 0
    return results, args


def _entries(cache: Path, kind: str) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (cache / kind).glob("*/meta.json")}


def _assert_cache_intact(cache: Path) -> None:
    """Every entry a run left behind verifies against its recorded hashes."""
    store = Cache(cache)
    for meta_file in cache.glob("*/*/meta.json"):
        meta = json.loads(meta_file.read_text())
        assert store.meta(meta["kind"], meta["key"]) is not None, meta_file


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("argv, needle", [
    (["--seed", "1", "--seeds", "0,1"], "contradict"),
    (["--set", "attacks.badnett.patch_size=3"], "did you mean 'badnet'"),
    (["--set", "attacks.badnet.patch_size=40"], "does not fit a 32x32 image"),
    (["--set", "attacks.badnet.pattern=zigzag"], "choose one of 'checkerboard'"),
    (["--set", "attacks.badnet.colour=red"], "unknown key 'attacks.badnet.colour'"),
    (["--set", "attack_common.poison_rate=0"], "strictly between 0 and 1"),
    (["--set", "attack_common.target=zebra"], "not a class of this suite's data"),
    (["--set", "pretrain.batch_size=1"], "batch of at least 2"),
    (["--set", "data.fraction=1.5"], "data.fraction"),
    (["--set", "pretrain.lr=fast"], "expected a number"),
    (["--set", "defenses.none=3"], "defenses.none"),
    (["--plugin", "no/such/plugin.py"], "no such file"),
])
def test_bad_config_is_one_line_exit_2(argv, needle, tmp_path, capsys):
    rc = main(["run", "--attack", "badnet", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
               *_sets(), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "c").exists()  # rejected before any work


# ------------------------------------------------------------ isolation + NaN
FAILING_PLUGINS = """
    import torch
    from benchmark import ClipObjective, Defense, LossOutput, Stage

    class Exploding(Defense):
        name = "exploding"
        stage = Stage.POST_TRAINING

        def defend(self, model, ctx):
            raise RuntimeError("boom from a plugin")


    class NanObjective(ClipObjective):
        def __call__(self, model, batch, ctx):
            out = super().__call__(model, batch, ctx)
            if ctx.step == 2:  # inject a NaN into the loss at step 2
                return LossOutput(out.loss * torch.tensor(float("nan")))
            return out


    class NanLoss(Defense):
        name = "nan_loss"
        stage = Stage.TRAINING

        def objective(self, ctx):
            return NanObjective()
"""


def test_a_raising_plugin_and_a_nan_loss_fail_their_cells_only(base_run, cache, tmp_path, capsys):
    plugin = tmp_path / "failing.py"
    plugin.write_text(textwrap.dedent(FAILING_PLUGINS))
    results = tmp_path / "results"
    rc = main(["run", "--attack", "badnet", "--defense", "exploding,none,nan_loss", "--plugin", str(plugin),
               "--results-dir", str(results), "--cache-dir", str(cache), "--quiet",
               *_sets(["poison_train.epochs=2"])])  # >= 3 steps, so step 2 exists
    out = capsys.readouterr().out
    assert rc == 1  # non-zero: some cells failed
    ok = json.loads(find_cell(results, "badnet", "none").read_text())
    assert ok["status"] == "ok" and ok["metrics"]["clean_accuracy"] > 0.3  # the rest of the matrix ran (chance: 0.1)

    boom = json.loads(find_cell(results, "badnet", "exploding").read_text())
    assert boom["status"] == "failed" and boom["defense"]["source"].startswith("local ")
    assert boom["error"]["type"] == "RuntimeError" and boom["error"]["message"] == "boom from a plugin"
    tb = boom["error"]["traceback"]
    assert "Traceback" in tb and str(plugin) in tb and 'raise RuntimeError("boom from a plugin")' in tb

    nan = json.loads(find_cell(results, "badnet", "nan_loss").read_text())
    assert nan["status"] == "failed" and nan["error"]["type"] == "NonFiniteLossError"
    msg = nan["error"]["message"]
    assert "non-finite loss" in msg and "train badnet with nan_loss seed=0" in msg and "step 2" in msg, msg
    # The summary lists exactly the failed cells.
    assert "failed cells" in out and "badnet/exploding seed=0" in out and "badnet/nan_loss seed=0" in out
    assert "badnet/none seed=0" not in out.split("failed cells")[1]
    # No model trained on a NaN loss was stored.
    assert not [m for m in _entries(cache, "model").values() if "nan_loss" in m["label"]]


# ------------------------------------------------------------------- files
class _Payload:
    """A pickle that runs code when loaded (what a malicious checkpoint carries)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_pickle(path: Path, marker: Path) -> None:
    torch.save({"visual.weight": _Payload(marker)}, path)
    # The payload is real: unpickling without protection would run it.
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()


def test_a_malicious_pickle_checkpoint_never_executes(base_run, cache, tmp_path):
    from benchmark.models import ModelConfig, ModelLoadError, create_model

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    _malicious_pickle(evil, marker)
    # 1. As a user-supplied checkpoint (model.pretrained): torch.load(weights_only=True) refuses it.
    with pytest.raises(ModelLoadError, match="holds pickled code.*refused without running it"):
        create_model(ModelConfig(arch="clipbench-micro-rn", pretrained=str(evil)))
    assert not marker.exists()
    # 2. Planted in the stage cache with matching hashes: checkpoints are safetensors, so
    #    the pickle is rejected as a malformed file, never unpickled.
    store = Cache(cache)
    meta = next(m for m in _entries(cache, "model").values() if m["label"].startswith("pretrain"))
    target = store.path("model", meta["key"]) / "model.safetensors"
    planted = tmp_path / "planted-cache"
    shutil.copytree(cache, planted)
    target = planted / target.relative_to(cache)
    target.write_bytes(evil.read_bytes())
    meta_file = target.parent / "meta.json"
    m = json.loads(meta_file.read_text())

    m["files"]["model.safetensors"] = hashlib.sha256(target.read_bytes()).hexdigest()
    meta_file.write_text(json.dumps(m))
    assert Cache(planted).meta("model", meta["key"]) is not None  # the hashes match: only the format protects
    with pytest.raises(Exception) as err:
        Cache(planted).tensors("model", meta["key"], "model.safetensors")
    assert "Safetensor" in type(err.value).__name__, repr(err.value)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_detected_and_rebuilt(base_run, cache, tmp_path, capsys):
    results, args = base_run
    store = Cache(cache)
    pre = next(m for m in _entries(cache, "model").values() if m["label"].startswith("pretrain"))
    ckpt = store.path("model", pre["key"]) / "model.safetensors"
    size = ckpt.stat().st_size
    with open(ckpt, "r+b") as fh:
        fh.truncate(size // 2)
    assert store.meta("model", pre["key"]) is None  # hash mismatch: treated as absent...
    assert not ckpt.parent.exists()  # ...and removed, never used
    # A user checkpoint truncated the same way is a clear load error, not garbage weights.
    from benchmark.models import ModelConfig, ModelLoadError, create_model

    half = tmp_path / "half.pt"
    torch.save({"w": torch.zeros(1000)}, half)
    half.write_bytes(half.read_bytes()[:300])
    with pytest.raises(ModelLoadError, match="truncated"):
        create_model(ModelConfig(arch="clipbench-micro-rn", pretrained=str(half)))

    # A fresh results dir whose cells are all evaluated already still assembles them (the
    # removed entry is not needed)...
    fresh = [a if a != str(results) else str(tmp_path / "again") for a in args]
    assert main(fresh) == 0
    # ...and the next run that needs it rebuilds it (a new trigger location: a new poisoned training).
    assert main([*fresh, "--set", "attacks.badnet.location=top_left"]) == 0
    rebuilt = store.meta("model", pre["key"])
    assert rebuilt is not None and ckpt.stat().st_size == size
    _assert_cache_intact(cache)


def test_a_truncated_result_file_is_recomputed_not_trusted(base_run, capsys):
    results, args = base_run
    path = find_cell(results, "badnet", "none")
    good = json.loads(path.read_text())
    path.write_text(path.read_text()[:100])
    assert main(args) == 0
    assert "1 computed" in capsys.readouterr().out
    assert json.loads(path.read_text())["metrics"] == good["metrics"]


# -------------------------------------------------------------------- lock
def test_a_second_run_on_a_locked_results_dir_refuses_with_no_wait(base_run, capsys):
    results, args = base_run
    with ResultsLock(results):
        rc = main([*args, "--no-wait"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == EXIT_LOCKED and len(err) == 1, err
        assert "is in use by another clipbench run" in err[0] and f"pid {os.getpid()}" in err[0]
        with pytest.raises(LockedError):
            ResultsLock(results).acquire(wait=True, timeout=0.3, poll=0.05)
    assert main([*args, "--no-wait"]) == 0  # released: runs (every cell already finished)


def test_a_second_run_waits_for_the_first(base_run, tmp_path):
    results, args = base_run
    log = tmp_path / "stderr.txt"
    lock = ResultsLock(results).acquire()
    try:
        with open(log, "w") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args], stdout=subprocess.PIPE,
                                    stderr=fh, text=True, cwd=ROOT)
        deadline = time.monotonic() + 120
        while "waiting for it to finish" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert "waiting for it to finish" in log.read_text()
        time.sleep(1)
        assert proc.poll() is None  # still waiting while we hold the lock
    finally:
        lock.release()
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, log.read_text()
    assert "1 already finished" in out


# ------------------------------------------------------------------ signals
def _interrupt_mid_stage(args: list[str], cache: Path, sig: int) -> subprocess.CompletedProcess:
    """Start ``clipbench run`` and send ``sig`` once its poisoned training has started."""
    before = len(list(cache.glob("poison/*/meta.json")))
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 240
    while len(list(cache.glob("poison/*/meta.json"))) == before:  # the new poison stage finished...
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # ...and the poisoned training (several epochs) is under way
    assert proc.poll() is None
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("sig, pattern", [(signal.SIGINT, "checkerboard"), (signal.SIGKILL, "noise")])
def test_interrupted_run_leaves_no_partial_files_and_resumes(base_run, cache, tmp_path, capsys, sig, pattern):
    results = tmp_path / "results"
    # A new trigger pattern: a new poison and poisoned-training stage; pre-training is cached.
    args = ["run", "--attack", "badnet", "--defense", "none", "--results-dir", str(results), "--cache-dir", str(cache),
            "--quiet", *_sets([f"attacks.badnet.pattern={pattern}", "poison_train.epochs=4"])]
    pre_before = {k: v for k, v in _entries(cache, "model").items() if v["label"].startswith("pretrain")}
    proc = _interrupt_mid_stage(args, cache, sig)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, proc.stderr
        assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr
        # Nothing half-written: no temporary folders or files left in the cache or results.
        assert not [p for p in cache.rglob(".*") if p.name != ".clipbench.lock"], list(cache.rglob(".*"))
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not list(results.rglob("*.json"))  # the cell had not finished: no result file
    assert not [p for p in results.rglob("*") if p.is_file() and p.name != ".clipbench.lock"]
    _assert_cache_intact(cache)  # whatever was stored is whole

    # Resume: the lock died with the process; finished stages are reused, the rest computed.
    poison = {k: v for k, v in _entries(cache, "poison").items() if v["spec"]["attack"]["config"]["pattern"] == pattern}
    assert len(poison) == 1
    poison_mtime = (cache / "poison" / next(iter(poison)) / "meta.json").stat().st_mtime_ns
    assert main([*args, "--no-wait"]) == 0
    assert "1 computed" in capsys.readouterr().out
    r = json.loads(find_cell(results, "badnet", "none").read_text())
    assert r["status"] == "ok" and r["attack"]["config"]["pattern"] == pattern
    assert (cache / "poison" / next(iter(poison)) / "meta.json").stat().st_mtime_ns == poison_mtime  # reused
    assert {k: v for k, v in _entries(cache, "model").items() if v["label"].startswith("pretrain")} == pre_before
