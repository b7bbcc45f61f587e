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
from .evaluate import EvalConfig
from .models import ModelConfig
from .train import TrainConfig

SUITES_DIR = Path(__file__).parent / "suites"


@dataclass
class DataConfig:
    """Where the splits come from. ``embedded``: the shipped Fashion-MNIST subset."""

    source: Literal["embedded"] = "embedded"
    caption_seed: int = 0
    pretrain_split: str = "pretrain"
    train_split: str = "poison"
    defense_split: str = "defense"
    val_split: str = "val"
    test_split: str = "test"
    fraction: float = 1.0  # class-balanced, seeded subsample of every split (tests, quick looks)

    def __post_init__(self) -> None:
        check(0 < self.fraction <= 1, "data.fraction", self.fraction, "use a fraction in (0, 1]")


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
    device: str = "auto"

    def __post_init__(self) -> None:
        check(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), "device", self.device,
              "use auto, cpu, cuda or cuda:N")

    def attack_overrides(self, name: str) -> dict[str, Any]:
        return merge(self.attack_common, self.attacks.get(name) or {})

    def defense_overrides(self, name: str) -> dict[str, Any]:
        return merge(self.defense_common, self.defenses.get(name) or {})


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
