"""Plugins (issue 7): discovery, --plugin, broken / conflicting / disabled plugins, the
example package, and a defense written only from the README."""
from __future__ import annotations

import ast
import csv
import importlib
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmark import API_VERSION
from benchmark.cli import main
from benchmark.registry import DISABLE_ENV, RegistryError, defense_registry, registries
from benchmark.results import find_cell
from conftest import TINY_SETS, need

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "plugin_example"
#: The tiny suite, cut further: these tests check plumbing, not backdoor strength.
FAST_SETS = TINY_SETS + ["data.fraction=0.04", "pretrain.epochs=1", "poison_train.epochs=1"]


def _sets(extra: list[str] = ()) -> list[str]:
    out: list[str] = []
    for s in [*FAST_SETS, *extra]:
        out += ["--set", s]
    return out


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One stage cache for this module: the pre-trained micro model is trained once."""
    return tmp_path_factory.mktemp("plugin-cache")


def fake_dist(root: Path, dist: str, version: str, entry_points: dict[str, dict[str, str]],
              modules: dict[str, str] | None = None) -> Path:
    """An installed distribution on ``root`` (a dist-info folder, as pip writes it)."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, code in (modules or {}).items():
        (root / f"{name}.py").write_text(textwrap.dedent(code))
    return root


GOOD_DEFENSE = """
    from benchmark import Defense, Stage
    class Good(Defense):
        name = "good_plugin"
        stage = Stage.NONE
        paper = "a test plugin"
"""


