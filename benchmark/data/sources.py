"""Data bundles: the splits, class names and templates a suite runs on.

``embedded`` splits are in-memory :class:`TensorPairs`; ``external`` splits are
:class:`~benchmark.data.external.LazyPairs` (or ``StreamPairs``) that decode images in
DataLoader workers at the model's input size. Opening a bundle touches no data file
(``--dry-run`` works without the data); each split is opened and validated on first use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import ConfigError, to_dict
from .captions import CAPTIONS_VERSION, CLASS_NAMES, ZERO_SHOT_TEMPLATES
from .dataset import TensorPairs


@dataclass
class DataBundle:
    """Access to a suite's splits plus the zero-shot vocabulary."""

    config: Any  # suite DataConfig
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    image_shape: tuple[int, int, int]
    input_spec: dict | None = None  # external: the model's preprocessing (benchmark.models.input_spec)
    #: second zero-shot tasks on labelled attributes of the test images (embedded: colour)
    attribute_tasks: dict[str, Any] = field(default_factory=dict)

    def split(self, role: str):
        """``role`` is one of pretrain, train, defense, val, test (external val may be None)."""
        from . import embedded

        if self.config.source == "external":
            return self._external(role)
        name = getattr(self.config, f"{role}_split")
        data = embedded.load_split(name, caption_seed=self.config.caption_seed)
        if self.config.fraction < 1:
            data = data.subset(balanced_subsample(data.labels.numpy(), self.config.fraction, seed=len(name)))
        return data

    def _external(self, role: str):
        from .external import open_split
        from .images import make_transform

        src = getattr(self.config, role)
        if src is None:
            if role == "val":
                return None
            raise ConfigError(f"data.{role} is not set; this suite needs a {role} split "
                              "({format: csv|hf|webdataset|imagefolder, path: ...})")
        data = open_split(src, role, make_transform(self.input_spec), self.image_shape, self.config.num_workers,
                          seed=self.config.caption_seed)
        if self.config.fraction < 1 and hasattr(data, "subset"):
            data = data.subset(balanced_subsample(data.labels.numpy(), self.config.fraction, seed=len(role)))
        return data

    def identity(self) -> dict[str, Any]:
        """What identifies the data in cache keys.

        Embedded: the original fields (adding external options left every cached embedded
        artifact valid) and the captions' version. External: the whole data config plus
        the preprocessing.
        """
        data = to_dict(self.config)
        if self.config.source == "embedded":
            return {**{k: data[k] for k in EMBEDDED_KEYS}, "captions_version": CAPTIONS_VERSION}
        return {**data, "input_spec": to_dict(self.input_spec)}

    def target_index(self, target: str | None) -> int:
        if target is None:
            raise ConfigError("no attack target class: set attack_common.target in the suite to a class of its data")
        if target not in self.class_names:
            raise ConfigError(f"target={target!r} is not a class of this suite's data; choose one of "
                              f"{', '.join(self.class_names)}")
        return self.class_names.index(target)


def balanced_subsample(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced ``fraction`` of ``labels`` (at least 1 per class)."""
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        keep.append(rng.choice(idx, size=max(1, round(fraction * len(idx))), replace=False))
    return np.sort(np.concatenate(keep))


EMBEDDED_KEYS = ("source", "caption_seed", "pretrain_split", "train_split", "defense_split", "val_split", "test_split",
                 "fraction")


def _auto_templates(classes: Any) -> str:
    if classes == "imagenet1k":
        return "openai_imagenet"
    if classes in ("cifar10", "cifar100"):
        return "cifar"
    return "photo"


def open_data(config: Any, model: Any = None) -> DataBundle:
    """The bundle of a suite's ``data`` config; ``model`` (a ModelConfig) sets the input size of external data."""
    if config.source == "embedded":
        from ..evaluate import AttributeTask
        from .captions import COLOUR_NAMES, COLOUR_TEMPLATES

        return DataBundle(config, CLASS_NAMES, ZERO_SHOT_TEMPLATES, (3, 32, 32),
                          attribute_tasks={"colour": AttributeTask(COLOUR_NAMES, COLOUR_TEMPLATES)})
    if config.source == "external":
        from ..models import ModelConfig, input_spec
        from .zeroshot import class_preset, templates

        spec = input_spec(model if model is not None else ModelConfig())
        if config.image_size is not None:
            spec["image_size"] = config.image_size
        size = spec["image_size"]
        test = config.test
        names = class_preset(test.classes) if isinstance(test.classes, str) else (
            tuple(test.classes) if isinstance(test.classes, list) else None)
        bundle = DataBundle(config, (), templates(_auto_templates(test.classes) if config.templates == "auto"
                                                  else config.templates), (3, size, size), spec)
        if names is None:  # folder names or a ClassLabel column: read from the test split (its metadata only)
            names = bundle.split("test").class_names
        bundle.class_names = tuple(names)
        return bundle
    raise ConfigError(f"data.source={config.source!r} is not supported; use embedded or external")
