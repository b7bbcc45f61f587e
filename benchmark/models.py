"""open_clip model factory: tiny embedded configs, pretrained tags, local checkpoints.

``create_model`` wraps :func:`open_clip.create_model_and_transforms`. The tiny configs in
``model_configs/`` (``clipbench-tiny-rn``: a 4.6M-parameter ModifiedResNet CLIP at
32 px with a 2-layer text transformer and a 16-token context) are registered with
open_clip on first use; any open_clip name with a pretrained tag is accepted as well.

The wrapper :class:`ClipModel` takes images in [0, 1] (where triggers act) and does the
model's own input preparation: grey -> RGB, zero-padding or resizing to the model's
resolution, then normalisation. Text goes through open_clip's tokenizer, memoised per
caption (template captions repeat a lot).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import check

CONFIG_DIR = Path(__file__).parent / "model_configs"


@dataclass
class ModelConfig:
    """Which CLIP to build.

    ``arch`` is any open_clip model name (``RN50``, ``ViT-B-32``) or a clipbench tiny
    config; ``pretrained`` an open_clip tag (``openai``, ``laion2b_s34b_b79k``), a local
    checkpoint path, or ``None`` for random initialisation.
    """

    arch: str = "clipbench-tiny-rn"
    pretrained: str | None = None
    context_length: int | None = None

    def __post_init__(self) -> None:
        check(bool(self.arch), "model.arch", self.arch, "name an open_clip architecture, e.g. RN50")


def _register_configs() -> None:
    import open_clip

    if not all(p.stem in open_clip.list_models() for p in CONFIG_DIR.glob("*.json")):
        open_clip.add_model_config(CONFIG_DIR)


class ClipModel(nn.Module):
    """An open_clip CLIP plus its input preparation and memoised tokenizer."""

    def __init__(self, clip: nn.Module, tokenizer, mean: Sequence[float], std: Sequence[float], image_size: int):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self._token_cache: dict[str, torch.Tensor] = {}

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """[0,1] images (B, C, H, W) -> normalised model input (B, 3, S, S)."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        h, w = images.shape[-2:]
        s = self.image_size
        if (h, w) != (s, s):
            if h <= s and w <= s and s - h <= 8 and s - w <= 8:  # small gap: pad, keep pixels intact
                top, left = (s - h) // 2, (s - w) // 2
                images = F.pad(images, (left, s - w - left, top, s - h - top))
            else:
                images = F.interpolate(images, size=(s, s), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        # channels_last runs the convolutions of ResNet towers faster on CPU and GPU
        return ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def tokenize(self, captions: Sequence[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self._token_cache]
        if missing:
            for caption, tokens in zip(missing, self.tokenizer(list(missing))):
                self._token_cache[caption] = tokens
        return torch.stack([self._token_cache[c] for c in captions])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings of [0,1] images."""
        return F.normalize(self.clip.encode_image(self.prepare(images)), dim=-1)

    def encode_text(self, captions: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings of captions (strings or token ids)."""
        tokens = captions if isinstance(captions, torch.Tensor) else self.tokenize(captions)
        return F.normalize(self.clip.encode_text(tokens.to(self.logit_scale.device)), dim=-1)

    def forward(self, images: torch.Tensor, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(captions)


class ModelLoadError(RuntimeError):
    """A model or its weights could not be loaded; the message says what to fetch."""


def create_model(config: ModelConfig, device: str | torch.device = "cpu", seed: int | None = None) -> ClipModel:
    """Build (and if asked, load) the CLIP described by ``config``."""
    import open_clip

    _register_configs()
    if config.arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(config.arch, open_clip.list_models(), n=3)
        raise ModelLoadError(f"unknown model.arch {config.arch!r}; did you mean {', '.join(close) or 'RN50'}? "
                             "See open_clip.list_models()")
    if seed is not None:
        torch.manual_seed(seed)
    pretrained = config.pretrained
    logger = logging.getLogger()
    level = logger.level
    if pretrained is None:  # open_clip warns that no weights were loaded: that is the point
        logger.setLevel(logging.ERROR)
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(config.arch, pretrained=pretrained, device=device,
                                                                    weights_only=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"could not load pretrained weights {pretrained!r} for {config.arch}: {exc}. With no internet, download "
            "them elsewhere (open_clip caches under ~/.cache/huggingface) or pass a local checkpoint path as model.pretrained"
        ) from exc
    finally:
        logger.setLevel(level)
    tokenizer = open_clip.get_tokenizer(config.arch, context_length=config.context_length)
    mean = getattr(clip.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(clip.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ClipModel(clip, tokenizer, mean, std, int(size)).to(device=device, memory_format=torch.channels_last)
