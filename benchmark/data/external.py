"""External image-caption and classification data: CSV, Hugging Face ``datasets``, webdataset shards, class folders.

One :class:`SplitSource` describes where one split (pretrain, train, defense, val, test)
comes from. Opening it reads only metadata (captions, labels, file names) and validates
it; images are decoded, validated and resized/cropped to the model's input size on
access, inside DataLoader workers (:class:`LazyPairs`, or :class:`StreamPairs` for
streamed Hugging Face sets). Items are ``(image, caption, label, index)`` as everywhere
in clipbench (:mod:`benchmark.data.dataset`).

Formats (``format``):

- ``csv``: a CSV of image path + caption, CleanCLIP's format (columns ``image,caption``
  by default: ``image_column`` / ``caption_column`` / ``separator`` change them);
  relative paths are resolved against ``root`` (default: the CSV's folder).
- ``hf``: a Hugging Face dataset, by name (read from the local datasets cache; set
  ``HF_DATASETS_OFFLINE=1`` on machines without internet) or a folder written by
  ``Dataset.save_to_disk``; ``hf_split``, ``hf_config`` select it; column mapping with
  ``image_column``, ``caption_column``, ``label_column``; ``streaming: true`` streams it
  (an IterableDataset: nothing is materialised, one pass per epoch).
- ``webdataset``: tar shards (a .tar file, a folder of them, or a ``{000..009}`` brace
  pattern) in the webdataset layout (``<key>.jpg`` + ``<key>.txt`` [+ ``<key>.cls``]).
  The shards are indexed once at open (member offsets), then read with random access,
  so shuffling, worker sharding and the poison overlay work as for the other formats.
- ``imagefolder``: ImageNet-style class folders (``root/<class>/<image>``), labels from
  the sorted folder names; ``classes: imagenet1k`` names the 1,000 ImageNet classes with
  open_clip's names (the folders must be the 1,000 WordNet ids), ``classes: folder`` uses
  the folder names.

Validation (issue 8): rows with a missing image file, an empty caption or a duplicate id
(``id_column``; the image path for CSV/class folders, the sample key for shards) are
errors naming the row and the file (``on_invalid: error``, the default) or are dropped
with a count (``on_invalid: drop``). Corrupt files, tiny images and channel layouts
without a well-defined RGB conversion are rejected when decoded, naming the file
(:func:`benchmark.data.images.to_rgb`).
"""
from __future__ import annotations

import os
import re
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from ..config import check
from .dataset import PairDataset, batch_collate, to_uint8
from .images import DataError, ImageTransform, to_rgb
from .zeroshot import class_preset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class SplitSource:
    """Where one split comes from (see the module docstring for the formats)."""

    format: Literal["csv", "hf", "webdataset", "imagefolder"] = "csv"
    path: str = ""
    image_column: str | None = None  # csv: image; hf: image; webdataset: jpg;jpeg;png;webp
    caption_column: str | None = None  # csv/hf: caption; webdataset: txt
    label_column: str | None = None  # hf: e.g. label; webdataset: cls
    id_column: str | None = None  # duplicate-id check (default: the image path / sample key)
    separator: str = ","
    root: str | None = None  # csv: base folder of relative image paths (default: the CSV's folder)
    hf_split: str = "train"
    hf_config: str | None = None
    streaming: bool = False  # hf only
    classes: str | list[str] | None = None  # imagenet1k | cifar10 | folder | features | [names]; None: no labels
    offset: int = 0  # skip the first rows (carve disjoint splits out of one source)
    limit: int | None = None  # keep at most this many rows after the offset
    on_invalid: Literal["error", "drop"] = "error"
    check_files: bool = True  # stat every image file at open (csv, imagefolder)

    def __post_init__(self) -> None:
        check(bool(self.path), "path", self.path, "give the CSV file, dataset name/folder, shards or class folder root")
        check(self.offset >= 0, "offset", self.offset, "use 0 or more rows")
        check(self.limit is None or self.limit >= 1, "limit", self.limit, "use a positive number of rows or null")
        check(not self.streaming or self.format == "hf", "streaming", self.streaming, "streaming is for format: hf only")

    def default(self, field_name: str) -> str | None:
        value = getattr(self, field_name)
        if value is not None:
            return value
        return {("csv", "image_column"): "image", ("csv", "caption_column"): "caption",
                ("hf", "image_column"): "image", ("hf", "caption_column"): "caption",
                ("webdataset", "image_column"): "jpg;jpeg;png;webp", ("webdataset", "caption_column"): "txt",
                }.get((self.format, field_name))


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


