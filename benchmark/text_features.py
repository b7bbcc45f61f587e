"""Pooled outputs of a frozen text body, computed once per distinct caption and cached.

When a CLIP's text tower is a pretrained Hugging Face encoder whose body is frozen (the
embedded default: all-MiniLM-L6-v2 with a trainable projection), the body's pooled
output of a caption never changes. :class:`TextFeatureStore` computes it once per
distinct caption and keeps it in memory and, given a folder, on disk in the stage cache
(``<cache>/text/<body digest>/<shard digest>.safetensors``), so that training pays only
for what trains (the projection) and every later stage, worker or run reads it back.

Features are computed per token length (captions of one length are batched together,
so no padding token enters a mean), in float32, always in chunks of exactly
:attr:`TextFeatureStore.batch_size` rows (a short chunk is filled up with copies of its last
caption, whose outputs are dropped), and stored as float16. With one fixed shape per
length every caption runs through the same matrix kernels whichever captions share its
chunk, so its feature does not depend on its companions (tested), and a cold and a warm
run see the same numbers. (Earlier versions ran the body in float64 for the same
guarantee, at twice the cost of the cold run's largest stage.) Shards are immutable, content-addressed by their
captions and written atomically; every process reads what the others stored before
computing anything.

Shards of the same format also ship with the package (:data:`SHIPPED`, written by
``python -m benchmark.data.build_text_features``): the features of the embedded default's
training and defense captions, so that a cold first run does not spend its largest stage
encoding them. They are read only when their body (weights digest) is the installed one.
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


#: read-only shards shipped with the package, one folder per frozen body
SHIPPED = Path(__file__).parent / "data" / "embedded" / "text"


def _digest(captions: Sequence[str]) -> str:
    h = hashlib.sha256()
    for c in captions:
        h.update(c.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


class TextFeatureStore:
    """Caption -> pooled feature (float16, on CPU) of one frozen text body."""

    batch_size = 64  #: rows per encoder call, fixed (see the module docstring)

    def __init__(self, body_id: str, folder: Path | None, encode: Callable[[torch.Tensor], torch.Tensor],
                 tokenize: Callable[[Sequence[str]], torch.Tensor], pad_id: int,
                 shipped: Path | None = SHIPPED):
        self.body_id = body_id
        self.folder = folder / body_id if folder is not None else None
        self.shipped = shipped / body_id if shipped is not None else None
        self.encode = encode  # token ids (B, L) with no padding -> pooled features (B, D)
        self.tokenize = tokenize
        self.pad_id = pad_id
        self.features: dict[str, torch.Tensor] = {}
        self.computed = 0  # captions encoded by this process (the rest came from disk)
        self._loaded: set[str] = set()
        self._scan()

    def _scan(self) -> None:
        for folder in (self.shipped, self.folder):
            if folder is not None and folder.is_dir():
                self._scan_folder(folder)

    def _scan_folder(self, folder: Path) -> None:
        for shard in sorted(folder.glob("*.safetensors")):
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

    def _write(self, captions: list[str], feats: torch.Tensor, folder: Path | None = None) -> None:
        folder = folder or self.folder
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        name = _digest(captions)
        for suffix, writer in ((".json", lambda p: Path(p).write_text(json.dumps(captions))),
                               (".safetensors", lambda p: save_file({"features": feats.contiguous()}, p))):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=suffix)
            os.close(fd)
            try:
                writer(tmp)
                os.replace(tmp, folder / f"{name}{suffix}")
            finally:
                Path(tmp).unlink(missing_ok=True)
        self._loaded.add(name)

    @torch.no_grad()
    def _compute(self, captions: list[str]) -> torch.Tensor:
        ids = self.tokenize(captions)
        lengths = (ids != self.pad_id).sum(dim=1)
        out: torch.Tensor | None = None
        size = self.batch_size
        for length in lengths.unique().tolist():
            rows = torch.nonzero(lengths == length).flatten()
            for s in range(0, len(rows), size):
                chunk = rows[s:s + size]
                batch = ids[chunk, :length]
                if len(chunk) < size:  # one shape per length: fill up with the last caption
                    batch = torch.cat([batch, batch[-1:].expand(size - len(chunk), -1)])
                feats = self.encode(batch)[:len(chunk)].float()
                if out is None:
                    out = torch.empty(len(captions), feats.shape[1])
                out[chunk] = feats
        assert out is not None
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
