"""Checks of the model and the data a suite names, for the validation pass of ``clipbench run``.

The model: a known architecture, a pretrained tag of it (cached when the hub is offline),
or a checkpoint file that exists, loads safely and matches the architecture (compared on
the meta device). The data: every external source exists, has its columns, and its first
rows' images decode (:func:`benchmark.data.external.probe_source`). A dry run needs
neither weights nor data, so those problems are returned apart (they become notes).
Used by :func:`benchmark.validate.check_run`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def model_problems(model: Any) -> tuple[list[str], list[str]]:
    """(problems, problems with weights a dry run does not need) of a ModelConfig, checked the
    way :func:`benchmark.models.create_model` checks them before it builds anything."""
    import json

    from .checkpoints import ModelLoadError, _cached_weights, _hf_offline, describe_download, is_checkpoint_path
    from .model_archs import CONFIG_DIR, _clipbench_meta, shipped_weights, text_package_path
    from .models import input_spec

    pretrained = model.pretrained
    shipped_cfg = CONFIG_DIR / f"{model.arch}.json"
    if shipped_cfg.is_file():  # a shipped config: checked without importing open_clip (~6 s)
        text = json.loads(shipped_cfg.read_text()).get("text_cfg", {}).get("hf_model_name")
        try:
            if text:
                text_package_path(text)
        except ModelLoadError as exc:
            return [str(exc)], []
        meta = _clipbench_meta().get(model.arch, {})
        shipped = shipped_weights(model.arch, pretrained)
        if shipped is not None:
            return ([] if shipped.is_file() else
                    [f"model.pretrained={pretrained!r}: the shipped weights {model.arch}/{pretrained} ({shipped.name}) "
                     "are missing from the installation; reinstall clipbench or rebuild them with "
                     "`python -m benchmark.pretrain_embedded`"]), []
        if pretrained and meta.get("pretrained") is not None and not is_checkpoint_path(pretrained):
            return [f"model.pretrained={pretrained!r} is not a tag of {model.arch}; choose one of "
                    f"{', '.join(meta['pretrained'])}, null (train from scratch) or a checkpoint path"], []
        if not pretrained:
            return [], []
    try:
        input_spec(model)
    except ModelLoadError as exc:
        return [str(exc)], []
    if not pretrained:
        return [], []
    if is_checkpoint_path(pretrained):
        problem = checkpoint_problem(model)
        return [], [problem] if problem else []
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model.arch, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model.arch)
        return [f"model.pretrained={pretrained!r} is not a tag of {model.arch}; choose one of "
                f"{', '.join(tags) or '(none: train from scratch with pretrained: null)'} or a checkpoint path"], []
    if _hf_offline() and _cached_weights(cfg) is None:
        return [], [f"model.pretrained={pretrained!r}: weights {model.arch}/{pretrained} are not cached and the hub is "
                    f"offline (HF_HUB_OFFLINE=1): {describe_download(model.arch, pretrained, cfg)}"]
    return [], []


def checkpoint_problem(model: Any) -> str | None:
    """Why the local checkpoint ``model.pretrained`` cannot be used for ``model.arch`` (None: it can).

    Loads it as a run would (safely: safetensors or ``torch.load(weights_only=True)``) and
    compares its keys and shapes with the architecture's, built on the meta device (no memory)."""
    import torch

    from .checkpoints import ModelLoadError, load_checkpoint_file
    from .model_archs import _clipbench_meta, _register_configs

    suffixes = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
    path = Path(model.pretrained).expanduser()
    if path.is_file() and not path.name.endswith(suffixes):
        return (f"model.pretrained={model.pretrained!r}: unknown checkpoint format {path.suffix or '(no suffix)'!r}; "
                "give a .safetensors, .pt, .pth, .bin or .ckpt state dict")
    try:
        state = load_checkpoint_file(model.pretrained)
    except ModelLoadError as exc:
        return str(exc)
    import open_clip

    _register_configs()
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in open_clip.create_model(model.arch).state_dict().items()}
    except Exception:  # noqa: BLE001 - an architecture that cannot be built on meta: build it for real
        expected = {k: tuple(v.shape) for k, v in open_clip.create_model(model.arch).state_dict().items()}
    frozen = bool(_clipbench_meta().get(model.arch, {}).get("text_frozen"))  # its text body is not in checkpoints
    missing = [k for k in expected if k not in state and not (frozen and k.startswith("text.transformer."))]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {expected[k]}" for k in expected
             if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        return (f"model.pretrained={model.pretrained!r} does not match model.arch={model.arch!r}: {len(missing)} missing "
                f"keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(wrong)} of another "
                f"shape (e.g. {wrong[:1]}); check model.arch or the file")
    return None


def data_problems(data: Any) -> list[str]:
    """Problems of the external sources of a DataConfig (existence, columns, first rows)."""
    from .config import ConfigError
    from .data.external import probe_source

    if data.source != "external":
        return []
    out = []
    for role in ("pretrain", "train", "defense", "val", "test"):
        src = getattr(data, role)
        if src is None:
            continue
        try:
            probe_source(src, role)
        except ConfigError as exc:  # DataError
            out.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. an exotic reader error: still one line, still bad input
            out.append(f"data.{role} ({src.format} {src.path}): cannot be read ({type(exc).__name__}: {exc}); check it")
    return out
