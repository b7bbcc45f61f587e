"""Bad input is refused before any work (issue 20): one line per problem, every problem at once,
exit 2, nothing written; problems found mid-run fail their cell (exit 1); Ctrl-C exits 130.

Every case calls the CLI's ``main`` in-process; bad data sources are generated with
tests/external_fixtures.py.
"""
from __future__ import annotations

import json
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import external_fixtures as fx
from benchmark.cli import main
from conftest import TINY_SETS

TINY = {"pretrain": None, "poison_train": {"epochs": 1, "batch_size": 16, "lr": 5e-3, "warmup_steps": 1},
        "defense_common": {"train": {"epochs": 1, "batch_size": 16, "lr": 1e-4, "warmup_steps": 1}},
        "attack_common": {"target": "banana", "poison_rate": 0.1}, "eval": {"batch_size": 64}}


def _sets(items) -> list[str]:
    return [a for s in items for a in ("--set", s)]


def _refused(argv: list[str], tmp_path: Path, capsys) -> list[str]:
    """Run ``clipbench run ...``; assert exit 2, one 'clipbench: error:' line per problem, nothing written."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    rc = main(["run", "--results-dir", str(results), "--cache-dir", str(cache), "--quiet", *argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured
    assert lines and all(line.startswith("clipbench: error: ") for line in lines), lines
    assert "Traceback" not in captured.err and not captured.out.strip()
    assert not results.exists() and not cache.exists()  # refused before any work: not even the folders
    return [line.removeprefix("clipbench: error: ") for line in lines]


def _one(argv, tmp_path, capsys) -> str:
    lines = _refused(argv, tmp_path, capsys)
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------- list options
@pytest.mark.parametrize("argv, needle", [
    (["--attack", "badnet,,"], "--attack 'badnet,,' has an empty item; remove the stray comma: --attack badnet"),
    (["--attack", "badnet,"], "--attack 'badnet,' has an empty item"),
    (["--defense", ",none"], "--defense ',none' has an empty item; remove the stray comma: --defense none"),
    (["--attack", ""], "--attack '' names no attack"),
    (["--attack", "badnet,badnet"], "names 'badnet' twice; give each attack once: --attack badnet"),
    (["--attack", "all,badnet"], "'all' already means every attack"),
    (["--seeds", "1,,2"], "--seeds '1,,2' has an empty item; remove the stray comma: --seeds 1,2"),
    (["--seeds", "0,-1"], "--seeds '0,-1': seed -1 is negative; seeds are non-negative integers"),
    (["--seeds", "0,0"], "--seeds '0,0' names seed 0 twice (a typo?); give each seed once: --seeds 0"),
    (["--seeds", "0,x"], "'x' is not an integer"),
    (["--seed", "-1"], "--seed -1 is negative"),
    (["--seed", "1", "--seeds", "0,1"], "contradict each other"),
    (["--jobs", "0"], "--jobs 0 must be at least 1"),
    (["--gpus-per-task", "-1"], "--gpus-per-task -1.0 is negative"),
    (["--attack", "badnett"], "unknown attack 'badnett': did you mean 'badnet'"),
    (["--results-dir", "/proc/version/results"], "is not writable ('/proc/version' is not a folder)"),
])
def test_bad_options_are_one_line_exit_2(argv, needle, tmp_path, capsys):
    argv = [*(["--attack", "badnet"] if "--attack" not in argv else []), *argv]
    if "--results-dir" in argv:  # the case brings its own results dir
        rc = main(["run", "--cache-dir", str(tmp_path / "cache"), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], err
        return
    assert needle in _one(argv, tmp_path, capsys)


# ------------------------------------------------------------- --set values: the full key
@pytest.mark.parametrize("item, message", [
    ("pretrain.epochs=-1", "pretrain.epochs=-1 is invalid: train for at least one epoch"),
    ("poison_train.batch_size=1", "poison_train.batch_size=1 is invalid"),
    ("defense_common.train.batch_size=1", "defense_common.train.batch_size=1 is invalid"),
    ("defenses.finetune.train.epochs=0", "defenses.finetune.train.epochs=0 is invalid"),
    ("attack_common.poison_rate=0", "attack_common.poison_rate=0.0 is invalid"),
    ("attacks.badnet.poison_rate=2", "attacks.badnet.poison_rate=2.0 is invalid"),
    ("attacks.badnet.patch_size=40", "attacks.badnet.patch_size=40 (margin 0) does not fit a 32x32 image"),
    ("attack_common.target=zebra", "attack_common.target='zebra' is not a class of this suite's data"),
    ("attacks.badnet.target=zebra", "attacks.badnet.target='zebra' is not a class"),
    ("attack_common.target=null", "attacks.badnet: no target class; set attack_common.target"),
    ("data.fraction=0", "data.fraction=0.0 is invalid"),
    ("model.arch=RN5000", "unknown model.arch 'RN5000'"),
])
def test_set_messages_name_the_full_key(item, message, tmp_path, capsys):
    line = _one(["--attack", "badnet", "--defense", "finetune", *_sets([item])], tmp_path, capsys)
    assert line.startswith(message), line


def test_every_problem_is_listed_together(tmp_path, capsys):
    lines = _refused(["--attack", "badnet,,blended", "--defense", "none,none", "--seeds", "0,-1",
                      *_sets(["pretrain.epochs=-1", "poison_train.lr=0", "attacks.badnet.patch_size=40",
                              "attack_common.target=zebra", "model.pretrained=/nonexistent/weights.pt"]),
                      "--plugin", str(tmp_path / "missing.py")], tmp_path, capsys)
    expected = ["--seeds '0,-1': seed -1 is negative", "--attack 'badnet,,blended' has an empty item",
                "--defense 'none,none' names 'none' twice", "pretrain.epochs=-1 is invalid", "poison_train.lr=0.0 is invalid",
                "no such file", "attacks.badnet.patch_size=40", "attack_common.target='zebra'",
                "model.pretrained='/nonexistent/weights.pt': no such checkpoint file"]
    assert len(lines) == len(expected), lines
    for needle, line in zip(expected, lines):
        assert needle in line, (needle, line)


def test_nothing_is_written_into_existing_folders(tmp_path, capsys):
    results, cache = tmp_path / "results", tmp_path / "cache"
    (results / "embedded").mkdir(parents=True)
    (results / "embedded" / "keep.json").write_text("{}")
    cache.mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rc = main(["run", "--attack", "badnet,", "--results-dir", str(results), "--cache-dir", str(cache), "--quiet"])
    assert rc == 2 and "empty item" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no lock, no probe file left


# ------------------------------------------------------------- plugins
def test_every_broken_plugin_is_reported(tmp_path, capsys):
    bad_import = tmp_path / "bad_import.py"
    bad_import.write_text("import no_such_dependency_xyz\n")
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    lines = _refused(["--attack", "badnet", "--plugin", str(bad_import), "--plugin", str(empty),
                      "--plugin", "no_such_module_xyz:Thing"], tmp_path, capsys)
    assert len(lines) == 3, lines
    assert "bad_import.py' failed to import: ModuleNotFoundError" in lines[0] and "no_such_dependency_xyz" in lines[0]
    assert "empty.py' defines no subclass of benchmark.Attack, benchmark.Defense or benchmark.Detector" in lines[1]
    assert "no_such_module_xyz:Thing' failed to import" in lines[2]


# ------------------------------------------------------------- checkpoints
def test_checkpoint_paths_and_formats(tmp_path, capsys):
    from safetensors.torch import save_file

    from benchmark.models import ModelConfig, create_model

    micro = ["model.arch=clipbench-micro-rn"]
    missing = _one(["--attack", "badnet", *_sets([*micro, "model.pretrained=/nonexistent/weights.pt"])], tmp_path, capsys)
    assert missing.startswith("model.pretrained='/nonexistent/weights.pt': no such checkpoint file")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    line = _one(["--attack", "badnet", *_sets([*micro, f"model.pretrained={garbage}"])], tmp_path, capsys)
    assert f"checkpoint '{garbage}' cannot be loaded safely" in line

    text = tmp_path / "weights.txt"
    text.write_text("hello")
    line = _one(["--attack", "badnet", *_sets([*micro, f"model.pretrained={text}"])], tmp_path, capsys)
    assert "unknown checkpoint format '.txt'" in line

    other = tmp_path / "tiny.safetensors"  # a valid checkpoint of another architecture
    save_file({k: v.contiguous() for k, v in create_model(ModelConfig("clipbench-tiny-rn")).clip.state_dict().items()},
              str(other))
    line = _one(["--attack", "badnet", *_sets([*micro, f"model.pretrained={other}"])], tmp_path, capsys)
    assert "does not match model.arch='clipbench-micro-rn'" in line and "of another shape" in line

    good = tmp_path / "micro.pt"  # the right one passes validation (a dry run plans it, exit 0)
    torch.save({"state_dict": create_model(ModelConfig("clipbench-micro-rn")).clip.state_dict()}, good)
    assert main(["run", "--attack", "badnet", "--dry-run", "--results-dir", str(tmp_path / "r"), "--cache-dir",
                 str(tmp_path / "c"), *_sets([*micro, f"model.pretrained={good}"])]) == 0
    assert "error" not in capsys.readouterr().err


class _Payload:
    """A pickle that runs code when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("arch", ["clipbench-micro-rn", None])  # None: the embedded default's model
