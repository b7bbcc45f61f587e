"""Model weights on disk: local checkpoints loaded without executing code, the hub cache.

``model.pretrained`` may be a local checkpoint file (``.safetensors``, or
``.pt``/``.pth``/``.bin``/``.ckpt`` read with ``torch.load(weights_only=True)``: loading
never executes code) or an open_clip tag whose weights come from the Hugging Face hub
cache; with ``HF_HUB_OFFLINE=1`` and no cached copy, :func:`describe_download` says what
to download and where. Every failure is a :class:`ModelLoadError` naming what to fetch.
Used by the model factory (:func:`benchmark.models.create_model`) and the validation pass.
"""
from __future__ import annotations

from pathlib import Path

import torch


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