def _list(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables at the terminal width
    rc = main(["list", *args])
    return rc, capsys.readouterr().out


# ----------------------------------------------------------------------- discovery
def test_installed_plugin_is_discovered_with_its_distribution_and_version(tmp_path, monkeypatch, capsys):
    fake_dist(tmp_path, "good-plugin", "1.2.3", {"clipbench.defenses": {"good_plugin": "good_mod:Good"}},
              {"good_mod": GOOD_DEFENSE})
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = defense_registry()
    assert reg.entry("good_plugin").source == "plugin good-plugin 1.2.3"
    assert reg.get("good_plugin").name == "good_plugin"
    assert reg.identity("good_plugin") == {"source": "plugin good-plugin 1.2.3"}  # joins the cache keys
    assert reg.identity("none") == {}  # built-ins: keys unchanged
    rc, out = _list(capsys, monkeypatch)
    assert rc == 0
    row = next(line for line in out.splitlines() if "good_plugin" in line)
    assert "plugin good-plugin 1.2.3" in row and "a test plugin" in row
    assert re.search(r"none\s+│\s+builtin", out)


def test_broken_plugin_is_listed_with_its_error_and_fails_only_when_selected(tmp_path, monkeypatch, capsys):
    fake_dist(tmp_path, "broken-plugin", "0.1", {"clipbench.defenses": {
        "broken_def": "broken_mod:Broken", "wrong_base": "wrong_mod:NotADefense", "misnamed": "good_mod:Good"}},
        {"broken_mod": "import no_such_dependency_xyz\n", "wrong_mod": "class NotADefense: name = 'wrong_base'\n",
         "good_mod": GOOD_DEFENSE})
    monkeypatch.syspath_prepend(str(tmp_path))
    rc, out = _list(capsys, monkeypatch)
    assert rc == 0  # listing never fails because of one plugin
    assert re.search(r"broken_def .*plugin broken-plugin 0\.1.*ModuleNotFoundError.*no_such_dependency_xyz", out)
    assert re.search(r"wrong_base .*not a subclass of Defense", out)
    assert re.search(r"misnamed .*declares name 'good_plugin'", out)
    assert "badnet" in out and "Gu et al." in out  # the others are unaffected

    reg = defense_registry()
    assert reg.get("none") is not None
    with pytest.raises(RegistryError, match=r"broken_def.*broken-plugin 0\.1.*failed to import.*" + DISABLE_ENV):
        reg.get("broken_def")
    # Selecting it on the command line: one line, exit 2, before any work.
    rc = main(["run", "--attack", "badnet", "--defense", "broken_def", "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "no_such_dependency_xyz" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "embedded").exists()


def test_two_methods_with_one_name_are_a_conflict_never_shadowed(tmp_path, monkeypatch, capsys):
    shadow = GOOD_DEFENSE.replace('"good_plugin"', '"none"')
    fake_dist(tmp_path, "shadow-plugin", "2.0", {"clipbench.defenses": {"none": "shadow_mod:Good"}}, {"shadow_mod": shadow})
    fake_dist(tmp_path / "b", "other-plugin", "0.3", {"clipbench.defenses": {"good_plugin": "other_mod:Good"}},
              {"other_mod": GOOD_DEFENSE})
    fake_dist(tmp_path / "c", "good-plugin", "1.0", {"clipbench.defenses": {"good_plugin": "good_mod:Good"}},
              {"good_mod": GOOD_DEFENSE})
    for p in (tmp_path, tmp_path / "b", tmp_path / "c"):
        monkeypatch.syspath_prepend(str(p))
    reg = defense_registry()
    with pytest.raises(RegistryError, match=r"'none' is defined twice: defenses.none:NoDefense \(builtin\) and "
                                            r"shadow_mod:Good \(plugin shadow-plugin 2.0\)"):
        reg.get("none")
    with pytest.raises(RegistryError, match=r"'good_plugin' is defined twice.*other-plugin 0.3.*good-plugin 1.0|"
                                            r"'good_plugin' is defined twice.*good-plugin 1.0.*other-plugin 0.3"):
        reg.get("good_plugin")
    rc, out = _list(capsys, monkeypatch)
    assert rc == 0 and "conflict" in out and "shadow-plugin 2.0" in out
    rc = main(["run", "--attack", "badnet", "--defense", "none", "--results-dir", str(tmp_path / "r")])
    assert rc == 2 and "defined twice" in capsys.readouterr().err


def test_disable_env_turns_discovery_off(tmp_path, monkeypatch, capsys):
    fake_dist(tmp_path, "good-plugin", "1.0", {"clipbench.defenses": {"good_plugin": "good_mod:Good"}},
              {"good_mod": GOOD_DEFENSE})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "good_plugin" in defense_registry()
    monkeypatch.setenv(DISABLE_ENV, "1")
    assert "good_plugin" not in defense_registry()
    assert "none" in defense_registry()  # built-ins stay
    rc, out = _list(capsys, monkeypatch)
    assert rc == 0 and "good_plugin" not in out and f"{DISABLE_ENV} is set" in out


def test_bad_entry_point_names_are_reported_not_fatal(tmp_path, monkeypatch, capsys):
    fake_dist(tmp_path, "odd-plugin", "0.1", {"clipbench.defenses": {"Bad-Name": "good_mod:Good", "all": "good_mod:Good"}},
              {"good_mod": GOOD_DEFENSE})
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = defense_registry()
    assert "none" in reg and "Bad-Name" not in reg and "all" not in reg.names()
    assert any("not lowercase snake_case" in p for p in reg.problems)
    assert any("reserved" in p for p in reg.problems)
    rc, out = _list(capsys, monkeypatch)
    assert rc == 0 and "plugin problem" in out and "odd-plugin" in out


# ------------------------------------------------------------------------ --plugin
FILE_PLUGIN = """
    from dataclasses import dataclass
    import torch
    from benchmark import Attack, AttackConfig, Defense, Stage
    from benchmark import Defense as ImportedBase  # imported names are not registered

    @dataclass
    class InvertConfig(AttackConfig):
        strength: float = 1.0

    class Invert(Attack):
        name = "invert_wip"
        paper = "work in progress"
        Config = InvertConfig
        def apply(self, images):
            return 1 - images

    class Keep(Defense):
        name = "keep_wip"
        stage = Stage.NONE
"""


def test_plugin_file_registers_every_method_it_defines(tmp_path, monkeypatch, capsys):
    path = tmp_path / "wip.py"
    path.write_text(textwrap.dedent(FILE_PLUGIN))
    attacks, defenses = registries([str(path)])
    assert attacks.entry("invert_wip").source == f"local {path}"
    assert defenses.entry("keep_wip").source == f"local {path}"
    assert "keep_wip" not in attacks and "invert_wip" not in defenses
    cls = attacks.get("invert_wip")
    assert cls.Config().strength == 1.0
    before = attacks.identity("invert_wip")
    assert before["source"].startswith("local sha256:")
    # Editing the file changes the identity that goes into the cache keys.
    path.write_text(textwrap.dedent(FILE_PLUGIN).replace("1 - images", "images.flip(-1)"))
    assert registries([str(path)])[0].identity("invert_wip") != before
    rc, out = _list(capsys, monkeypatch, "--plugin", str(path))
    assert rc == 0 and re.search(r"invert_wip\s+│\s+local ", out) and "keep_wip" in out


def test_plugin_module_class(tmp_path, monkeypatch):
    (tmp_path / "wip_mod.py").write_text(textwrap.dedent(FILE_PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    attacks, defenses = registries(["wip_mod:Keep"])
    assert defenses.entry("keep_wip").source == "local wip_mod:Keep"
    assert defenses.get("keep_wip").__name__ == "Keep" and "invert_wip" not in attacks


@pytest.mark.parametrize("content, spec, needle", [
    (None, "missing_dir/nope.py", "no such file"),
    ("def broken(:\n", "bad.py", "failed to import: SyntaxError"),
    ("x = 1\n", "empty.py", "defines no subclass"),
    (None, "benchmark.config:ConfigError", "not a subclass"),
    (None, "not_a_spec", "expected module:Class"),
    ("from benchmark import Defense\nclass Anon(Defense):\n    pass\n", "anon.py", "has no `name`"),
])
def test_bad_plugin_specs_are_one_line_errors(tmp_path, monkeypatch, capsys, content, spec, needle):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        Path(spec).write_text(content)
    assert main(["list", "--plugin", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


# ------------------------------------------------------------------- public API
def test_public_api_is_versioned_and_complete():
    import benchmark

    assert re.fullmatch(r"\d+\.\d+", API_VERSION)
    for name in ("Attack", "AttackConfig", "AttackContext", "Defense", "DefenseConfig", "DefenseContext", "Stage",
                 "Objective", "LossOutput", "StepContext", "TrainConfig", "clip_loss", "info_nce", "ConfigError",
                 "check", "TensorPairs", "ClipModel", "train"):
        assert name in benchmark.__all__ and getattr(benchmark, name) is not None, name
        assert name in benchmark.__doc__, f"{name} is exported but not documented in benchmark/__init__.py"
    for name in ("check_attack", "check_defense"):
        assert name in benchmark.__all__ and name in benchmark.__doc__
        if importlib.util.find_spec("benchmark.testing") is not None:
            assert callable(getattr(benchmark, name))
    # The example plugin imports the engine only through the public API.
    for mod in _imports_from_source((EXAMPLE / "clipbench_example_plugin" / "__init__.py").read_text()):
        assert not mod.startswith("benchmark.") and mod not in ("attacks", "defenses"), mod


# ---------------------------------------------------------------- example package
def _example_installed() -> bool:
    try:
        dist = importlib.metadata.distribution("clipbench-example-plugin")
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(ep.name == "example_finetune" for ep in dist.entry_points)


@pytest.mark.slow
def test_example_plugin_package_runs_through_the_cli(tmp_path, shared_cache, monkeypatch, capsys):
    need("the example plugin package", _example_installed(), "pip install -e tests/plugin_example (.ci/run does)")
    rc, out = _list(capsys, monkeypatch)
    assert re.search(r"example_finetune\s+│\s+plugin clipbench-example-plugin 0\.1\.0", out)
    results = tmp_path / "results"
    rc = main(["run", "--attack", "badnet", "--defense", "none,example_finetune", "--results-dir", str(results),
               "--cache-dir", str(shared_cache), "--quiet", *_sets(["defenses.example_finetune.train.epochs=1"])])
    assert rc == 0, capsys.readouterr()
    r = json.loads(find_cell(results, "badnet", "example_finetune").read_text())
    assert r["status"] == "ok" and r["defense"]["source"] == "plugin clipbench-example-plugin 0.1.0"
    assert r["defense"]["stage"] == "post_training" and r["defense"]["config"]["freeze_text"] is True
    assert r["defense"]["config"]["train"]["epochs"] == 1
    assert 0 <= r["metrics"]["clean_accuracy"] <= 1
    assert "defense" in r["timings_s"]
    defended = [json.loads(m.read_text()) for m in shared_cache.glob("model/*/meta.json")]
    defended = [m for m in defended if m["label"].startswith("defend badnet with example_finetune")]
    assert len(defended) == 1 and defended[0]["train"]["steps"] >= 1  # it really fine-tuned the model
    base = json.loads(find_cell(results, "badnet", "none").read_text())
    assert base["defense"]["source"] == "builtin"


# ------------------------------------------------------------ README -> leaderboard
def readme_files(readme: Path = ROOT / "README.md") -> dict[str, str]:
    """The files the README's "Add your own defense" section spells out (``# path`` first lines)."""
    text = readme.read_text()
    start = text.index("## Add your own defense")
    end = text.find("\n## ", start + 3)
    section = text[start:end if end != -1 else None]
    files = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.S):
        first, _, body = block.partition("\n")
        m = re.fullmatch(r"# (my-defense/[\w./-]+)", first.strip())
        if m:
            files[m.group(1)] = body
    return files


def test_readme_defense_is_short_and_imports_only_the_public_api():
    files = readme_files()
    assert {"my-defense/pyproject.toml", "my-defense/my_defense.py"} <= set(files)
    code = [l for l in files["my-defense/my_defense.py"].splitlines() if l.strip()]
    assert len(code) < 40, f"the README's plugin has {len(code)} lines of code; the promise is under 40"
    mods = _imports_from_source(files["my-defense/my_defense.py"])
    assert all(m == "benchmark" or not m.startswith(("benchmark", "attacks", "defenses")) for m in mods), mods


def _imports_from_source(source: str) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    return mods


@pytest.mark.slow
def test_a_defense_written_from_the_readme_installs_lists_runs_and_reaches_the_leaderboard(
        tmp_path, shared_cache, monkeypatch, capsys):
    for rel, body in readme_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(body)
    site = tmp_path / "site-packages"
    # A real pip install of the package (into a private target: nothing downloads, the
    # environment of the other tests is untouched).
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(tmp_path / "my-defense")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.syspath_prepend(str(site))

    rc, out = _list(capsys, monkeypatch)
    assert rc == 0
    name = re.search(r'^(\w+) = "my_defense:', readme_files()["my-defense/pyproject.toml"], re.M).group(1)
    assert re.search(rf"{name}\s+│\s+plugin my-defense 0\.1\.0", out), out

    results = tmp_path / "results"
    rc = main(["run", "--attack", "badnet", "--defense", name, "--results-dir", str(results),
               "--cache-dir", str(shared_cache), "--quiet", *_sets([f"defenses.{name}.train.epochs=1"])])
    assert rc == 0, capsys.readouterr()
    r = json.loads(find_cell(results, "badnet", name).read_text())
    assert r["status"] == "ok" and r["defense"]["source"] == "plugin my-defense 0.1.0"

    leaderboard = pytest.importorskip("leaderboard.build")
    report = leaderboard.build_site(results, tmp_path / "site", figures=False)
    rows = list(csv.DictReader((report.out_dir / "defenses.csv").open()))
    mine = [row for row in rows if name in row.values()]
    assert mine and all(row["source"] == "plugin my-defense 0.1.0" for row in mine), rows
    page = (report.out_dir / "index.html").read_text()
    assert name in page and 'data-origin="plugin"' in page  # the page marks (and filters) plugin rows


@pytest.mark.slow
def test_example_plugin_passes_the_contract_checks(monkeypatch):
    """What a plugin author runs in their own tests: benchmark.testing.check_defense."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from benchmark import check_defense

    module = importlib.import_module("clipbench_example_plugin")
    model = check_defense(module.ExampleFinetune)
    assert _fine_tuned(model)  # it returned the defended model, not the starting one


# ------------------------------------------------- issue 21: towers, hooks, record
def test_towers_are_public_and_say_what_trains():
    import torch

    from benchmark.models import ModelConfig, create_model

    micro = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0)
    assert micro.image_tower is micro.clip.visual and not micro.text_frozen
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    image, text, every = ids(micro.image_tower.parameters()), ids(micro.text_tower.parameters()), ids(micro.parameters())
    assert image and text and not image & text and image | text | {id(micro.logit_scale)} == every
    assert all(p.requires_grad for p in micro.text_tower.parameters())
    for p in micro.text_tower.parameters():  # a view: freezing through it freezes the model's own parameters
        p.requires_grad_(False)
    assert not micro.clip.text_projection.requires_grad and not micro.clip.token_embedding.weight.requires_grad
    with torch.no_grad():  # and writes reach the model
        micro.text_tower.text_projection.zero_()
    assert float(micro.clip.text_projection.abs().sum()) == 0

    minilm = create_model(ModelConfig(arch="clipbench-minilm-rn", pretrained="embedded-v3"))
    assert minilm.text_frozen and minilm.text_tower is minilm.clip.text
    trainable = {n for n, p in minilm.text_tower.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("proj.") for n in trainable)  # only the projection trains
    saved = [k for k in minilm.state_dict() if k.startswith("clip.text.")]
    assert saved and all(k.startswith("clip.text.proj.") for k in saved)  # the frozen body is not saved


class _Recorder:
    """An objective that records its hook calls and freezes the text tower when it starts."""

    def __new__(cls, *args):
        from benchmark import ClipObjective, LossOutput

        class Recorder(ClipObjective):
            def __init__(self):
                super().__init__()
                self.calls, self.parts = [], []

            def on_train_start(self, model, ctx):
                self.calls.append(("start", ctx.step, ctx.total_steps))
                for p in model.text_tower.parameters():
                    p.requires_grad_(False)

            def on_epoch_start(self, model, epoch, ctx):
                self.calls.append(("epoch", epoch, ctx.step))

            def __call__(self, model, batch, ctx):
                out = super().__call__(model, batch, ctx)
                extra = 0.5 + ctx.step  # a custom part with known values
                self.parts.append((ctx.epoch, extra))
                return LossOutput(out.loss, {**out.parts, "extra": extra})

            def on_step_end(self, model, out, ctx):
                self.calls.append(("step", ctx.epoch, ctx.step, out.parts["extra"]))

        return Recorder()


def test_the_trainer_calls_every_hook_in_order_and_records_per_epoch_part_means():
    from benchmark import TrainConfig, train
    from benchmark.models import ModelConfig, create_model
    from benchmark.testing import caption_pairs

    model = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0)
    text_before = [p.detach().clone() for p in model.text_tower.parameters()]
    objective = _Recorder()
    stats = train(model, caption_pairs(per_class=6), objective, TrainConfig(epochs=2, batch_size=20, lr=1e-3, warmup_steps=1),
                  seed=0)
    steps = stats.steps
    assert steps == 6  # 60 pairs, batch 20, 2 epochs
    assert objective.calls[0] == ("start", 0, steps)
    assert [c for c in objective.calls if c[0] == "epoch"] == [("epoch", 1, 0), ("epoch", 2, 3)]
    assert [c[2] for c in objective.calls if c[0] == "step"] == list(range(steps))
    assert objective.calls[1] == ("epoch", 1, 0) and objective.calls[-1][0] == "step"
    # parts: one mean per epoch, of exactly the values reported
    assert stats.parts["extra"] == [sum(v for e, v in objective.parts if e == k) / 3 for k in (1, 2)] == [1.5, 4.5]
    assert stats.parts["clip"] == stats.loss_history  # the loss is the clip part here
    # on_train_start ran before the optimiser was built: the frozen text tower did not move
    assert all(torch_equal(a, b) for a, b in zip(text_before, model.text_tower.parameters()))


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b.detach())


def test_check_hooks_rejects_bad_call_sequences():
    from benchmark.testing import check_hooks

    good = [("on_train_start", 1, 0), ("on_epoch_start", 1, 0), ("on_step_end", 1, 0, {"clip": 1.0}),
            ("on_epoch_start", 2, 1), ("on_step_end", 2, 1, {"clip": 0.5})]
    check_hooks("X", good, epochs=2)
    for bad, needle in [(good[1:], "on_train_start was not called first"),
                        ([good[0], *good[2:]], "on_step_end before any on_epoch_start"),
                        ([*good[:3], *good[4:]], "on_step_end at step 1 \\(epoch 1\\), expected step 1 \\(epoch 1\\)|"
                                                 "expected"),
                        ([*good[:2], ("on_step_end", 1, 0, {"clip": float("nan")})], "not a finite float"),
                        ([*good[:2], ("on_step_end", 1, 0, {"clip": "1.0"})], "not a finite float"),
                        (good[:3], "ran for 1 epoch\\(s\\) of 2")]:
        with pytest.raises(AssertionError, match=needle):
            check_hooks("X", bad, epochs=2)


HOOKLESS = """
    import torch
    from benchmark import Defense, Stage, StepContext, TrainStats

    class Hookless(Defense):
        '''Runs its own loop on the objective: its hooks are never called.'''
        name = "hookless"
        stage = Stage.POST_TRAINING
        paper = "a test plugin"

        def defend(self, model, ctx):
            objective = self.objective(ctx)
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
            batch = ctx.clean_data.__getitems__(list(range(16)))
            out = objective(model, batch, StepContext(epoch=1, step=0, total_steps=1, generator=torch.Generator()))
            opt.zero_grad(); out.loss.backward(); opt.step()
            return TrainStats(steps=1, loss_history=[float(out.loss.detach())])
"""


def test_check_defense_exercises_the_hooks(tmp_path, monkeypatch):
    """check_defense fails a defense that bypasses the trainer's hooks, passes the README's second example."""
    from benchmark import check_defense

    (tmp_path / "hookless_mod.py").write_text(textwrap.dedent(HOOKLESS))
    (tmp_path / "anchor_finetune.py").write_text(readme_second_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    hookless = importlib.import_module("hookless_mod").Hookless
    with pytest.raises(AssertionError, match="on_train_start was not called first"):
        check_defense(hookless)
    anchor = importlib.import_module("anchor_finetune")
    model = check_defense(anchor.AnchorFinetune)
    assert _fine_tuned(model)


def _fine_tuned(model) -> bool:
    """The defended model differs from the micro CLIP the contract checks start from."""
    import torch

    from benchmark.models import ModelConfig, create_model

    ref = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0).state_dict()
    return any(not torch.equal(v, ref[k]) for k, v in model.state_dict().items() if v.is_floating_point())


def readme_second_example(readme: Path = ROOT / "README.md") -> str:
    """The README's second plugin example (the block whose first line is ``# anchor_finetune.py``)."""
    text = readme.read_text()
    start = text.index("## Add your own defense")
    section = text[start:text.find("\n## ", start + 3)]
    for block in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        first, _, body = block.partition("\n")
        if first.strip() == "# anchor_finetune.py":
            return body
    raise AssertionError("the README's 'Add your own defense' has no '# anchor_finetune.py' example")


def test_readme_covers_towers_schedule_hooks_and_parts():
    text = ROOT.joinpath("README.md").read_text()
    section = text[text.index("## Add your own defense"):]
    section = section[:section.find("\n## ", 3)]
    for needle in ("model.image_tower", "model.text_tower", "text_frozen", "defense_common.train", "method_default",
                   "on_train_start", "on_epoch_start", "on_step_end", "defense.training.parts", "defense.paper"):
        assert needle in section, needle
    code = readme_second_example()
    assert "image_tower" in code and "on_train_start" in code and "on_step_end" in code and '"l2_anchor"' in code
    mods = _imports_from_source(code)
    assert all(m == "benchmark" or not m.startswith(("benchmark", "attacks", "defenses")) for m in mods), mods


@pytest.mark.slow
def test_a_plugin_paper_schedule_and_loss_part_reach_the_result_and_the_page(tmp_path, shared_cache, capsys):
    """Issue 21's acceptance: the README's second example with ``<script>`` in its paper, run
    with --plugin: the part's per-epoch values are in the result JSON and on the cell page,
    the schedule override is printed and recorded, the script appears only escaped."""
    evil = '<script>alert("paper")</script> Li et al.'
    code = readme_second_example()
    code = re.sub(r'paper = ".*"', f"paper = {evil!r}", code)
    plugin = tmp_path / "anchor_finetune.py"
    plugin.write_text(code)
    results = tmp_path / "results"
    rc = main(["run", "--attack", "badnet", "--defense", "anchor_finetune", "--plugin", str(plugin),
               "--results-dir", str(results), "--cache-dir", str(shared_cache), "--quiet",
               *_sets(["defense_common.train.epochs=2", "defenses.anchor_finetune.anchor=0.5"])])
    captured = capsys.readouterr()
    assert rc == 0, captured
    assert ("clipbench: note: defense anchor_finetune: the suite's defense_common.train overrides its own TrainConfig "
            "default (epochs 10 -> 2,") in " ".join(captured.err.split())
    from benchmark.results import find_cell

    r = json.loads(find_cell(results, "badnet", "anchor_finetune").read_text())  # a variant folder: --set runs
    d = r["defense"]
    assert d["paper"] == evil and r["attack"]["paper"].startswith("Gu")
    assert d["schedule"]["source"] == "defense_common.train" and d["schedule"]["train"]["epochs"] == 2
    assert d["schedule"]["overridden"]["epochs"] == [10, 2] and d["schedule"]["method_default"]["epochs"] == 10
    training = d["training"]
    assert training["stage"] == "defense" and training["steps"] > 0 and len(training["loss_per_epoch"]) == 2
    anchor = training["parts"]["l2_anchor"]
    assert len(anchor) == 2 and all(v > 0 for v in anchor) and len(training["parts"]["clip"]) == 2  # the term was active
    assert anchor[1] > anchor[0]  # the image tower drifts away from its start as fine-tuning goes on

    leaderboard = pytest.importorskip("leaderboard.build")
    html = leaderboard.build_site(results, tmp_path / "site", figures=False).index.read_text()
    assert evil not in html and html.count("<script>") == 1  # only the page's own script
    assert "&lt;script&gt;alert(&#34;paper&#34;)&lt;/script&gt; Li et al." in html
    shown = ", ".join(f"{v:.4g}" for v in anchor)
    assert f"<code>l2_anchor</code> {shown}" in html


def test_schedule_record_names_the_source_and_every_overridden_field():
    from benchmark.config import parse_set
    from benchmark.plan import schedule_note, schedule_record
    from benchmark.suite import load_suite

    suite = load_suite("embedded", parse_set(["defenses.finetune.train.epochs=3"]))
    defenses = defense_registry()

    def record(name: str):
        cls = defenses.get(name)
        return schedule_record(suite, name, cls, defenses.build(name, suite.defense_overrides(name)))

    ft = record("finetune")
    assert ft["source"] == "defense_common.train + defenses.finetune.train" and ft["train"]["epochs"] == 3
    assert ft["overridden"]["epochs"] == [10, 3] and ft["overridden"]["lr"] == [1e-5, 2e-3]
    assert "beta2" not in ft["overridden"]  # equal to the method's own 0.999: not an override
    assert "overrides its own TrainConfig default (epochs 10 -> 3, lr 1e-05 -> 0.002" in schedule_note("finetune", ft)
    ro = record("roclip")
    assert ro["source"] == "poison_train" and ro["train"] == to_dict_(suite.poison_train)
    assert schedule_note("roclip", ro).startswith("defense roclip trains under the suite's poison_train")
    assert record("none") is None and schedule_note("none", None) is None
    import dataclasses

    bare = dataclasses.replace(suite, defense_common={}, defenses={})  # no shared schedule: the method's own default holds
    own = schedule_record(bare, "finetune", defenses.get("finetune"), defenses.build("finetune", bare.defense_overrides("finetune")))
    assert own["source"] == "method default" and own["overridden"] == {} and schedule_note("finetune", own) is None


def to_dict_(obj):
    from benchmark.config import to_dict

    return to_dict(obj)
