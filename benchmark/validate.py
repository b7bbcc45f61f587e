"""The validation pass of ``clipbench run``: every input is checked before any work.

:func:`check_run` takes the parsed ``run`` arguments and returns every problem it finds,
one line each, naming the problem and the fix. The CLI prints them all and exits 2
before any stage ran and before any result, lock or cache file was written. Checked:

- list options: ``--attack``, ``--defense`` (no empty items, no name twice, ``all`` alone,
  known names) and ``--seed`` / ``--seeds`` (non-negative integers, each once);
- ``--jobs``, ``--gpus-per-task``, ``--executor`` under torchrun, ``--results-dir`` and
  ``--cache-dir`` (writable; probed without creating them);
- the suite file (found, valid YAML, known keys, typed values) and every ``--set`` value on
  its own, so that several bad values are reported together (messages name the full key,
  ``pretrain.epochs``);
- every ``--plugin`` (imports, defines a method) and every selected method (imports, no
  name conflict, its resolved config is valid, its target is a class of the data);
- the model: a known architecture, a pretrained tag of it (cached when the hub is
  offline), or a checkpoint file that exists, loads safely and matches the architecture;
- every external data source: it exists, has its columns, and its first rows' images
  decode (:func:`benchmark.data.external.probe_source`).

Data and weights are not needed to plan: with ``--dry-run`` their problems are returned
as notes (``Findings.notes``), not as problems. A problem that only shows mid-run (a
corrupt image deep in a shard) fails its cell with the file and row named (exit 1).
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class InvalidInput(ValueError):
    """Bad input found by :func:`check_run`; ``problems`` holds one line per problem (exit code 2)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)  # refuse the run
    notes: list[str] = field(default_factory=list)  # --dry-run: data/weights a real run would refuse

    def add(self, message: str) -> None:
        line = " ".join(str(message).split())  # exactly one line
        if line not in self.problems:
            self.problems.append(line)


# ------------------------------------------------------------------------------ options
def split_names(raw: str, option: str, kind: str, findings: Findings) -> list[str]:
    """The names of a comma-separated option; empty items, repeats and ``all`` among names are problems."""
    items = [s.strip() for s in str(raw).split(",")]
    names = [s for s in items if s]
    if not names:
        findings.add(f"{option} {raw!r} names no {kind}; give one or more names, comma-separated, or all")
        return []
    if len(names) < len(items):
        findings.add(f"{option} {raw!r} has an empty item; remove the stray comma: {option} {','.join(names)}")
    twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if twice:
        findings.add(f"{option} {raw!r} names {', '.join(repr(n) for n in twice)} twice; give each {kind} once: "
                     f"{option} {','.join(dict.fromkeys(names))}")
    if "all" in names and len(set(names)) > 1:
        findings.add(f"{option} {raw!r}: 'all' already means every {kind}; give either all or names")
    return list(dict.fromkeys(names))


def parse_seeds(seed: int | None, seeds: str | None, findings: Findings) -> list[int]:
    """``--seed`` / ``--seeds`` as a list of distinct non-negative integers (problems filed)."""
    if seeds is not None and seed is not None:
        findings.add(f"--seed {seed} and --seeds {seeds} contradict each other; give only one of them")
    if seeds is None:
        value = 0 if seed is None else seed
        if value < 0:
            findings.add(f"--seed {value} is negative; seeds are non-negative integers, e.g. --seed 0")
            return []
        return [value]
    out: list[int] = []
    items = [s.strip() for s in seeds.split(",")]
    if not any(items):
        findings.add(f"--seeds {seeds!r} names no seed; give non-negative integers, e.g. --seeds 0,1,2")
        return []
    if not all(items):
        findings.add(f"--seeds {seeds!r} has an empty item; remove the stray comma: --seeds {','.join(s for s in items if s)}")
    for s in filter(None, items):
        try:
            out.append(int(s))
        except ValueError:
            findings.add(f"--seeds {seeds!r}: {s!r} is not an integer; give non-negative integers, e.g. --seeds 0,1,2")
            return []
    negative = [s for s in out if s < 0]
    if negative:
        findings.add(f"--seeds {seeds!r}: seed {negative[0]} is negative; seeds are non-negative integers, e.g. --seeds 0,1,2")
    twice = [s for s in dict.fromkeys(out) if out.count(s) > 1]
    if twice:
        findings.add(f"--seeds {seeds!r} names seed {', '.join(map(str, twice))} twice (a typo?); give each seed once: "
                     f"--seeds {','.join(map(str, dict.fromkeys(out)))}")
    return [s for s in dict.fromkeys(out) if s >= 0]


