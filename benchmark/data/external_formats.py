"""Opening an external split, one function per format (csv, imagefolder, webdataset, hf): read
the metadata, validate the rows (missing files, empty captions, duplicate ids) and return a
dataset of :mod:`benchmark.data.external_datasets`.
"""
from __future__ import annotations

import os
import tarfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .images import DataError, ImageTransform
from .zeroshot import class_preset
from .split_source import IMAGE_EXTENSIONS, SplitSource, _expand_braces
from .external_datasets import LazyPairs, StreamPairs, _HFReader, _PathReader, _TarReader, _caption


# ------------------------------------------------------------------------------ opening
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