# ------------------------------------------------------------------------------ opening
def _expand_braces(pattern: str) -> list[str]:
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    a, b = m.group(1), m.group(2)
    width = len(a)
    return [p for n in range(int(a), int(b) + 1)
            for p in _expand_braces(pattern[: m.start()] + str(n).zfill(width) + pattern[m.end():])]


def _validate_rows(kind: str, names: list[str], captions: list[str] | None, ids: list[str], exists: list[bool] | None,
                   src: SplitSource, where: str) -> np.ndarray:
    """Rows to keep after the missing-file / empty-caption / duplicate-id checks."""
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for i in range(len(names)):
        if exists is not None and not exists[i]:
            problems.append((i, f"image file {names[i]!r} is missing"))
        elif captions is not None and not captions[i]:
            problems.append((i, f"empty caption for {names[i]!r}"))
        elif ids[i] in seen:
            problems.append((i, f"duplicate id {ids[i]!r} (first at row {src.offset + seen[ids[i]] + 1})"))
        else:
            seen[ids[i]] = i
    if problems and src.on_invalid == "error":
        i, what = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"{where} row {src.offset + i + 1}: {what}{more}; fix the data or set on_invalid: drop to skip "
                        "such rows")
    if problems:
        warnings.warn(f"{where}: dropped {len(problems)} invalid rows (first: row {src.offset + problems[0][0] + 1}, "
                      f"{problems[0][1]})",
                      stacklevel=2)
    bad = {i for i, _ in problems}
    return np.array([i for i in range(len(names)) if i not in bad], dtype=np.int64)


def _window(n: int, src: SplitSource, where: str) -> slice:
    if src.offset >= n:
        raise DataError(f"{where}: offset={src.offset} skips all {n} rows; lower the offset")
    stop = n if src.limit is None else min(n, src.offset + src.limit)
    return slice(src.offset, stop)


def _class_names(src: SplitSource, found: Sequence[str] | None, where: str) -> tuple[str, ...] | None:
    if src.classes is None:
        return None
    if isinstance(src.classes, list):
        names = tuple(src.classes)
    elif src.classes in ("folder", "features", "cifar100"):
        if found is None:
            raise DataError(f"{where}: classes={src.classes!r} needs class folders or a ClassLabel column")
        names = tuple(str(n).replace("_", " ") for n in found)
    else:
        names = class_preset(src.classes)
        if names is None:
            raise DataError(f"{where}: classes={src.classes!r} is not known; use imagenet1k, cifar10, folder, features "
                            "or a list of names")
    if found is not None and len(found) != len(names):
        raise DataError(f"{where}: classes={src.classes!r} has {len(names)} names but the data has {len(found)} classes; "
                        "use classes: folder/features or fix the data")
    return names


def open_split(src: SplitSource, role: str, transform: ImageTransform, image_shape: tuple[int, int, int],
               num_workers: int = 0, seed: int = 0) -> LazyPairs | StreamPairs:
    """Open (and validate the metadata of) one external split."""
    where = f"data.{role} ({src.format} {src.path})"
    opener = {"csv": _open_csv, "hf": _open_hf, "webdataset": _open_tar, "imagefolder": _open_folder}[src.format]
    return opener(src, where, transform, image_shape, num_workers, seed)