def writable_problem(folder: Path, option: str) -> str | None:
    """Why ``folder`` could not be written, probed without creating it (None: writable)."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{option} {str(folder)!r} is not writable ({str(existing)!r} is not a folder); choose another with {option}"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".clipbench-write-test-"):
            pass
    except OSError as exc:
        return f"{option} {str(folder)!r} is not writable ({exc.strerror or exc}); choose another with {option}"
    return None


# ------------------------------------------------------------------------------ suite
def load_checked_suite(name: str, overrides: list[str], findings: Findings) -> Any:
    """The suite with its valid ``--set`` values (None if the suite itself is bad); every bad ``--set``
    is filed on its own."""
    from .config import ConfigError, parse_set
    from .suite import load_suite

    good: list[str] = []
    for item in overrides:
        try:
            parse_set([item])
            good.append(item)
        except ConfigError as exc:
            findings.add(str(exc))
    try:
        load_suite(name)  # the file itself first: its problems are not the --set values
    except ConfigError as exc:
        findings.add(str(exc))
        return None
    try:
        return load_suite(name, parse_set(good))
    except ConfigError as combined:
        alone_ok = []
        for item in good:  # which --set values are bad on their own
            try:
                load_suite(name, parse_set([item]))
                alone_ok.append(item)
            except ConfigError as exc:
                findings.add(str(exc))
        if len(alone_ok) == len(good):  # only their combination is invalid
            findings.add(str(combined))
            return None
        try:  # the other checks go on with the valid values, so that every problem is reported at once
            return load_suite(name, parse_set(alone_ok))
        except ConfigError as exc:
            findings.add(str(exc))
            return None


def _origin(message: str, section: str, name: str, suite: Any) -> str:
    """Name the key the user set: ``attacks.badnet.poison_rate`` came from ``attack_common`` if it is only there."""
    common = getattr(suite, "attack_common" if section == "attacks" else "defense_common") or {}
    own = (getattr(suite, section) or {}).get(name) or {}
    common_key = "attack_common" if section == "attacks" else "defense_common"

    def paths(tree: dict, prefix: str = "") -> list[str]:  # dotted keys, deepest first
        out: list[str] = []
        for k, v in tree.items():
            if isinstance(v, dict) and v:
                out += paths(v, f"{prefix}{k}.")
            out.append(f"{prefix}{k}")
        return out

    def has(tree: dict, dotted: str) -> bool:
        for part in dotted.split("."):
            if not isinstance(tree, dict) or part not in tree:
                return False
            tree = tree[part]
        return True

    for key in paths(common):  # a nested key (train.batch_size) the method's own section does not set
        if not has(own, key):
            message = re.sub(rf"\b{section}\.{re.escape(name)}\.{re.escape(key)}\b", f"{common_key}.{key}", message)
    return message


def _full_key(message: str, section: str, name: str, fields: set[str]) -> str:
    """``patch_size=40 ... does not fit`` (raised by a method's constructor) -> ``attacks.badnet.patch_size=40 ...``."""
    m = re.match(r"([a-z_][a-z0-9_]*)=", message)
    if m and m.group(1) in fields:
        return f"{section}.{name}.{message}"
    if message.startswith(f"{section}.{name}"):
        return message
    return f"{section}.{name}: {message}"


# ------------------------------------------------------------------------------ methods
def _registries(plugins: list[str], findings: Findings):
    from .plugins import load_plugins
    from .registry import RegistryError, attack_registry, defense_registry

    attacks, defenses = attack_registry(), defense_registry()
    for spec in plugins:
        try:
            load_plugins([spec], attacks=attacks, defenses=defenses)
        except RegistryError as exc:
            findings.add(str(exc))
        except Exception as exc:  # noqa: BLE001 - a plugin's import can raise anything
            findings.add(f"--plugin {spec!r} failed to import: {type(exc).__name__}: {exc}; fix it")
    return attacks, defenses


def _selected(reg: Any, names: list[str], findings: Findings) -> list[str]:
    """Known, importable names (``all``: every one); unknown, broken and conflicting ones are filed."""
    from .registry import RegistryError

    names = reg.names() if names == ["all"] else [n for n in names if n != "all"]
    out = []
    for name in names:
        if name not in reg:
            findings.add(reg.unknown_message(name))
            continue
        try:
            reg.get(name)
            out.append(name)
        except RegistryError as exc:
            findings.add(str(exc))
    return out


def _section_problems(suite: Any, attacks: Any, defenses: Any, findings: Findings) -> None:
    import difflib

    for section, reg in (("attacks", attacks), ("defenses", defenses)):
        for name in getattr(suite, section) or {}:
            if name not in reg:
                close = difflib.get_close_matches(name, reg.names(), n=1, cutoff=0.5)
                hint = f"did you mean {close[0]!r}? " if close else ""
                findings.add(f"{section}.{name}: no {reg.kind} is called {name!r}; {hint}"
                             f"choose from {', '.join(reg.names())} (or load it with --plugin)")


def _method_problems(suite: Any, reg: Any, section: str, names: list[str], seeds: list[int], image_shape: Any,
                     bundle: Any, findings: Findings) -> None:
    import dataclasses

    from .config import ConfigError, from_dict

    for name in names:
        cls = reg.get(name)
        overrides = suite.attack_overrides(name) if section == "attacks" else suite.defense_overrides(name)
        try:
            config = from_dict(cls.Config, overrides, prefix=f"{section}.{name}.")
        except ConfigError as exc:
            findings.add(_origin(str(exc), section, name, suite))
            continue
        fields = {f.name for f in dataclasses.fields(config)}
        for seed in seeds or [0]:
            try:
                cls(config, seed=seed, **({"image_shape": image_shape} if section == "attacks" else {}))
            except (ConfigError, ValueError, TypeError) as exc:
                findings.add(_origin(_full_key(str(exc), section, name, fields), section, name, suite))
                break
            except Exception as exc:  # noqa: BLE001 - a plugin's constructor: bad input all the same
                findings.add(f"{section}.{name}: {reg.kind} {name!r} cannot be built ({type(exc).__name__}: {exc}); "
                             "fix its configuration or its code")
                break
        target = getattr(config, "target", None)
        if section == "attacks" and target is None and hasattr(config, "target"):
            findings.add(f"attacks.{name}: no target class; set attack_common.target (or attacks.{name}.target) "
                         "in the suite to a class of its data, e.g. --set attack_common.target=<class>")
        elif section == "attacks" and bundle is not None and target is not None and target not in bundle.class_names:
            key = _origin(f"attacks.{name}.target", section, name, suite)
            shown = ", ".join(bundle.class_names[:12]) + (", ..." if len(bundle.class_names) > 12 else "")
            findings.add(f"{key}={target!r} is not a class of this suite's data; choose one of {shown}")


# ------------------------------------------------------------------------------ model, data
def model_problems(model: Any) -> tuple[list[str], list[str]]:
    """(problems, problems with weights a dry run does not need) of a ModelConfig, checked the
    way :func:`benchmark.models.create_model` checks them before it builds anything."""
    import json

    from .models import (CONFIG_DIR, ModelLoadError, _cached_weights, _clipbench_meta, _hf_offline, describe_download,
                         input_spec, is_checkpoint_path, shipped_weights, text_package_path)

    pretrained = model.pretrained
    shipped_cfg = CONFIG_DIR / f"{model.arch}.json"
    if shipped_cfg.is_file():  # a shipped config: checked without importing open_clip (~6 s)
        text = json.loads(shipped_cfg.read_text()).get("text_cfg", {}).get("hf_model_name")
        try:
            if text:
                text_package_path(text)
        except ModelLoadError as exc:
            return [str(exc)], []
        meta = _clipbench_meta().get(model.arch, {})
        shipped = shipped_weights(model.arch, pretrained)
        if shipped is not None:
            return ([] if shipped.is_file() else
                    [f"model.pretrained={pretrained!r}: the shipped weights {model.arch}/{pretrained} ({shipped.name}) "
                     "are missing from the installation; reinstall clipbench or rebuild them with "
                     "`python -m benchmark.pretrain_embedded`"]), []
        if pretrained and meta.get("pretrained") is not None and not is_checkpoint_path(pretrained):
            return [f"model.pretrained={pretrained!r} is not a tag of {model.arch}; choose one of "
                    f"{', '.join(meta['pretrained'])}, null (train from scratch) or a checkpoint path"], []
        if not pretrained:
            return [], []
    try:
        input_spec(model)
    except ModelLoadError as exc:
        return [str(exc)], []
    if not pretrained:
        return [], []
    if is_checkpoint_path(pretrained):
        problem = checkpoint_problem(model)
        return [], [problem] if problem else []
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model.arch, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model.arch)
        return [f"model.pretrained={pretrained!r} is not a tag of {model.arch}; choose one of "
                f"{', '.join(tags) or '(none: train from scratch with pretrained: null)'} or a checkpoint path"], []
    if _hf_offline() and _cached_weights(cfg) is None:
        return [], [f"model.pretrained={pretrained!r}: weights {model.arch}/{pretrained} are not cached and the hub is "
                    f"offline (HF_HUB_OFFLINE=1): {describe_download(model.arch, pretrained, cfg)}"]
    return [], []


