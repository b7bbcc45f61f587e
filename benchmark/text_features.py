"""Pooled outputs of a frozen text body, computed once per distinct caption and cached.

When a CLIP's text tower is a pretrained Hugging Face encoder whose body is frozen (the
embedded default: all-MiniLM-L6-v2 with a trainable projection), the body's pooled
output of a caption never changes. :class:`TextFeatureStore` computes it once per
distinct caption and keeps it in memory and, given a folder, on disk in the stage cache
(``<cache>/text/<body digest>/<shard digest>.safetensors``), so that training pays only
for what trains (the projection) and every later stage, worker or run reads it back.

Features are computed per token length (captions of one length are batched together,
so no padding token enters a mean), in float64, and stored as float16: the batch-dependent
rounding of the matrix kernels (~1e-15) stays far below the stored precision, so a
caption's feature does not depend on which other captions shared its batch, and a cold
and a warm run see the same numbers. Shards are immutable, content-addressed by their
captions and written atomically; every process reads what the others stored before
computing anything.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file


def _digest(captions: Sequence[str]) -> str:
    h = hashlib.sha256()
    for c in captions:
        h.update(c.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


class TextFeatureStore:
    """Caption -> pooled feature (float16, on CPU) of one frozen text body."""

    batch_size = 256

    def __init__(self, body_id: str, folder: Path | None, encode: Callable[[torch.Tensor], torch.Tensor],
                 tokenize: Callable[[Sequence[str]], torch.Tensor], pad_id: int):
        self.body_id = body_id
        self.folder = folder / body_id if folder is not None else None
        self.encode = encode  # token ids (B, L) with no padding -> pooled features (B, D)
        self.tokenize = tokenize
        self.pad_id = pad_id
        self.features: dict[str, torch.Tensor] = {}
        self.computed = 0  # captions encoded by this process (the rest came from disk)
        self._loaded: set[str] = set()
        self._scan()

    def _scan(self) -> None:
        if self.folder is None or not self.folder.is_dir():
            return
        for shard in sorted(self.folder.glob("*.safetensors")):
            if shard.stem in self._loaded:
                continue
            try:
                captions = json.loads(shard.with_suffix(".json").read_text())
                feats = load_file(str(shard))["features"]
            except (OSError, ValueError, KeyError):
                continue  # a shard being written by another process, or damaged: recompute
            if len(captions) != len(feats) or _digest(captions) != shard.stem:
                continue
            for c, f in zip(captions, feats):
                self.features.setdefault(c, f)
            self._loaded.add(shard.stem)

    def _write(self, captions: list[str], feats: torch.Tensor) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = _digest(captions)
        for suffix, writer in ((".json", lambda p: Path(p).write_text(json.dumps(captions))),
                               (".safetensors", lambda p: save_file({"features": feats.contiguous()}, p))):
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.", suffix=suffix)
            os.close(fd)
            try:
                writer(tmp)
                os.replace(tmp, self.folder / f"{name}{suffix}")
            finally:
                Path(tmp).unlink(missing_ok=True)
        self._loaded.add(name)

    @torch.no_grad()
    def _compute(self, captions: list[str]) -> torch.Tensor:
        ids = self.tokenize(captions)
        lengths = (ids != self.pad_id).sum(dim=1)
        chunks: dict[int, torch.Tensor] = {}
        for length in lengths.unique().tolist():
            rows = torch.nonzero(lengths == length).flatten()
            parts = [self.encode(ids[rows[s:s + self.batch_size], :length]).float()
                     for s in range(0, len(rows), self.batch_size)]
            chunks[length] = torch.cat(parts)
        dim = next(iter(chunks.values())).shape[1]
        out = torch.empty(len(captions), dim)
        for length, feats in chunks.items():
            out[torch.nonzero(lengths == length).flatten()] = feats
        return out.half()

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        """(len(captions), D) float32 features; missing ones are computed and stored."""
        missing = [c for c in dict.fromkeys(captions) if c not in self.features]
        if missing:
            self._scan()  # another stage or worker may have stored them meanwhile
            missing = [c for c in missing if c not in self.features]
        if missing:
            missing.sort()
            feats = self._compute(missing)
            self._write(missing, feats)
            self.computed += len(missing)
            for c, f in zip(missing, feats):
                self.features[c] = f
        return torch.stack([self.features[c] for c in captions]).float()


@functools.lru_cache(maxsize=4)
def file_digest(path: str) -> str:
    """SHA-256 (first 16 hex digits) of a weights file: the frozen body's identity."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