def _open_csv(src, where, transform, image_shape, num_workers, seed):
    import pandas as pd

    path = Path(src.path).expanduser()
    if not path.is_file():
        raise DataError(f"{where}: CSV file not found; check data.<split>.path")
    img_col, cap_col = src.default("image_column"), src.default("caption_column")
    try:
        df = pd.read_csv(path, sep=src.separator, dtype=str, keep_default_na=False, engine="c")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{where}: not a readable CSV ({exc}); check separator and encoding") from None
    for col in (img_col, cap_col, src.label_column, src.id_column):
        if col and col not in df.columns:
            raise DataError(f"{where}: no column {col!r} (columns: {', '.join(map(str, df.columns))}); "
                            "set image_column / caption_column")
    df = df.iloc[_window(len(df), src, where)].reset_index(drop=True)
    root = Path(src.root).expanduser() if src.root else path.parent
    paths = [p if os.path.isabs(p) else str(root / p) for p in df[img_col].tolist()]
    captions = [c.strip() for c in df[cap_col].tolist()]
    ids = df[src.id_column].tolist() if src.id_column else paths
    exists = [os.path.isfile(p) for p in paths] if src.check_files else None
    keep = _validate_rows("csv", paths, captions, ids, exists, src, where)
    labels = np.full(len(paths), -1, dtype=np.int64)
    names = None
    if src.label_column:
        labels = np.asarray(pd.to_numeric(df[src.label_column], errors="coerce").fillna(-1), dtype=np.int64)
        names = _class_names(src, None, where)
    return LazyPairs(_PathReader(paths), captions, labels, transform, names, image_shape, keep, num_workers, ids,
                     where, src.offset)


def _open_folder(src, where, transform, image_shape, num_workers, seed):
    root = Path(src.path).expanduser()
    if not root.is_dir():
        raise DataError(f"{where}: class folder root not found; check data.<split>.path")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not folders:
        raise DataError(f"{where}: no class folders under {root}; expected root/<class>/<image files>")
    paths, labels = [], []
    for label, folder in enumerate(folders):
        for f in sorted((root / folder).iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(f))
                labels.append(label)
    names = _class_names(src if src.classes is not None else SplitSource("imagefolder", src.path, classes="folder"),
                         folders, where)
    sl = _window(len(paths), src, where) if (src.offset or src.limit) else slice(None)
    paths, labels = paths[sl], labels[sl]
    keep = _validate_rows("imagefolder", paths, None, paths, None, src, where)
    captions = [f"a photo of a {names[y]}." for y in labels]  # only used if the split is trained on
    return LazyPairs(_PathReader(paths), captions, np.asarray(labels), transform, names, image_shape, keep, num_workers, paths,
                     where, src.offset)


def _index_tar(shard: str, img_exts: list[str], cap_ext: str, cls_ext: str | None) -> list[dict]:
    samples: dict[str, dict] = {}
    order: list[str] = []
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                base = os.path.basename(m.name)
                if "." not in base or base.startswith("."):
                    continue
                key = os.path.join(os.path.dirname(m.name), base.split(".", 1)[0])
                ext = base.split(".", 1)[1].lower()
                if key not in samples:
                    samples[key] = {"key": key}
                    order.append(key)
                s = samples[key]
                if ext in img_exts and "image" not in s:
                    s["image"] = (shard, m.offset_data, m.size, m.name)
                elif ext == cap_ext:
                    s["caption"] = tar.extractfile(m).read().decode("utf-8", errors="replace").strip()
                elif cls_ext and ext == cls_ext:
                    s["label"] = int(tar.extractfile(m).read().decode().strip() or -1)
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise DataError(f"webdataset shard {shard}: unreadable or corrupt tar ({exc}); re-create or remove it") from None
    return [samples[k] for k in order]