def checkpoint_problem(model: Any) -> str | None:
    """Why the local checkpoint ``model.pretrained`` cannot be used for ``model.arch`` (None: it can).

    Loads it as a run would (safely: safetensors or ``torch.load(weights_only=True)``) and
    compares its keys and shapes with the architecture's, built on the meta device (no memory)."""
    import torch

    from .models import ModelLoadError, _clipbench_meta, _register_configs, load_checkpoint_file

    suffixes = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
    path = Path(model.pretrained).expanduser()
    if path.is_file() and not path.name.endswith(suffixes):
        return (f"model.pretrained={model.pretrained!r}: unknown checkpoint format {path.suffix or '(no suffix)'!r}; "
                "give a .safetensors, .pt, .pth, .bin or .ckpt state dict")
    try:
        state = load_checkpoint_file(model.pretrained)
    except ModelLoadError as exc:
        return str(exc)
    import open_clip

    _register_configs()
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in open_clip.create_model(model.arch).state_dict().items()}
    except Exception:  # noqa: BLE001 - an architecture that cannot be built on meta: build it for real
        expected = {k: tuple(v.shape) for k, v in open_clip.create_model(model.arch).state_dict().items()}
    frozen = bool(_clipbench_meta().get(model.arch, {}).get("text_frozen"))  # its text body is not in checkpoints
    missing = [k for k in expected if k not in state and not (frozen and k.startswith("text.transformer."))]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {expected[k]}" for k in expected
             if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        return (f"model.pretrained={model.pretrained!r} does not match model.arch={model.arch!r}: {len(missing)} missing "
                f"keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(wrong)} of another "
                f"shape (e.g. {wrong[:1]}); check model.arch or the file")
    return None


