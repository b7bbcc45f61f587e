"""Captions for the embedded Fashion-MNIST data: class names, synonyms and templates.

Training captions are ``template.format(name)`` where ``name`` is one of the class's
synonyms, optionally preceded by a modifier ("a photo of a worn sneaker."), drawn per
image from a seeded generator over :data:`CAPTION_TEMPLATES`: the data's own templates
*and* the zero-shot family, as web captions contain "a photo of a ..." too. Zero-shot
evaluation uses the zero-shot templates and one canonical name per class (CLIP's
prompt-ensemble protocol); poisoned captions are drawn from the zero-shot family, as in
the papers (a template filled with the target class name, e.g. "a photo of a sneaker.").

Why the zero-shot family is in the clean captions (:data:`CAPTIONS_VERSION` 2). In
version 1 no clean caption used a zero-shot template, so the only pairs that did were
the poisoned ones: the backdoor captured the classifier's own prompt, and clean
target-class accuracy fell (sneakers 94% -> 71% under BadNet, 21% under Blended; CA -2.6
and -5.7 points overall), an artefact that real web data, full of "a photo of a ..."
captions, does not have. With the family shared (seed 0): clean model CA 87.8, BadNet
88.6 / ASR 98.9, Blended 88.6 / ASR 99.4.
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

#: What training captions are drawn from: the data's templates and the zero-shot family.
CAPTION_TEMPLATES: tuple[str, ...] = TRAIN_TEMPLATES + ZERO_SHOT_TEMPLATES

#: Bumped whenever :func:`make_captions` changes its output; part of the data's cache identity.
CAPTIONS_VERSION = 2


def make_captions(labels: np.ndarray, seed: int, modifier_prob: float = 0.5) -> list[str]:
    """One training caption per label, drawn from ``seed`` (deterministic)."""
    rng = np.random.default_rng(seed)
    captions = []
    for label in labels.tolist():
        name = CLASS_SYNONYMS[label][rng.integers(len(CLASS_SYNONYMS[label]))]
        if rng.random() < modifier_prob:
            name = f"{MODIFIERS[rng.integers(len(MODIFIERS))]} {name}"
        captions.append(CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))].format(name))
    return captions


def target_captions(target: str, count: int, rng: np.random.Generator, templates: tuple[str, ...] = ZERO_SHOT_TEMPLATES) -> list[str]:
    """``count`` poisoned captions naming ``target``, one template drawn per sample."""
    return [templates[i].format(target) for i in rng.integers(len(templates), size=count)]
