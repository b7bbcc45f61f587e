"""Class names and prompt templates of zero-shot evaluation sets.

ImageNet-1K uses the names and the 80 templates that open_clip ships
(``open_clip.IMAGENET_CLASSNAMES``, ``open_clip.OPENAI_IMAGENET_TEMPLATES``: CLIP's own
prompt engineering, Radford et al. 2021), in the label order of the standard class
folders (sorted WordNet ids n01440764 ... n15075141). CIFAR-10/100 use the class names
of their Hugging Face datasets (underscores as spaces) and CLIP's 18 CIFAR templates
(CLIP repository, notebooks/Prompt_Engineering_for_ImageNet.ipynb's CIFAR section).
"""
from __future__ import annotations

from ..config import ConfigError
from .captions import CLASS_NAMES as EMBEDDED_CLASS_NAMES
from .captions import ZERO_SHOT_TEMPLATES as EMBEDDED_TEMPLATES

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR_TEMPLATES = (
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.", "a low contrast photo of a {}.",
    "a high contrast photo of a {}.", "a bad photo of a {}.", "a good photo of a {}.", "a photo of a small {}.",
    "a photo of a big {}.", "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.", "a bad photo of the {}.",
    "a good photo of the {}.", "a photo of the small {}.", "a photo of the big {}.",
)


def _open_clip_templates(kind: str) -> tuple[str, ...]:
    import open_clip

    source = open_clip.OPENAI_IMAGENET_TEMPLATES if kind == "openai_imagenet" else open_clip.SIMPLE_IMAGENET_TEMPLATES
    # open_clip ships callables (lambda c: f"a photo of a {c}."); clipbench templates are format strings
    return tuple(t("{}") if callable(t) else str(t) for t in source)


def class_preset(name: str) -> tuple[str, ...] | None:
    """Names of a known class list (``imagenet1k``, ``cifar10``), or None when not a preset."""
    if name == "imagenet1k":
        import open_clip

        return tuple(open_clip.IMAGENET_CLASSNAMES)
    if name == "cifar10":
        return CIFAR10_CLASSES
    if name == "embedded":
        return EMBEDDED_CLASS_NAMES
    return None


TEMPLATE_PRESETS = ("openai_imagenet", "simple_imagenet", "cifar", "embedded", "photo")


def templates(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Templates from a preset name or an explicit list of ``{}`` format strings."""
    if isinstance(spec, (list, tuple)):
        out = tuple(spec)
    elif spec in ("openai_imagenet", "simple_imagenet"):
        out = _open_clip_templates(spec)
    elif spec == "cifar":
        out = CIFAR_TEMPLATES
    elif spec == "embedded":
        out = EMBEDDED_TEMPLATES
    elif spec == "photo":
        out = ("a photo of a {}.",)
    else:
        raise ConfigError(f"templates={spec!r} is not a preset; choose one of {', '.join(TEMPLATE_PRESETS)} "
                          "or give a list of strings containing {}")
    if not out or not all("{}" in t for t in out):
        raise ConfigError(f"templates={list(out)!r}: every template needs a {{}} for the class name")
    return out