def test_a_checkpoint_holding_pickled_code_is_refused_up_front(tmp_path, capsys, arch):
    """Issue 21: one line naming the pickled global, exit 2, nothing written, nothing executed,
    and not torch's advice to re-run with weights_only=False."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"visual.conv1.weight": _Payload(marker)}, evil)
    sets = ([f"model.arch={arch}"] if arch else []) + [f"model.pretrained={evil}"]
    line = _one(["--attack", "badnet", *_sets(sets)], tmp_path, capsys)
    assert line == (f"checkpoint '{evil}' holds pickled code or objects other than tensors (posix.system); refused "
                    "without running it. Re-export the weights as safetensors or a plain state dict of tensors"), line
    assert "weights_only" not in line and not marker.exists()


# ------------------------------------------------------------- data sources
@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    return {"csv": fx.write_csv(root / "csv", n=48), "test": fx.write_class_folders(root / "test", 6),
            "wds": fx.write_shards(root / "wds", n=24, per_shard=12), "hf": fx.write_hf(root / "hf", n=16)}


def _suite(tmp_path: Path, name: str = "ext", **data) -> Path:
    base = {"source": "external", "train": {"format": "csv", "path": "MISSING"}, "defense": None,
            "test": {"format": "imagefolder", "path": "MISSING", "classes": "folder"}}
    suite = {"name": name, "model": {"arch": "clipbench-micro-rn"}, **TINY, "data": {**base, **data}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _csv(folder: Path, header: str, rows: list[tuple[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pairs.csv"
    path.write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def test_bad_data_sources_are_refused_before_any_work(good, tmp_path, capsys):
    images = good["csv"].parent / "images"
    test = {"format": "imagefolder", "path": str(good["test"]), "classes": "folder"}
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cases = {
        "missing csv": ({"format": "csv", "path": str(tmp_path / "nope.csv")},
                        "data.train (csv {path}): CSV file not found; set data.train.path to an existing file"),
        "no columns": ({"format": "csv", "path": str(_csv(tmp_path / "cols", "file,text", [("a.png", "x")]))},
                       "no column 'image' (columns: file, text); set data.train.image_column / caption_column"),
        "corrupt first rows": ({"format": "csv", "path": str(_csv(tmp_path / "c1", "image,caption", [
                                   (str(images / "0000.png"), "a photo"), (str(corrupt / "bad.png"), "a photo")]))},
                               "row 2: {corrupt}/bad.png: corrupt or unreadable image"),
        "missing image": ({"format": "csv", "path": str(_csv(tmp_path / "c2", "image,caption", [("gone.png", "a photo")]))},
                          "row 1: image file '{tmp}/c2/gone.png' is missing"),
        "empty caption": ({"format": "csv", "path": str(_csv(tmp_path / "c3", "image,caption",
                                                             [(str(images / "0000.png"), " ")]))},
                          "row 1: empty caption"),
        "offset past the end": ({"format": "csv", "path": str(good["csv"]), "offset": 1000}, "no rows after offset=1000"),
        "missing shards": ({"format": "webdataset", "path": str(tmp_path / "shards" / "{000..003}.tar")}, "not found"),
        "hf without column": ({"format": "hf", "path": str(good["hf"]), "caption_column": "caption"},
                              "no column 'caption' (columns: image, text)"),
    }
    for name, (train, needle) in cases.items():
        suite = _suite(tmp_path, train=train, defense={"format": "csv", "path": str(good["csv"])}, test=test)
        line = _one(["--suite", str(suite), "--attack", "badnet", "--defense", "none"], tmp_path, capsys)
        assert needle.format(path=train["path"], corrupt=corrupt, tmp=tmp_path) in line, (name, line)

    # a corrupt image in the first sample of a shard
    shard = tmp_path / "wds-bad" / "shard-000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        for member, payload in (("000000.jpg", b"\xff\xd8\xff not a jpeg"), ("000000.txt", b"a photo")):
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            tar.addfile(info, __import__("io").BytesIO(payload))
    suite = _suite(tmp_path, train={"format": "webdataset", "path": str(shard)}, test=test,
                   defense={"format": "csv", "path": str(good["csv"])})
    line = _one(["--suite", str(suite), "--attack", "badnet", "--defense", "none"], tmp_path, capsys)
    assert f"{shard}:000000.jpg: corrupt or unreadable image" in line


def test_several_bad_sources_are_listed_together_and_a_dry_run_only_notes_them(good, tmp_path, capsys):
    suite = _suite(tmp_path, train={"format": "csv", "path": str(tmp_path / "nope.csv")},
                   defense={"format": "webdataset", "path": str(tmp_path / "none.tar")},
                   test={"format": "imagefolder", "path": str(good["test"]), "classes": "folder"})
    argv = ["--suite", str(suite), "--attack", "badnet", "--defense", "finetune"]
    lines = _refused([*argv, *_sets(["poison_train.epochs=0"])], tmp_path, capsys)
    assert len(lines) == 3, lines
    assert lines[0].startswith("poison_train.epochs=0 is invalid")
    assert lines[1].startswith("data.train (csv") and lines[2].startswith("data.defense (webdataset")
    # --dry-run plans without the data: the same sources are notes, and the plan is printed (exit 0)
    rc = main(["run", *argv, "--dry-run", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])
    captured = capsys.readouterr()
    notes = [n for n in captured.err.strip().splitlines() if "TrainConfig default" not in n]  # not the schedule note
    assert rc == 0 and len(notes) == 2 and all(n.startswith("clipbench: note: without --dry-run this is an error: data.")
                                               for n in notes), notes
    assert "stage(s) to run" in captured.out


# ------------------------------------------------------------- mid-run: exit 1; Ctrl-C: 130
@pytest.fixture(scope="module")
def deep(good, tmp_path_factory) -> dict:
    """A suite whose defense CSV has a corrupt image at row 40 (the first rows are fine), and one
    stage cache for the module's runs (they share every stage but the defense)."""
    folder = tmp_path_factory.mktemp("deep")
    rows = [(str(good["csv"].parent / "images" / f"{i:04d}.png"), f"a photo of a {fx.CLASSES[i % 4]}.") for i in range(48)]
    bad = folder / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows[39] = (str(bad), "a photo of a banana.")
    defense = _csv(folder, "image,caption", rows)
    suite = _suite(folder, "deep", train={"format": "csv", "path": str(good["csv"]), "limit": 32},
                   defense={"format": "csv", "path": str(defense)},
                   test={"format": "imagefolder", "path": str(good["test"]), "classes": "folder"})
    return {"suite": suite, "defense": defense, "bad": bad, "cache": folder / "cache"}


