"""The image-caption dataset abstraction shared by embedded and real data.

Every source yields items ``(image, caption, label)``: ``image`` a float tensor
``(C, H, W)`` in [0, 1] *before* the model's normalisation (triggers act in this space),
``caption`` a string, ``label`` the class index or -1 when unknown (web captions).
``collate`` stacks items into a :class:`Batch`. In-memory sources (the embedded data)
implement ``__getitems__`` so that the DataLoader fetches a whole batch with one
indexing operation instead of one Python call per image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass
class Batch:
    """A training or evaluation batch."""

    images: torch.Tensor  # (B, C, H, W) float in [0, 1]
    captions: list[str]
    labels: torch.Tensor  # (B,) long, -1 where unknown
    index: torch.Tensor  # (B,) positions in the dataset

    def __len__(self) -> int:
        return len(self.captions)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(self.images.to(device, non_blocking=non_blocking), self.captions,
                     self.labels.to(device, non_blocking=non_blocking), self.index)

    def pin_memory(self) -> "Batch":
        return Batch(self.images.pin_memory(), self.captions, self.labels.pin_memory(), self.index)


def collate(items: Sequence[tuple[torch.Tensor, str, int, int]]) -> Batch:
    """Stack ``(image, caption, label, index)`` items from a map-style source."""
    images, captions, labels, index = zip(*items)
    return Batch(torch.stack(list(images)), list(captions), torch.tensor(labels, dtype=torch.long),
                 torch.tensor(index, dtype=torch.long))


class PairDataset(Dataset):
    """Base class of image-caption datasets; ``class_names`` is set when labels exist."""

    class_names: tuple[str, ...] | None = None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int, int]:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class TensorPairs(PairDataset):
    """An in-memory dataset: uint8 images ``(N, C, H, W)``, captions and labels.

    Used for the embedded data and for poisoned training sets (which are small enough
    to materialise, and are cached as such).
    """

    images: torch.Tensor
    captions: list[str]
    labels: torch.Tensor
    class_names: tuple[str, ...] | None = None
    poisoned: torch.Tensor | None = field(default=None)  # bool mask, set by attacks
    #: per-image integer labels of what the image shows beyond its class (the embedded world:
    #: colour, size, position, background, mirrored; :mod:`benchmark.data.world`); None for external data
    attributes: dict[str, torch.Tensor] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        n = len(self.images)
        if len(self.captions) != n or len(self.labels) != n:
            raise ValueError(f"{n} images but {len(self.captions)} captions and {len(self.labels)} labels")
        if self.poisoned is None:
            self.poisoned = torch.zeros(n, dtype=torch.bool)
        for name, values in (self.attributes or {}).items():
            if len(values) != n:
                raise ValueError(f"attribute {name!r} has {len(values)} values for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int, int]:
        return self.images[i].float().div_(255), self.captions[i], int(self.labels[i]), int(i)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Batch(self.images[idx].float().div_(255), [self.captions[i] for i in idx.tolist()],
                     self.labels[idx], idx)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> "TensorPairs":
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        attributes = None if self.attributes is None else {k: v[idx] for k, v in self.attributes.items()}
        return TensorPairs(self.images[idx], [self.captions[i] for i in idx.tolist()], self.labels[idx],
                           self.class_names, self.poisoned[idx], attributes)


def batch_collate(batch: Batch | Sequence) -> Batch:
    """DataLoader ``collate_fn`` accepting both ``__getitems__`` batches and item lists."""
    return batch if isinstance(batch, Batch) else collate(batch)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Quantise float images in [0, 1] to uint8, as saving them to PNG would."""
    return images.clamp(0, 1).mul(255).round_().to(torch.uint8)
