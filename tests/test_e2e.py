"""A real (tiny) cell end to end, and the CLI's contract."""
import json
import subprocess
import sys

import pytest

from benchmark.cli import main
from benchmark.results import SCHEMA_VERSION, find_cell


@pytest.mark.slow
def test_tiny_cell_forms_a_real_backdoor_and_writes_the_schema(tmp_path, cache_dir, tiny_sets, capsys):
    results = tmp_path / "results"
    args = ["run", "--attack", "badnet", "--defense", "none", "--results-dir", str(results), "--quiet"]
    for s in tiny_sets:
        args += ["--set", s]
    assert main(args) == 0
    path = find_cell(results, "badnet", "none")  # the --set run's variant folder
    r = json.loads(path.read_text())
    assert r["schema_version"] == SCHEMA_VERSION and r["status"] == "ok" and r["error"] is None
    assert r["attack"]["name"] == "badnet" and r["defense"]["name"] == "none" and r["seed"] == 0
    assert r["provenance"]["config_hash"].startswith("sha256:")
    assert r["provenance"]["torch"] and r["provenance"]["clipbench"]
    m, clean = r["metrics"], r["clean_model"]
    for block in (m, clean, r["baseline"]):
        for key in ("clean_accuracy", "asr", "ra"):
            assert 0.0 <= block[key] <= 1.0
            lo, hi = block["intervals"][key]
            assert lo <= block[key] <= hi
    assert m["clean_accuracy"] > 0.5  # it learned the task
    assert m["asr"] > clean["asr"] + 0.4, (m["asr"], clean["asr"])  # a real backdoor formed
    assert r["poison"]["num_poisoned"] > 0
    assert set(r["timings_s"]) >= {"pretrain", "poison", "poison_train", "evaluate"}
    first = capsys.readouterr().out
    assert "badnet" in first and "/" in first

    # A second run is served from the results and the cache, with identical metrics.
    assert main(args) == 0
    assert json.loads(path.read_text())["metrics"] == m
    assert "1 already finished" in capsys.readouterr().out
    # A fresh results dir reuses every cached stage.
    other = tmp_path / "results2"
    args2 = [a if a != str(results) else str(other) for a in args]
    assert main(args2) == 0
    assert json.loads((find_cell(other, "badnet", "none")).read_text())["metrics"] == m


def _cli(*args, tmp_path):
    return subprocess.run([sys.executable, "-m", "benchmark.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)


def _one_line_usage_error(code: int, stderr: str, needle: str) -> None:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("args, needle", [
    (["run", "--attack", "badnett"], "did you mean 'badnet'"),
    (["run", "--defense", "clean"], "unknown defense 'clean'"),
    (["run", "--set", "pretrain.epochs"], "malformed --set"),
    (["run", "--set", "pretrain.epocs=3"], "did you mean 'epochs'"),
    (["run", "--set", "pretrain.epochs=abc"], "expected an integer"),
    (["run", "--set", "attack_common.poison_rate=2"], "poison_rate"),
    (["run", "--set", "attack_common.target=banana"], "not a class"),
    (["run", "--results-dir", "/proc/version/results"], "not writable"),
])
def test_bad_input_is_one_line_exit_2_no_traceback(args, needle, tmp_path, monkeypatch, capsys):
    """In-process (the CLI's ``main``, as the console script calls it); the process-level
    contract, interpreter exit status included, is checked once below."""
    monkeypatch.chdir(tmp_path)
    code = main(args)
    _one_line_usage_error(code, capsys.readouterr().err, needle)


def test_the_console_entry_exits_2_with_one_line(tmp_path):
    proc = _cli("run", "--attack", "badnett", tmp_path=tmp_path)
    _one_line_usage_error(proc.returncode, proc.stderr, "did you mean 'badnet'")


def test_list_shows_builtins(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "badnet" in out and "none" in out and "builtin" in out