def test_a_corrupt_image_deep_in_a_source_fails_its_cell_only(deep, tmp_path, capsys):
    """Validation (first rows) passes; the defense stage stops naming the file and row, the other
    cell's result is kept, exit 1."""
    results = tmp_path / "results"
    rc = main(["run", "--suite", str(deep["suite"]), "--attack", "badnet", "--defense", "none,finetune",
               "--executor", "local", "--results-dir", str(results), "--cache-dir", str(deep["cache"]), "--quiet",
               "--no-leaderboard"])
    out = capsys.readouterr().out
    assert rc == 1
    ok = json.loads((results / "deep/badnet/none/seed-0.json").read_text())
    assert ok["status"] == "ok"  # the finished cell is kept
    failed = json.loads((results / "deep/badnet/finetune/seed-0.json").read_text())
    assert failed["status"] == "failed" and failed["error"]["type"] == "DataError"
    message = failed["error"]["message"]
    assert message.startswith(f"data.defense (csv {deep['defense']}) row 40: {deep['bad']}: corrupt or unreadable "
                              "image"), message
    assert "\n" not in message
    flat = " ".join(out.split())
    assert "failed cells:" in flat and "badnet/finetune seed=0: DataError: data.defense" in flat


INTERRUPTING = """
    from benchmark import Defense, Stage

    class Interrupted(Defense):
        name = "interrupted"
        stage = Stage.POST_TRAINING

        def defend(self, model, ctx):
            raise KeyboardInterrupt
"""