def _open_tar(src, where, transform, image_shape, num_workers, seed):
    path = Path(src.path).expanduser()
    if path.is_dir():
        shards = sorted(str(p) for p in path.glob("*.tar"))
    else:
        shards = [s for s in _expand_braces(str(path))]
    missing = [s for s in shards if not os.path.isfile(s)]
    if not shards or missing:
        raise DataError(f"{where}: shard {missing[0] if missing else str(path)!r} not found; give a .tar file, a folder "
                        "of .tar shards or a brace pattern like shards/{000..009}.tar")
    img_exts = [e.strip().lower() for e in src.default("image_column").split(";")]
    samples = [s for shard in shards for s in _index_tar(shard, img_exts, src.default("caption_column"), src.label_column)]
    samples = samples[_window(len(samples), src, where)]
    names = [s.get("image", (None, 0, 0, s["key"]))[3] if "image" in s else f"{s['key']} (no image member)" for s in samples]
    captions = [s.get("caption", "") for s in samples]
    exists = [("image" in s) for s in samples]
    keep = _validate_rows("webdataset", names, captions, [s["key"] for s in samples], exists, src, where)
    entries = [s.get("image", ("", 0, 0, s["key"])) for s in samples]
    labels = np.asarray([s.get("label", -1) for s in samples], dtype=np.int64)
    class_names = _class_names(src, None, where) if src.label_column else None
    return LazyPairs(_TarReader(entries), captions, labels, transform, class_names, image_shape, keep, num_workers,
                     [s["key"] for s in samples], where, src.offset)


class _HFStreamOpener:
    """Picklable: re-open a Hugging Face stream (one pass), images undecoded or decoded."""

    def __init__(self, src: SplitSource, image_column: str):
        self.src, self.image_column = src, image_column

    def __call__(self, decode: bool = True):
        ds = _load_hf(self.src, streaming=True)
        from datasets import Image

        if not decode:
            ds = ds.remove_columns([self.image_column])
        elif self.image_column in (ds.features or {}) and isinstance(ds.features[self.image_column], Image):
            ds = ds.cast_column(self.image_column, Image(decode=False))
        if self.src.offset:
            ds = ds.skip(self.src.offset)
        if self.src.limit is not None:
            ds = ds.take(self.src.limit)
        # ``IterableDataset.iter`` reads the whole stream even inside a DataLoader worker (``iter(ds)``
        # would shard it by worker); StreamPairs assigns records to workers itself, by global index.
        for batch in ds.iter(batch_size=256):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns)):
                yield dict(zip(columns, values))


def _load_hf(src: SplitSource, streaming: bool):
    import datasets

    path = Path(src.path).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if src.hf_split not in ds:
                    raise DataError(f"data: saved dataset {path} has splits {', '.join(ds)}, not {src.hf_split!r}; set hf_split")
                ds = ds[src.hf_split]
            return ds.to_iterable_dataset() if streaming else ds
        return datasets.load_dataset(src.path, src.hf_config, split=src.hf_split, streaming=streaming)
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, DatasetNotFoundError)
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"Hugging Face dataset {src.path!r} (split {src.hf_split!r}) cannot be loaded ({type(exc).__name__}: {first[:200]})"
            + ("; it is not in the local datasets cache and HF_DATASETS_OFFLINE=1: on a machine with internet run "
               f"`datasets.load_dataset({src.path!r}).save_to_disk(DIR)`, copy DIR here and set path: DIR"
               if offline else "; check the name, or save it with save_to_disk and give the folder as path")) from None


