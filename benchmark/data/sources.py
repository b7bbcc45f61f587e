"""Data bundles: the splits, class names and templates a suite runs on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import ConfigError, to_dict
from .captions import CLASS_NAMES, ZERO_SHOT_TEMPLATES
from .dataset import TensorPairs


@dataclass
class DataBundle:
    """Access to a suite's splits plus the zero-shot vocabulary."""

    config: Any  # suite DataConfig
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    image_shape: tuple[int, int, int]

    def split(self, role: str) -> TensorPairs:
        """``role`` is one of pretrain, train, defense, val, test."""
        from . import embedded

        name = getattr(self.config, f"{role}_split")
        data = embedded.load_split(name, caption_seed=self.config.caption_seed)
        if self.config.fraction < 1:
            data = data.subset(balanced_subsample(data.labels.numpy(), self.config.fraction, seed=len(name)))
        return data

    def identity(self) -> dict[str, Any]:
        """What identifies the data in cache keys."""
        return to_dict(self.config)

    def target_index(self, target: str) -> int:
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


def open_data(config: Any) -> DataBundle:
    if config.source == "embedded":
        return DataBundle(config, CLASS_NAMES, ZERO_SHOT_TEMPLATES, (1, 28, 28))
    raise ConfigError(f"data.source={config.source!r} is not supported; use embedded")
