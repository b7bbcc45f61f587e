"""Suites: the resolved configuration of a benchmark run.

A suite YAML (``benchmark/suites/<name>.yaml`` or any path) sets the model, data,
training schedules, evaluation and per-method overrides; ``--set key=value`` overrides
it. Method configs resolve as: the method's dataclass defaults (the paper's) <
``attack_common`` / ``defense_common`` < ``attacks.<name>`` / ``defenses.<name>`` <
``--set``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .config import ConfigError, check, from_dict, merge, to_dict
from .data.external import SplitSource
from .evaluate import EvalConfig
from .models import ModelConfig
from .train import TrainConfig

SUITES_DIR = Path(__file__).parent / "suites"


@dataclass
class DataConfig:
    """Where the splits come from.

    ``embedded`` (default): the shipped Fashion-MNIST subset; its splits are named by
    ``*_split`` and ``fraction`` subsamples them. ``external``: each role (``pretrain``,
    ``train``, ``defense``, ``val``, ``test``) is a :class:`~benchmark.data.external.SplitSource`
    (CSV, Hugging Face dataset, webdataset shards or class folders), images are decoded
    and resized/cropped to the model's input size (``image_size`` overrides it) in
    ``num_workers`` DataLoader workers for evaluation and poisoning (training uses the
    stage's ``num_workers``). Zero-shot class names come from the test split, templates
    from ``templates`` (``auto``: open_clip's 80 OpenAI ImageNet templates for
    ``classes: imagenet1k``, CLIP's CIFAR templates for ``cifar10``/``cifar100``, else
    ``a photo of a {}.``). ``pretrain`` may be omitted when the model is pretrained
    (``pretrain: null`` in the suite); ``val`` is optional.
    """

    source: Literal["embedded", "external"] = "embedded"
    caption_seed: int = 0
    pretrain_split: str = "pretrain"
    train_split: str = "poison"
    defense_split: str = "defense"
    val_split: str = "val"
    test_split: str = "test"
    fraction: float = 1.0  # class-balanced, seeded subsample of every split (tests, quick looks)
    # external sources only (ignored, and kept out of cache keys, for embedded)
    pretrain: SplitSource | None = None
    train: SplitSource | None = None
    defense: SplitSource | None = None
    val: SplitSource | None = None
    test: SplitSource | None = None
    templates: str | list[str] = "auto"
    image_size: int | None = None  # None: the model's input size
    num_workers: int = 0

    def __post_init__(self) -> None:
        check(0 < self.fraction <= 1, "data.fraction", self.fraction, "use a fraction in (0, 1]")
        check(self.num_workers >= 0, "data.num_workers", self.num_workers, "use 0 (decode in the main process) or more")
        check(self.image_size is None or self.image_size >= 8, "data.image_size", self.image_size, "use null or >= 8 px")
        if self.source == "external":
            for role in ("train", "defense", "test"):
                check(getattr(self, role) is not None, f"data.{role}", None,
                      f"an external suite needs data.{role}: {{format: csv|hf|webdataset|imagefolder, path: ...}}")
            check(self.test.classes is not None, "data.test.classes", None,
                  "the zero-shot test split needs classes: imagenet1k, cifar10, folder, features or a list")
        else:
            for role in ("pretrain", "train", "defense", "val", "test"):
                check(getattr(self, role) is None, f"data.{role}", "...", "split sources need data.source: external")


@dataclass
class CostConfig:
    """Throughput assumptions for cost estimates (``clipbench run --dry-run``) before anything
    was measured; measured stage times in the cache take precedence. ``device`` labels the
    estimate (``cuda``: GPU hours)."""

    train_samples_per_s: float | None = None
    eval_samples_per_s: float | None = None
    poison_seconds: float | None = None
    device: str | None = None
    #: samples per split role where the data config does not say (external data without ``limit``,
    #: e.g. ``test: 50000`` for ImageNet val); read by :func:`benchmark.cost.split_size`
    split_sizes: dict[str, int] = field(default_factory=dict)


@dataclass
class SuiteConfig:
    """Everything a run depends on, besides the method names and seeds."""

    name: str = "embedded"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: TrainConfig | None = field(default_factory=lambda: TrainConfig(epochs=8, lr=2e-3, warmup_steps=50))
    poison_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, batch_size=128, lr=2e-3, warmup_steps=20))
    eval: EvalConfig = field(default_factory=EvalConfig)
    attack_common: dict[str, Any] = field(default_factory=dict)
    attacks: dict[str, dict] = field(default_factory=dict)
    defense_common: dict[str, Any] = field(default_factory=dict)
    defenses: dict[str, dict] = field(default_factory=dict)
    #: per-detector settings (``detectors.<name>``), over the detector's paper defaults
    detectors: dict[str, dict] = field(default_factory=dict)
    device: str = "auto"
    cost: CostConfig = field(default_factory=CostConfig)

    def __post_init__(self) -> None:
        check(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), "device", self.device,
              "use auto, cpu, cuda or cuda:N")

    def attack_overrides(self, name: str) -> dict[str, Any]:
        return merge(self.attack_common, self.attacks.get(name) or {})

    def defense_overrides(self, name: str) -> dict[str, Any]:
        return merge(self.defense_common, self.defenses.get(name) or {})

    def detector_overrides(self, name: str) -> dict[str, Any]:
        return dict(self.detectors.get(name) or {})


def suite_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
    raise ConfigError(f"unknown suite {name_or_path!r}: choose one of {known} or give a path to a .yaml file")


def load_suite(name_or_path: str = "embedded", overrides: dict[str, Any] | None = None) -> SuiteConfig:
    """Load a suite YAML and apply ``--set`` overrides (strict keys, typed values)."""
    path = suite_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"suite file {path} is not valid YAML ({exc}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"suite file {path} must be a mapping of settings")
    data = merge(raw, overrides or {})
    data.setdefault("name", path.stem)
    return from_dict(SuiteConfig, data)


def suite_dict(suite: SuiteConfig) -> dict[str, Any]:
    return to_dict(suite)
