"""Content digests of datasets (poison manifests record one; :mod:`benchmark.poison` checks it)."""
from __future__ import annotations

import hashlib
import json

import torch

from .dataset import TensorPairs


def pairs_digest(data: TensorPairs) -> str:
    """``sha256:<hex>`` of a dataset's images, captions, labels and poisoned mask (bit for bit)."""
    h = hashlib.sha256()
    for t in (data.images, data.labels.to(torch.int64), data.poisoned.to(torch.uint8)):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    h.update(json.dumps(list(data.captions)).encode())
    return "sha256:" + h.hexdigest()