def _open_hf(src, where, transform, image_shape, num_workers, seed):
    from datasets import ClassLabel, Image

    img_col, cap_col = src.default("image_column"), src.default("caption_column")
    if src.streaming:
        ds = _load_hf(src, streaming=True)
        features = ds.features or {}
        _check_columns(features, (img_col, cap_col if src.classes is None else None, src.label_column), where)
        found = features[src.label_column].names if src.label_column and isinstance(features.get(src.label_column), ClassLabel) else None
        names = _class_names(src, found, where) if src.classes is not None else None
        length = src.limit
        if length is None:
            info = getattr(ds, "info", None)
            splits = getattr(info, "splits", None) or {}
            length = splits[src.hf_split].num_examples - src.offset if src.hf_split in splits else None
        if not length:
            raise DataError(f"{where}: the stream's length is unknown; set limit: N (rows to use)")
        stream = StreamPairs(_HFStreamOpener(src, img_col), int(length), img_col, cap_col, src.label_column, transform,
                             names, image_shape, where, num_workers, seed=seed)
        if src.classes is not None and src.caption_column is None:
            raise DataError(f"{where}: streamed classification sets are for training captions only; drop streaming")
        return stream
    ds = _load_hf(src, streaming=False)
    features = ds.features
    _check_columns(features, (img_col, src.label_column, src.id_column), where)
    ds = ds.select(range(*_window(len(ds), src, where).indices(len(ds))))
    if isinstance(features.get(img_col), Image):
        ds = ds.cast_column(img_col, Image(decode=False))  # decode ourselves: validation names the row
    found = features[src.label_column].names if src.label_column and isinstance(features.get(src.label_column), ClassLabel) else None
    names = _class_names(src, found, where) if src.classes is not None else None
    labels = np.asarray(ds[src.label_column], dtype=np.int64) if src.label_column else np.full(len(ds), -1, dtype=np.int64)
    if cap_col in features:
        captions = [_caption(c, "") for c in ds[cap_col]]
    elif names is not None:
        captions = [f"a photo of a {names[y]}." for y in labels]  # classification set: captions only if trained on
    else:
        raise DataError(f"{where}: no caption column {cap_col!r} (columns: {', '.join(features)}); set caption_column")
    label = f"{src.path}[{src.hf_split}]"
    ids = [str(v) for v in ds[src.id_column]] if src.id_column else [str(i) for i in range(len(ds))]
    keep = _validate_rows("hf", [f"{label} row {i}" for i in range(len(ds))], captions if cap_col in features else None,
                          ids, None, src, where)
    return LazyPairs(_HFReader(ds, img_col, label), captions, labels, transform, names, image_shape, keep, num_workers, ids,
                     where, src.offset)


def _check_columns(features, columns, where: str) -> None:
    for col in columns:
        if col and features and col not in features:
            raise DataError(f"{where}: no column {col!r} (columns: {', '.join(features)}); set image_column / "
                            "caption_column / label_column")


# ------------------------------------------------------------------------------ probing
def probe_source(src: SplitSource, role: str, rows: int = 8) -> None:
    """Check one source before a run, cheaply: it exists, has its columns (or layout), and its first
    ``rows`` images decode. Reads the metadata of those rows only, never the whole source (the full
    row checks run when the split is opened). Raises :class:`DataError` naming the source, the row
    and the fix. Used by :mod:`benchmark.validate`."""
    where = f"data.{role} ({src.format} {src.path})"
    {"csv": _probe_csv, "hf": _probe_hf, "webdataset": _probe_tar, "imagefolder": _probe_folder}[src.format](
        src, role, where, rows)


def _probe_image(image: Any, name: str, where: str, row: int | None) -> None:
    try:
        to_rgb(image, name)
    except DataError as exc:
        raise DataError(f"{where}{'' if row is None else f' row {row}'}: {exc}") from None


