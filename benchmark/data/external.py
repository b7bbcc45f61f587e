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


# The rest lives in modules of their own (one job each); their public names are re-exported
# here, so ``benchmark.data.external`` stays the one import for external data.
from .external_datasets import LazyPairs, StreamPairs  # noqa: E402
from .external_formats import open_split  # noqa: E402
from .external_probe import probe_source  # noqa: E402

__all__ = ["IMAGE_EXTENSIONS", "LazyPairs", "SplitSource", "StreamPairs", "open_split", "probe_source"]
