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

# The parts live in modules of their own (one job each); their public names are re-exported
# here, so ``benchmark.data.external`` stays the one import for external data.
from .external_datasets import LazyPairs, StreamPairs
from .external_formats import open_split
from .external_probe import probe_source
from .split_source import IMAGE_EXTENSIONS, SplitSource, _expand_braces  # noqa: F401

__all__ = ["IMAGE_EXTENSIONS", "LazyPairs", "SplitSource", "StreamPairs", "open_split", "probe_source"]