def data_problems(data: Any) -> list[str]:
    """Problems of the external sources of a DataConfig (existence, columns, first rows)."""
    from .config import ConfigError
    from .data.external import probe_source

    if data.source != "external":
        return []
    out = []
    for role in ("pretrain", "train", "defense", "val", "test"):
        src = getattr(data, role)
        if src is None:
            continue
        try:
            probe_source(src, role)
        except ConfigError as exc:  # DataError
            out.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. an exotic reader error: still one line, still bad input
            out.append(f"data.{role} ({src.format} {src.path}): cannot be read ({type(exc).__name__}: {exc}); check it")
    return out


# ------------------------------------------------------------------------------ the pass
def check_run(args: Any) -> Findings:
    """Every problem of a ``clipbench run`` invocation (``args`` as the CLI parses it), found
    without running anything or writing any file."""
    from .config import ConfigError

    findings = Findings()
    seeds = parse_seeds(args.seed, args.seeds, findings)
    attack_names = split_names(args.attack, "--attack", "attack", findings)
    defense_names = split_names(args.defense, "--defense", "defense", findings)
    if args.jobs is not None and args.jobs < 1:
        findings.add(f"--jobs {args.jobs} must be at least 1")
    if args.gpus_per_task is not None and args.gpus_per_task < 0:
        findings.add(f"--gpus-per-task {args.gpus_per_task} is negative; give 0 or more GPUs per stage")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.executor not in ("auto", "local"):
        findings.add(f"--executor {args.executor} cannot be combined with torchrun; torchrun runs every stage itself")
    problem = writable_problem(args.results_dir, "--results-dir")
    if problem:
        findings.add(problem)
    if not args.dry_run:  # a dry run only reads the cache
        from .cache import default_root

        problem = writable_problem(args.cache_dir or default_root(), "--cache-dir")
        if problem:
            findings.add(problem)

    suite = load_checked_suite(args.suite, list(args.overrides), findings)
    attacks_reg, defenses_reg = _registries(list(args.plugins), findings)
    attacks = _selected(attacks_reg, attack_names, findings)
    defenses = _selected(defenses_reg, defense_names, findings)
    if suite is None:
        return findings
    _section_problems(suite, attacks_reg, defenses_reg, findings)

    needs_data: list[str] = []
    model_bad, weights = model_problems(suite.model)
    for p in model_bad:
        findings.add(p)
    needs_data += weights
    bundle, image_shape = None, None
    if not model_bad or suite.data.source == "embedded":  # external data is sized by the model
        from .data.sources import open_data

        try:
            bundle = open_data(suite.data, suite.model)
            image_shape = bundle.image_shape
        except ConfigError as exc:  # e.g. classes: folder and the test folder cannot be read: planning needs it
            findings.add(str(exc))
            if suite.data.source == "external":
                from .models import input_spec

                size = suite.data.image_size or input_spec(suite.model)["image_size"]
                image_shape = (3, size, size)
    # the test split's problem is already filed when the bundle (its class names) could not be opened
    needs_data += [p for p in data_problems(suite.data) if bundle is not None or not p.startswith("data.test ")]
    if image_shape is not None:  # an unknown architecture has no input size to check triggers against
        _method_problems(suite, attacks_reg, "attacks", attacks, seeds, image_shape, bundle, findings)
    _method_problems(suite, defenses_reg, "defenses", defenses, seeds, image_shape, bundle, findings)
    for p in needs_data:
        if args.dry_run:
            line = " ".join(p.split())
            if line not in findings.notes:
                findings.notes.append(line)
        else:
            findings.add(p)
    return findings
