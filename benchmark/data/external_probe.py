"""Probing an external source before a run (:func:`probe_source`): it exists, has its columns
or layout, and its first rows' images decode; used by :mod:`benchmark.validate`.
"""
from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any


from .images import DataError, to_rgb
from .split_source import IMAGE_EXTENSIONS, SplitSource, _expand_braces
from .external_formats import _check_columns, _class_names, _load_hf


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