def test_ctrl_c_exits_130_and_keeps_finished_results(deep, tmp_path, capsys):
    plugin = tmp_path / "interrupting.py"
    plugin.write_text(textwrap.dedent(INTERRUPTING))
    results = tmp_path / "results"
    rc = main(["run", "--suite", str(deep["suite"]), "--attack", "badnet", "--defense", "none,interrupted",
               "--plugin", str(plugin), "--executor", "local", "--results-dir", str(results),
               "--cache-dir", str(deep["cache"]), "--quiet", "--no-leaderboard"])
    err = capsys.readouterr().err
    assert rc == 130 and "interrupted; finished results are kept" in err and "Traceback" not in err
    assert json.loads((results / "deep/badnet/none/seed-0.json").read_text())["status"] == "ok"
    assert not (results / "deep/badnet/interrupted").exists()  # an interrupted cell is not recorded as failed
    assert (results / ".clipbench.lock").read_text() == ""  # the lock was released


# ------------------------------------------------------------- dry-run units
def test_dry_run_units_read_plainly(tmp_path, capsys):
    argv = ["run", "--attack", "label_consistent,badnet", "--defense", "none", "--dry-run",
            "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), *_sets(TINY_SETS)]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "poison label_consistent seed=0 │ to run │ ? │ unknown" not in out and "unknown" not in out
    assert "CPU-core-set" not in out and "wall time running one stage at a time on this machine" in out
    assert main(["run", "--suite", "cleanclip-paper", "--attack", "label_consistent", "--defense", "none", "--dry-run",
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "GPU hours: the stages one after another on one GPU" in out and "core(s) here" not in out
    assert "CPU" not in out


def test_a_decoding_error_in_a_dataloader_worker_keeps_its_one_line_message(deep):
    """Stages with num_workers > 0 decode in DataLoader workers, which wrap the error with the
    worker's traceback; the failed cell's message is the original line (the traceback is kept apart)."""
    from torch.utils.data import DataLoader

    from benchmark.data.dataset import batch_collate
    from benchmark.data.external import SplitSource, open_split
    from benchmark.data.images import DataError, make_transform
    from benchmark.executors import error_message

    spec = {"image_size": 32, "mean": None, "std": None, "resize_mode": "shortest", "interpolation": "bicubic"}
    data = open_split(SplitSource("csv", str(deep["defense"])), "defense", make_transform(spec), (3, 32, 32))
    with pytest.raises(DataError) as caught:
        for _ in DataLoader(data, batch_size=16, num_workers=1, collate_fn=batch_collate):
            pass
    assert "Original Traceback" in str(caught.value)  # what torch hands over
    message = error_message(caught.value)
    assert message.startswith(f"data.defense (csv {deep['defense']}) row 40: {deep['bad']}: corrupt or unreadable"), message
    assert "\n" not in message


def test_preview_checks_its_list_option_too(tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["preview", "--attack", "badnet,", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["clipbench: error: --attack 'badnet,' has an empty item; remove the stray comma: --attack badnet"]
    assert not out.exists()