def _probe_csv(src, role, where, rows):
    import pandas as pd

    path = Path(src.path).expanduser()
    if not path.is_file():
        raise DataError(f"{where}: CSV file not found; set data.{role}.path to an existing file")
    try:
        df = pd.read_csv(path, sep=src.separator, dtype=str, keep_default_na=False, engine="c",
                         skiprows=range(1, src.offset + 1), nrows=rows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{where}: not a readable CSV ({' '.join(str(exc).split())}); check separator and encoding") from None
    img_col, cap_col = src.default("image_column"), src.default("caption_column")
    for col in (img_col, cap_col, src.label_column, src.id_column):
        if col and col not in df.columns:
            raise DataError(f"{where}: no column {col!r} (columns: {', '.join(map(str, df.columns))}); "
                            f"set data.{role}.image_column / caption_column or fix the header")
    if df.empty:
        raise DataError(f"{where}: no rows{f' after offset={src.offset}' if src.offset else ''}; "
                        "lower the offset or fill the CSV")
    if src.on_invalid == "drop":  # bad rows are dropped at open, by request
        return
    root = Path(src.root).expanduser() if src.root else path.parent
    for i, (image, caption) in enumerate(zip(df[img_col], df[cap_col])):
        row = src.offset + i + 1
        file = image if os.path.isabs(image) else str(root / image)
        if not caption.strip():
            raise DataError(f"{where} row {row}: empty caption for {file!r}; fix the data or set on_invalid: drop")
        if not os.path.isfile(file):
            raise DataError(f"{where} row {row}: image file {file!r} is missing; fix the path (relative paths start at "
                            f"{str(root)!r}; set data.{role}.root) or set on_invalid: drop")
        _probe_image(file, file, where, row)


def _probe_folder(src, role, where, rows):
    root = Path(src.path).expanduser()
    if not root.is_dir():
        raise DataError(f"{where}: class folder root not found; set data.{role}.path to a folder of class folders")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not folders:
        raise DataError(f"{where}: no class folders under {root}; expected root/<class>/<image files>")
    _class_names(src if src.classes is not None else SplitSource("imagefolder", src.path, classes="folder"), folders, where)
    files: list[Path] = []
    for folder in folders:
        files += [f for f in sorted((root / folder).iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS][: rows - len(files)]
        if len(files) >= rows:
            break
    if not files:
        raise DataError(f"{where}: the class folders hold no image files ({', '.join(IMAGE_EXTENSIONS)})")
    for f in files:
        _probe_image(str(f), str(f), where, None)


def _probe_tar(src, role, where, rows):
    path = Path(src.path).expanduser()
    shards = sorted(str(p) for p in path.glob("*.tar")) if path.is_dir() else _expand_braces(str(path))
    missing = [s for s in shards if not os.path.isfile(s)]
    if not shards or missing:
        raise DataError(f"{where}: shard {missing[0] if missing else str(path)!r} not found; give a .tar file, a folder "
                        "of .tar shards or a brace pattern like shards/{000..009}.tar")
    img_exts = [e.strip().lower() for e in src.default("image_column").split(";")]
    cap_ext = src.default("caption_column")
    samples: dict[str, dict] = {}
    try:
        with tarfile.open(shards[0], mode="r:") as tar:
            for m in tar:
                base = os.path.basename(m.name)
                if not m.isfile() or "." not in base or base.startswith("."):
                    continue
                key = os.path.join(os.path.dirname(m.name), base.split(".", 1)[0])
                if key not in samples and len(samples) >= rows:
                    break
                ext = base.split(".", 1)[1].lower()
                s = samples.setdefault(key, {})
                if ext in img_exts and "image" not in s:
                    s["image"] = (m.name, tar.extractfile(m).read())
                elif ext == cap_ext:
                    s["caption"] = tar.extractfile(m).read().decode("utf-8", errors="replace").strip()
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise DataError(f"{where}: shard {shards[0]} is an unreadable or corrupt tar ({exc}); re-create or remove it") from None
    if not samples:
        raise DataError(f"{where}: shard {shards[0]} holds no samples; expected <key>.jpg + <key>.{cap_ext} members")
    if src.on_invalid == "drop":
        return
    for i, (key, s) in enumerate(samples.items()):
        if "image" not in s:
            raise DataError(f"{where}: sample {key!r} of {shards[0]} has no image member ({', '.join(img_exts)}); "
                            "fix the shard or set image_column")
        if not s.get("caption"):
            raise DataError(f"{where}: sample {key!r} of {shards[0]} has no or an empty .{cap_ext} caption; fix the "
                            "shard, set caption_column or on_invalid: drop")
        _probe_image(s["image"][1], f"{shards[0]}:{s['image'][0]}", where, None)


def _probe_hf(src, role, where, rows):
    from datasets import Image

    img_col, cap_col = src.default("image_column"), src.default("caption_column")
    ds = _load_hf(src, streaming=src.streaming)
    features = ds.features or {}
    _check_columns(features, (img_col, cap_col if src.classes is None else None, src.label_column, src.id_column), where)
    if isinstance(features.get(img_col), Image):
        ds = ds.cast_column(img_col, Image(decode=False))
    if src.streaming:
        records = list(ds.skip(src.offset).take(rows)) if src.offset else list(ds.take(rows))
    else:
        if src.offset >= len(ds):
            raise DataError(f"{where}: offset={src.offset} skips all {len(ds)} rows; lower the offset")
        records = [ds[i] for i in range(src.offset, min(len(ds), src.offset + rows))]
    label = f"{src.path}[{src.hf_split}]"
    for i, record in enumerate(records):
        _probe_image(record[img_col], f"{label}[{src.offset + i}]", where, src.offset + i + 1)
