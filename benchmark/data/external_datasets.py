"""Datasets over external sources: raw readers (files, tar members, Hugging Face rows) and the
:class:`LazyPairs` / :class:`StreamPairs` datasets that decode, validate and resize images on
access, inside DataLoader workers (see :mod:`benchmark.data.external`).
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from .dataset import PairDataset, batch_collate, to_uint8
from .images import DataError, ImageTransform, to_rgb


# ------------------------------------------------------------------------------ readers
class _Reader:
    """Raw access to one split's images by row; picklable (opened lazily in each worker)."""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, i: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def name(self, i: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class _PathReader(_Reader):
    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> str:
        return self.paths[i]

    def name(self, i: int) -> str:
        return self.paths[i]


class _TarReader(_Reader):
    def __init__(self, entries: list[tuple[str, int, int, str]]):
        self.entries = entries  # (shard, data offset, size, member name)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, i: int) -> bytes:
        shard, offset, size, _ = self.entries[i]
        with open(shard, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)

    def name(self, i: int) -> str:
        shard, _, _, member = self.entries[i]
        return f"{shard}:{member}"


class _HFReader(_Reader):
    def __init__(self, dataset, column: str, label: str):
        self.dataset, self.column, self.label = dataset, column, label

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, i: int) -> Any:
        return self.dataset[int(i)][self.column]

    def name(self, i: int) -> str:
        return f"{self.label}[{int(i)}]"


