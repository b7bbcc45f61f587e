"""open_clip model factory: tiny embedded configs, pretrained tags, local checkpoints.

``model.pretrained`` is ``None`` (random init), an open_clip tag (``openai``,
``laion2b_s34b_b79k``: weights from the Hugging Face hub cache; with ``HF_HUB_OFFLINE=1``
and no cached copy the error says what to download and where) or a local checkpoint
file (``.safetensors``, or ``.pt``/``.pth``/``.bin`` read with
``torch.load(weights_only=True)``: loading never executes code).

``create_model`` wraps :func:`open_clip.create_model_and_transforms`. The tiny configs in
``model_configs/`` (``clipbench-tiny-rn``: a 4.6M-parameter ModifiedResNet CLIP at
32 px with a 2-layer text transformer and a 16-token context) are registered with
open_clip on first use; any open_clip name with a pretrained tag is accepted as well.

The factory's parts live by job: the wrapper :class:`ClipModel` and its tokenizer memo
in :mod:`benchmark.clip_model`, the shipped configs in :mod:`benchmark.model_archs`,
checkpoint files and the hub cache in :mod:`benchmark.checkpoints`, a frozen text body's
feature store in :mod:`benchmark.frozen_text`. Their public names are importable from
here as before.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import (CHECKPOINT_SUFFIXES, ModelLoadError, _cached_weights, _hf_offline,  # noqa: F401
                          describe_download, is_checkpoint_path, load_checkpoint_file)
from .clip_model import ClipModel, TokenCache, token_cache  # noqa: F401
from .config import check
from .frozen_text import _feature_store
from .model_archs import (CONFIG_DIR, TEXT_PACKAGES, WEIGHTS_DIR, _clipbench_meta, _register_configs,  # noqa: F401
                          shipped_weights, text_package_path)


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


def input_spec(config: ModelConfig) -> dict:
    """The model's input preprocessing, without building the model (offline, cheap).

    Returns ``image_size``, ``mean``, ``std``, ``interpolation`` and ``resize_mode`` from
    the architecture config and the pretrained tag's config (open_clip's defaults
    otherwise: OpenAI mean/std, bicubic, resize the shortest side then centre-crop).
    """
    import open_clip

    _register_configs()
    cfg = open_clip.get_model_config(config.arch)
    if cfg is None:
        import difflib

        close = difflib.get_close_matches(config.arch, open_clip.list_models(), n=3)
        raise ModelLoadError(f"unknown model.arch {config.arch!r}; did you mean {', '.join(close) or 'RN50'}? "
                             "See open_clip.list_models()")
    size = cfg["vision_cfg"].get("image_size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    pre = {}
    if config.pretrained and not is_checkpoint_path(config.pretrained):
        pre = open_clip.get_pretrained_cfg(config.arch, config.pretrained) or {}
    return {"image_size": int(size),
            "mean": tuple(pre.get("mean") or open_clip.OPENAI_DATASET_MEAN),
            "std": tuple(pre.get("std") or open_clip.OPENAI_DATASET_STD),
            "interpolation": pre.get("interpolation") or "bicubic",
            "resize_mode": pre.get("resize_mode") or "shortest"}


def create_model(config: ModelConfig, device: str | torch.device = "cpu", seed: int | None = None,
                 text_cache: Path | None = None) -> ClipModel:
    """Build (and if asked, load) the CLIP described by ``config``.

    ``config.pretrained`` is ``None`` (random init from ``seed``), a clipbench-shipped tag
    (``embedded-v3`` of ``clipbench-minilm-rn``: weights inside the package), an open_clip
    tag (weights from the Hugging Face hub cache; with no internet and no cached copy a
    :class:`ModelLoadError` names what to download and where), or a local checkpoint.
    A config whose text body is frozen (``"clipbench": {"text_frozen": true}``) gets a
    :class:`~benchmark.text_features.TextFeatureStore`, on disk under ``text_cache``
    when given (the stage cache's ``text/`` folder), else in memory only.
    """
    import open_clip

    _register_configs()
    if config.arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(config.arch, open_clip.list_models(), n=3)
        raise ModelLoadError(f"unknown model.arch {config.arch!r}; did you mean {', '.join(close) or 'RN50'}? "
                             "See open_clip.list_models()")
    meta = _clipbench_meta().get(config.arch, {})
    text_cfg = open_clip.get_model_config(config.arch).get("text_cfg", {})
    shipped_cfg = CONFIG_DIR / f"{config.arch}.json"
    if text_cfg.get("hf_model_name") and shipped_cfg.is_file():  # a missing text package fails here, named
        text_package_path(json.loads(shipped_cfg.read_text())["text_cfg"]["hf_model_name"])
    if seed is not None:
        torch.manual_seed(seed)
    pretrained = config.pretrained
    local_state = None
    shipped = shipped_weights(config.arch, pretrained)
    if shipped is not None:
        if not shipped.is_file():
            raise ModelLoadError(f"the shipped weights {config.arch}/{pretrained} ({shipped.name}) are missing from the "
                                 "installation; reinstall clipbench or rebuild them with `python -m benchmark.pretrain_embedded`")
        local_state = load_checkpoint_file(str(shipped))
        pretrained = None
    elif pretrained is not None and meta.get("pretrained") is not None and not is_checkpoint_path(pretrained):
        raise ModelLoadError(f"model.pretrained={pretrained!r} is not a tag of {config.arch}; choose one of "
                             f"{', '.join(meta['pretrained'])}, null (train from scratch) or a checkpoint path")
    elif is_checkpoint_path(pretrained):
        local_state = load_checkpoint_file(pretrained)  # before building: a bad file fails fast
        pretrained = None
    elif pretrained is not None:
        cfg = open_clip.get_pretrained_cfg(config.arch, pretrained)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(config.arch)
            raise ModelLoadError(f"model.pretrained={pretrained!r} is not a tag of {config.arch}; choose one of "
                                 f"{', '.join(tags) or '(none: train from scratch with pretrained: null)'} or a checkpoint path")
        if _hf_offline() and _cached_weights(cfg) is None:
            raise ModelLoadError(f"weights {config.arch}/{pretrained} are not cached and the hub is offline "
                                 f"(HF_HUB_OFFLINE=1): {describe_download(config.arch, pretrained, cfg)}")
    logger = logging.getLogger()
    level = logger.level
    if pretrained is None:  # open_clip warns that no weights were loaded: that is the point
        logger.setLevel(logging.ERROR)
    if text_cfg.get("hf_model_name"):  # transformers prints a load report of the unused BERT pooler
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(config.arch, pretrained=pretrained, device=device,
                                                                    weights_only=True)
    except (RuntimeError, OSError, FileNotFoundError, ValueError) as exc:
        cfg = open_clip.get_pretrained_cfg(config.arch, pretrained or "") or {}
        raise ModelLoadError(
            f"could not load pretrained weights {pretrained!r} for {config.arch} ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
            f"with no internet: {describe_download(config.arch, pretrained or '', cfg)}"
        ) from exc
    finally:
        logger.setLevel(level)
    frozen = bool(meta.get("text_frozen"))
    if frozen:
        clip.text.lock(0, freeze_layer_norm=True)
    if local_state is not None:
        try:
            missing, unexpected = clip.load_state_dict(local_state, strict=False)
            if frozen:
                missing = [k for k in missing if not k.startswith("text.transformer.")]
        except RuntimeError as exc:  # shape mismatches
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise ModelLoadError(f"checkpoint {config.pretrained!r} does not match {config.arch} ({first}); "
                                 "check model.arch") from None
        if missing or unexpected:
            raise ModelLoadError(f"checkpoint {config.pretrained!r} does not match {config.arch}: {len(missing)} missing "
                                 f"keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); "
                                 "check model.arch")
    tokenizer = token_cache(config.arch, config.context_length)
    mean = getattr(clip.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(clip.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    store = None
    if frozen:
        store = _feature_store(text_cfg["hf_model_name"], str(text_cache) if text_cache else None, config.arch,
                               config.context_length, clip.text)
    return ClipModel(clip, tokenizer, mean, std, int(size), store).to(device=device, memory_format=torch.channels_last)
