"""The CLIP wrapper every stage, attack and defense sees: :class:`ClipModel`.

:class:`ClipModel` takes images in [0, 1] (where triggers act) and does the model's own
input preparation: grey -> RGB, zero-padding or resizing to the model's resolution, then
normalisation. Text goes through open_clip's tokenizer, memoised per caption (template
captions repeat a lot) in a :class:`TokenCache` shared by every model of the same
tokenizer in the process (a worker's stages tokenize the same splits), capped at
:data:`TokenCache.max_entries` so that web-scale captions cannot grow it unbounded.
Models are built by :func:`benchmark.models.create_model`.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .text_features import TextFeatureStore


class TokenCache:
    """Caption -> token ids of one tokenizer (a pure function, so sharing it is safe)."""

    max_entries = 200_000

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: dict[str, torch.Tensor] = {}

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.ids]
        if missing:
            if len(self.ids) + len(missing) > self.max_entries:
                self.ids.clear()
            for caption, tokens in zip(missing, self.tokenizer(list(missing))):
                self.ids[caption] = tokens
        return torch.stack([self.ids[c] for c in captions])


@functools.lru_cache(maxsize=8)
def token_cache(arch: str, context_length: int | None) -> TokenCache:
    """The process's :class:`TokenCache` for an open_clip tokenizer (created on first use)."""
    import open_clip

    return TokenCache(open_clip.get_tokenizer(arch, context_length=context_length))


class _TextParts(nn.Module):
    """The text encoder of an open_clip ``CLIP`` whose text layers sit on the model itself
    (token embedding, positional embedding, transformer, final norm, projection), gathered
    into one module. A view: it shares the parameters (not copies), so freezing,
    regularising or re-initialising them acts on the model. Encode with
    :meth:`ClipModel.encode_text`."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        for name in ("token_embedding", "transformer", "ln_final"):
            module = getattr(clip, name, None)
            if isinstance(module, nn.Module):
                self.add_module(name, module)
        for name in ("positional_embedding", "text_projection"):
            param = getattr(clip, name, None)
            if isinstance(param, nn.Parameter):
                self.register_parameter(name, param)

    def forward(self, *args, **kwargs):  # pragma: no cover - a view, not a model
        raise TypeError("text_tower is a view of the text parameters; encode with model.encode_text(captions)")


class ClipModel(nn.Module):
    """An open_clip CLIP plus its input preparation and memoised tokenizer.

    Towers (public API 1.3): :attr:`image_tower` and :attr:`text_tower` are the two
    encoders as ``nn.Module`` s, for defenses that regularise, prune, re-initialise or
    freeze part of a tower; :attr:`logit_scale` is the learned temperature. What trains:
    every parameter with ``requires_grad`` (the trainer builds its optimiser from them
    after :meth:`~benchmark.losses.Objective.on_train_start`). With a frozen text body
    (:attr:`text_frozen`, the embedded default's MiniLM), only the text tower's projection
    (``text_tower.proj``) trains; the body is excluded from :meth:`state_dict` (it is
    rebuilt from its package) and its pooled outputs come from a per-caption feature cache,
    so changing the body's weights has no effect on :meth:`encode_text` and is not saved.
    """

    #: State-dict prefix of a frozen text body: not saved with the model (it is rebuilt
    #: from its package), so a checkpoint holds only what trains.
    FROZEN_TEXT = "clip.text.transformer."

    def __init__(self, clip: nn.Module, tokenizer, mean: Sequence[float], std: Sequence[float], image_size: int,
                 text_features: "TextFeatureStore | None" = None):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer if isinstance(tokenizer, TokenCache) else TokenCache(tokenizer)
        self.image_size = image_size
        self.text_features = text_features  # pooled outputs of the frozen text body, per caption
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @property
    def logit_scale(self) -> nn.Parameter:
        """The learned log temperature (``exp()`` gives the logit scale); clamped to ``ln(max_logit_scale)``."""
        return self.clip.logit_scale

    @property
    def image_tower(self) -> nn.Module:
        """The image encoder (open_clip's ``visual``: a ModifiedResNet or ViT, its projection included).

        It takes normalised input (:meth:`prepare`); :meth:`encode_image` is the [0, 1] entry.
        All of it trains and is saved with the model."""
        return self.clip.visual

    @property
    def text_tower(self) -> nn.Module:
        """The text encoder: open_clip's ``text`` module (a Hugging Face body + ``proj``) when the
        model has one, else a view gathering the text layers of a plain ``CLIP``
        (``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``,
        ``text_projection``; the parameters are shared, not copied).

        With :attr:`text_frozen`, ``text_tower.transformer`` (the body) is frozen, cached
        and not saved: only ``text_tower.proj`` trains (see the class docstring)."""
        text = getattr(self.clip, "text", None)
        return text if isinstance(text, nn.Module) else _TextParts(self.clip)

    @property
    def text_frozen(self) -> bool:
        """True when the text body is frozen: its features come from a cache and only the projection trains."""
        return self.text_features is not None

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
        return self.tokenizer(captions)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings of [0,1] images."""
        return F.normalize(self.clip.encode_image(self.prepare(images)), dim=-1)

    def encode_text(self, captions: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings of captions (strings or token ids).

        With a frozen text body, a caption's pooled body output comes from
        :attr:`text_features` (computed once per caption) and only the projection runs.
        """
        device = self.logit_scale.device
        if self.text_features is not None and not isinstance(captions, torch.Tensor):
            pooled = self.text_features(list(captions)).to(device)
            return F.normalize(self.clip.text.proj(pooled), dim=-1)
        tokens = captions if isinstance(captions, torch.Tensor) else self.tokenize(captions)
        return F.normalize(self.clip.encode_text(tokens.to(device)), dim=-1)

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        if self.text_features is not None:
            prefix = kwargs.get("prefix", "") + self.FROZEN_TEXT
            for key in [k for k in state if k.startswith(prefix)]:
                del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if self.text_features is None:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(self.FROZEN_TEXT)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"state dict does not match the model: missing {missing[:3]}, "
                               f"unexpected {result.unexpected_keys[:3]}")
        return result

    def forward(self, images: torch.Tensor, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(captions)