# ------------------------------------------------------------------------------ datasets
class LazyPairs(PairDataset):
    """A map-style image-caption dataset whose images are decoded on access.

    ``rows`` maps positions to reader rows (offset/limit, dropped rows and subsets are
    views). ``labels`` (-1 where unknown) and ``captions`` are in memory; images are
    decoded, validated and preprocessed in ``__getitem__`` (DataLoader workers).
    """

    def __init__(self, reader: _Reader, captions: Sequence[str], labels: np.ndarray, transform: ImageTransform,
                 class_names: tuple[str, ...] | None, image_shape: tuple[int, int, int], rows: np.ndarray | None = None,
                 num_workers: int = 0, ids: Sequence[str] | None = None, where: str | None = None, offset: int = 0):
        self.reader = reader
        self.where, self.offset = where, offset  # named in decoding errors: "data.train (csv x.csv) row 43: ..."
        self.rows = np.arange(len(captions)) if rows is None else np.asarray(rows, dtype=np.int64)
        self._all_captions = list(captions)
        self._all_labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.class_names = class_names
        self.image_shape = tuple(image_shape)
        self.num_workers = num_workers
        self._ids = ids
        self.labels = torch.from_numpy(self._all_labels[self.rows].copy())
        self.captions = [self._all_captions[r] for r in self.rows.tolist()]
        self.poisoned = torch.zeros(len(self.rows), dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, i: int) -> torch.Tensor:
        row = int(self.rows[i])
        try:
            return self.transform(to_rgb(self.reader.load(row), self.reader.name(row)))
        except DataError as exc:  # a corrupt image found mid-run: name the source and the row of the file
            if self.where is None:
                raise
            raise DataError(f"{self.where} row {self.offset + row + 1}: {exc}") from None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int, int]:
        return self.image(i), self.captions[i], int(self.labels[i]), int(i)

    def name(self, i: int) -> str:
        return self.reader.name(int(self.rows[i]))

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> "LazyPairs":
        idx = np.asarray(indices, dtype=np.int64)
        return LazyPairs(self.reader, self._all_captions, self._all_labels, self.transform, self.class_names,
                         self.image_shape, self.rows[idx], self.num_workers, self._ids, self.where, self.offset)

    def load_uint8(self, indices: Sequence[int] | np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """Decode the images at ``indices`` into a uint8 (k, C, S, S) tensor (in workers)."""
        sub = self.subset(indices)
        if len(sub) == 0:
            return torch.zeros((0, *self.image_shape), dtype=torch.uint8)
        loader = DataLoader(sub, batch_size=batch_size, shuffle=False, num_workers=self.num_workers,
                            collate_fn=batch_collate)
        return torch.cat([to_uint8(b.images) for b in loader])


class StreamPairs(IterableDataset):
    """A streamed Hugging Face dataset (``streaming: true``): one pass over the records per epoch.

    Record ``k`` of the stream has index ``k``; DataLoader worker ``w`` of ``W`` decodes
    the records with ``k % W == w`` (the others are skipped undecoded), so indices are the
    same whatever the worker count. Batches are shuffled within a seeded buffer of
    ``shuffle_buffer`` items, re-seeded per pass. ``overlay`` (poisoned samples) replaces
    items by index without decoding them.
    """

    class_names: tuple[str, ...] | None = None

    def __init__(self, open_stream, length: int, image_column: str, caption_column: str, label_column: str | None,
                 transform: ImageTransform, class_names, image_shape, label: str, num_workers: int = 0,
                 shuffle_buffer: int = 10_000, seed: int = 0):
        self.open_stream = open_stream  # picklable callable -> iterable of records
        self.length = length
        self.image_column, self.caption_column, self.label_column = image_column, caption_column, label_column
        self.transform = transform
        self.class_names = class_names
        self.image_shape = tuple(image_shape)
        self.label = label
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.overlay: dict[int, tuple[torch.Tensor, str]] = {}
        self._passes = 0
        self._meta: tuple[list[str], torch.Tensor] | None = None
        self.poisoned = torch.zeros(length, dtype=torch.bool)

    def __len__(self) -> int:
        return self.length

    def _records(self, decode: bool = True) -> Iterator[tuple[int, dict]]:
        for k, record in enumerate(self.open_stream(decode)):
            if k >= self.length:
                break
            yield k, record

    def _item(self, k: int, record: dict) -> tuple[torch.Tensor, str, int, int]:
        label = int(record[self.label_column]) if self.label_column else -1
        if k in self.overlay:
            image, caption = self.overlay[k]
            return image.float().div(255), caption, label, k
        caption = _caption(record.get(self.caption_column), f"{self.label}[{k}]")
        return self.transform(to_rgb(record[self.image_column], f"{self.label}[{k}]")), caption, label, k

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str, int, int]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, self._passes])
        self._passes += 1
        buffer: list = []
        for k, record in self._records():
            if k % nw != wid:
                continue
            buffer.append(self._item(k, record))
            if self.shuffle_buffer > 1 and len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))
            elif self.shuffle_buffer <= 1:
                yield buffer.pop()
        order = rng.permutation(len(buffer)) if self.shuffle_buffer > 1 else range(len(buffer))
        for j in order:
            yield buffer[j]

    def _scan(self) -> tuple[list[str], torch.Tensor]:
        if self._meta is None:
            captions, labels = [], []
            for k, record in self._records(decode=False):
                captions.append(_caption(record.get(self.caption_column), f"{self.label}[{k}]"))
                labels.append(int(record[self.label_column]) if self.label_column else -1)
            self._meta = (captions, torch.tensor(labels, dtype=torch.long))
            self.length = len(captions)
        return self._meta

    @property
    def captions(self) -> list[str]:
        """All captions (one pass over the stream without decoding images, done once)."""
        return self._scan()[0]

    @property
    def labels(self) -> torch.Tensor:
        return self._scan()[1]

    def load_uint8(self, indices: Sequence[int] | np.ndarray, batch_size: int = 256) -> torch.Tensor:
        wanted = {int(i): n for n, i in enumerate(indices)}
        out = torch.zeros((len(wanted), *self.image_shape), dtype=torch.uint8)
        for k, record in self._records():
            if k in wanted:
                out[wanted[k]] = to_uint8(self.transform(to_rgb(record[self.image_column], f"{self.label}[{k}]")))
        return out


def _caption(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)) and value:  # datasets with several captions per image: the first
        value = value[0]
    return "" if value is None else str(value).strip()
