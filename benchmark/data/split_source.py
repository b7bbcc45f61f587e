"""Where one external split comes from: :class:`SplitSource` (format, path, columns, limits,
validation), the image file extensions and shard brace patterns. The formats are described in
:mod:`benchmark.data.external`; the readers (:mod:`benchmark.data.external_formats`), the
datasets and the probe build on this module, which imports none of them."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..config import check


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


def _expand_braces(pattern: str) -> list[str]:
    """``shard-{000..009}.tar`` -> the ten names (nested patterns expand too)."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    a, b = m.group(1), m.group(2)
    width = len(a)
    return [p for n in range(int(a), int(b) + 1)
            for p in _expand_braces(pattern[: m.start()] + str(n).zfill(width) + pattern[m.end():])]
