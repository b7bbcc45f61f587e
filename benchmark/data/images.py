"""Decoding, validation and the model's preprocessing for real image files.

Every image of an external source goes through :func:`to_rgb` (in a DataLoader worker):

- unreadable or corrupt files raise :class:`DataError` naming the file;
- images smaller than :data:`MIN_SIDE` pixels on a side are rejected (named);
- channel layouts with one well-defined RGB meaning are converted: greyscale (``L``,
  ``1``), palette (``P``), alpha (``LA``, ``RGBA``, ``PA``: the alpha channel is dropped),
  ``CMYK``, ``YCbCr``, 16-bit greyscale (``I;16``: top 8 bits) and uint8 arrays of shape
  (H, W), (H, W, 1|3|4) or (1|3|4, H, W); anything else (float or 32-bit integer images,
  2- or 5-channel arrays) is rejected with the file named.

:func:`make_transform` is the model's own open_clip evaluation preprocessing (resize the
shortest side with the model's interpolation, centre-crop to its input size) minus
``Normalize``: images reach the trainer as float (3, S, S) in [0, 1], triggers act there,
and :meth:`benchmark.models.ClipModel.prepare` normalises.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from ..config import ConfigError

#: Smallest accepted image side in pixels (smaller files are thumbnails or broken crawls).
MIN_SIDE = 8

_CONVERTIBLE = {"RGB", "L", "1", "P", "LA", "PA", "RGBA", "RGBX", "CMYK", "YCbCr", "La", "RGBa"}


class DataError(ConfigError):
    """Bad input data (missing or corrupt file, empty caption, duplicate id): the message names it and the fix."""


def _from_array(arr: np.ndarray, name: str):
    from PIL import Image

    if arr.dtype != np.uint8:
        raise DataError(f"{name}: image array has dtype {arr.dtype}; only uint8 arrays are converted (store 8-bit images)")
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.transpose(arr, (1, 2, 0))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(arr), "RGB" if arr.shape[-1] == 3 else "RGBA")
    raise DataError(f"{name}: image array of shape {arr.shape} has no RGB meaning; store (H, W), (H, W, 3) or (H, W, 4) images")


def to_rgb(image: Any, name: str):
    """A validated RGB PIL image from a PIL image, an array, raw bytes or a file path."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(image, (bytes, bytearray, memoryview)):
            image = Image.open(io.BytesIO(bytes(image)))
        elif isinstance(image, str):
            image = Image.open(image)
        elif isinstance(image, dict) and ("bytes" in image or "path" in image):  # HF Image(decode=False)
            image = Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else Image.open(image["path"])
        elif isinstance(image, np.ndarray):
            image = _from_array(image, name)
        elif isinstance(image, torch.Tensor):
            image = _from_array(image.numpy(), name)
        image.load()
    except FileNotFoundError:
        raise DataError(f"{name}: image file is missing; restore it or remove its row") from None
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, AttributeError, TypeError) as exc:
        raise DataError(f"{name}: corrupt or unreadable image ({type(exc).__name__}: {exc}); "
                        "re-download it or remove its row") from None
    w, h = image.size
    if min(w, h) < MIN_SIDE:
        raise DataError(f"{name}: image is {w}x{h} px, smaller than {MIN_SIDE} px on a side; remove it")
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "I;16" or mode.startswith("I;16"):
        arr = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode in _CONVERTIBLE:
        return image.convert("RGB")
    raise DataError(f"{name}: image mode {mode!r} (e.g. float or 32-bit) has no well-defined 8-bit RGB conversion; "
                    "convert it to 8-bit RGB or greyscale")


class ImageTransform:
    """Picklable: RGB PIL image -> float (3, S, S) in [0, 1] (the model's preprocessing minus Normalize)."""

    def __init__(self, spec: dict):
        self.spec = dict(spec)
        self._tf = None

    def _build(self):
        import open_clip
        from torchvision import transforms as T

        tf = open_clip.image_transform(self.spec["image_size"], is_train=False, mean=self.spec.get("mean"),
                                       std=self.spec.get("std"), resize_mode=self.spec.get("resize_mode"),
                                       interpolation=self.spec.get("interpolation"))
        steps = [t for t in getattr(tf, "transforms", [tf]) if not isinstance(t, T.Normalize)]
        return T.Compose(steps)

    def __call__(self, image) -> torch.Tensor:
        if self._tf is None:
            self._tf = self._build()
        return self._tf(image)

    def __getstate__(self):
        return {"spec": self.spec, "_tf": None}


def make_transform(spec: dict) -> ImageTransform:
    """The preprocessing of a model input spec (:func:`benchmark.models.input_spec`)."""
    return ImageTransform(spec)
