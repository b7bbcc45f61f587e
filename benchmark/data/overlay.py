"""Poisoned training sets of external (large) sources, stored as an overlay on the clean source.

At paper scale (500K-3M images) a poisoned set cannot be materialised or cached whole.
:func:`poison_overlay` runs the attack's own steps (``select``, ``poison_captions``,
``make_manifest``, then ``materialize``) but only on the samples the manifest touches
(``indices`` plus ``cross_indices``): those images are decoded at the model's input
size, the attack transforms them, and the result (uint8 images, captions, poisoned
mask, global indices) is what the poison stage caches next to the manifest.
:class:`OverlayPairs` puts it back over the clean source at load time: items at
overlay indices come from the stored tensors, every other item is decoded from the
source as usual.

``materialize`` runs on the touched subset, so an attack's ``poison_images`` receives
positions within that subset as ``index`` (the built-in attacks use it only for
bookkeeping); the images, captions and manifest are those of a full materialisation.
``overlay_sha256`` in the manifest is the digest of the stored overlay.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .dataset import PairDataset, TensorPairs


def poison_overlay(attack, data, ctx) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(manifest, overlay)`` for ``data`` (a LazyPairs or StreamPairs) poisoned by ``attack``."""
    from .digest import pairs_digest

    index = attack.select(data, ctx.target)
    captions = attack.poison_captions(data, index, ctx)
    manifest = attack.make_manifest(data, ctx, index, captions)
    touched = np.union1d(np.asarray(manifest["indices"], dtype=np.int64),
                         np.asarray(manifest.get("cross_indices", []), dtype=np.int64))
    local = {int(g): n for n, g in enumerate(touched.tolist())}
    sub = TensorPairs(data.load_uint8(touched), [data.captions[i] for i in touched.tolist()],
                      data.labels[torch.as_tensor(touched, dtype=torch.long)].clone(), data.class_names)
    local_manifest = dict(manifest)
    local_manifest["indices"] = [local[int(i)] for i in manifest["indices"]]
    local_manifest["cross_indices"] = [local[int(i)] for i in manifest.get("cross_indices", [])]
    out = attack.materialize(sub, local_manifest, ctx).data
    overlay = {"indices": torch.as_tensor(touched, dtype=torch.long), "images": out.images,
               "poisoned": out.poisoned.to(torch.uint8), "captions": list(out.captions)}
    manifest["overlay_sha256"] = pairs_digest(out)
    manifest["storage"] = "overlay"
    return manifest, overlay


class OverlayPairs(PairDataset):
    """A clean map-style source with some items replaced (the poisoned training set)."""

    def __init__(self, base, indices: torch.Tensor, images: torch.Tensor, captions: Sequence[str], poisoned: torch.Tensor):
        self.base = base
        self.class_names = base.class_names
        self.image_shape = base.image_shape
        self.num_workers = getattr(base, "num_workers", 0)
        self._pos = {int(g): n for n, g in enumerate(indices.tolist())}
        self._images = images
        self._captions = list(captions)
        self.labels = base.labels
        self.captions = list(base.captions)
        for g, n in self._pos.items():
            self.captions[g] = self._captions[n]
        self.poisoned = torch.zeros(len(base), dtype=torch.bool)
        self.poisoned[indices] = poisoned.bool()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int, int]:
        n = self._pos.get(int(i))
        if n is None:
            return self.base[i]
        return self._images[n].float().div(255), self._captions[n], int(self.labels[i]), int(i)


def apply_overlay(base, indices: torch.Tensor, images: torch.Tensor, captions: Sequence[str], poisoned: torch.Tensor):
    """The poisoned training set: an :class:`OverlayPairs`, or the stream itself with its overlay set."""
    from .external import StreamPairs

    if isinstance(base, StreamPairs):
        base.overlay = {int(g): (images[n], captions[n]) for n, g in enumerate(indices.tolist())}
        base.poisoned = torch.zeros(len(base), dtype=torch.bool)
        base.poisoned[indices] = poisoned.bool()
        return base
    return OverlayPairs(base, indices, images, captions, poisoned)
