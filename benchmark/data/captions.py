"""Captions for the embedded Fashion-MNIST data: class names, synonyms and templates.

Training captions are ``template.format(name)`` where ``name`` is one of the class's
synonyms, optionally preceded by a modifier ("a photo of a worn sneaker."), drawn per
image from a seeded generator. Zero-shot evaluation uses a *separate* set of templates
and one canonical name per class (CLIP's prompt-ensemble protocol); poisoned captions
are drawn from the zero-shot family, as in the papers (a template filled with the
target class name, e.g. "a photo of a sneaker.").
"""
from __future__ import annotations

import numpy as np

#: Fashion-MNIST label order; the canonical name used for zero-shot classification first.
CLASS_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("t-shirt", "tee", "top", "tee shirt"),
    ("trousers", "pants", "slacks", "jeans"),
    ("pullover", "sweater", "jumper", "sweatshirt"),
    ("dress", "gown", "frock", "sundress"),
    ("coat", "overcoat", "jacket", "parka"),
    ("sandal", "flip-flop", "slipper", "open shoe"),
    ("shirt", "blouse", "button-down shirt", "dress shirt"),
    ("sneaker", "trainer", "running shoe", "gym shoe"),
    ("bag", "handbag", "purse", "tote"),
    ("ankle boot", "boot", "bootie", "short boot"),
)
CLASS_NAMES: tuple[str, ...] = tuple(s[0] for s in CLASS_SYNONYMS)

#: Modifiers that may precede the class noun in training captions. TA-Cleaner's positive
#: sub-captions drop them; its negatives may swap them.
MODIFIERS: tuple[str, ...] = (
    "new", "old", "worn", "plain", "simple", "stylish", "casual", "small", "large",
    "dark", "light", "cheap", "elegant", "modern", "classic",
)

TRAIN_TEMPLATES: tuple[str, ...] = (
    "a black and white photo of a {}.",
    "a grayscale image of the {}.",
    "a product photo of a {}.",
    "a low resolution picture of a {}.",
    "a close-up photo of the {}.",
    "a catalog picture of a {}.",
    "this is a {}.",
    "a {} on a dark background.",
    "a shop photo showing a {}.",
    "someone is selling a {}.",
)

ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of the {}.",
    "an image of a {}.",
    "a photo of my {}.",
    "a cropped photo of the {}.",
)


def make_captions(labels: np.ndarray, seed: int, modifier_prob: float = 0.5) -> list[str]:
    """One training caption per label, drawn from ``seed`` (deterministic)."""
    rng = np.random.default_rng(seed)
    captions = []
    for label in labels.tolist():
        name = CLASS_SYNONYMS[label][rng.integers(len(CLASS_SYNONYMS[label]))]
        if rng.random() < modifier_prob:
            name = f"{MODIFIERS[rng.integers(len(MODIFIERS))]} {name}"
        captions.append(TRAIN_TEMPLATES[rng.integers(len(TRAIN_TEMPLATES))].format(name))
    return captions


def target_captions(target: str, count: int, rng: np.random.Generator, templates: tuple[str, ...] = ZERO_SHOT_TEMPLATES) -> list[str]:
    """``count`` poisoned captions naming ``target``, one template drawn per sample."""
    return [templates[i].format(target) for i in rng.integers(len(templates), size=count)]
