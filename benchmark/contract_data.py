"""The synthetic data of the contract checks (:mod:`benchmark.testing`): seeded, class-balanced
uint8 images over the embedded data's class names, with one caption per image."""
from __future__ import annotations

import torch

from .data.captions import CLASS_NAMES
from .data.dataset import TensorPairs


def synthetic_pairs(image_shape: tuple[int, int, int] = (1, 28, 28), per_class: int = 20, seed: int = 0,
                    class_names: tuple[str, ...] = CLASS_NAMES) -> TensorPairs:
    """A seeded, class-balanced set of random uint8 images with one caption per image."""
    g = torch.Generator().manual_seed(seed)
    n = per_class * len(class_names)
    labels = torch.arange(len(class_names)).repeat_interleave(per_class)
    labels = labels[torch.randperm(n, generator=g)]
    images = torch.randint(0, 256, (n, *image_shape), generator=g, dtype=torch.uint8)
    captions = [f"a synthetic picture of a {class_names[int(k)]} number {i}." for i, k in enumerate(labels)]
    return TensorPairs(images, captions, labels, tuple(class_names))


def caption_pairs(per_class: int = 12, seed: int = 0, image_shape: tuple[int, int, int] = (1, 28, 28)) -> TensorPairs:
    """:func:`synthetic_pairs` with the embedded data's training captions (template x synonym x modifier).

    Defenses that rewrite captions (EDA, sub-captions) then see realistic captions whose
    words the shipped WordNet subset covers, so the checks need no WordNet installed.
    """
    from .data.captions import make_captions

    data = synthetic_pairs(image_shape, per_class, seed)
    data.captions[:] = make_captions(data.labels.numpy(), seed)
    return data
