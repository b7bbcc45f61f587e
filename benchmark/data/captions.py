"""Captions of the embedded world: natural sentences stating what each image shows.

Every embedded image (:mod:`benchmark.data.world`) is a Fashion-MNIST garment with a
colour, a size, a position (small items), a background and, for footwear, an orientation.
Its caption (:func:`make_captions`, :data:`CAPTIONS_VERSION` 3) names the garment (one of
:data:`CLASS_SYNONYMS`, always) and states a random subset of these attributes, each
phrased with one of its synonyms (:data:`ATTRIBUTE_SYNONYMS`): the colour in 85% of
captions, the size in 50%, the position of small items in 60%, the background in 50%,
footwear's orientation in 50%. Sentence frames vary ("a small crimson sneaker in the top
left corner on a striped background.", "there is a tiny yellow bag at the lower right,
dots behind it.", "against a charcoal backdrop, a pair of violet jeans.", "turquoise
boot, big, pointing right."). Every fact stated is true of the image; no word states
anything the image does not show (no "worn", "stylish", "new", "cheap", ...). Captions
are 4-20 words (they are encoded by a pretrained sentence encoder; cost grows with tokens).

Why the zero-shot family is in the clean captions. 20% of the captions are a zero-shot
template (:data:`ZERO_SHOT_TEMPLATES`) filled with the garment and, usually, its colour
("a photo of a red sneaker."). Without them the only training pairs phrased like the
classifier's prompts are the poisoned ones (:func:`target_captions`: a template naming
the target class, as the papers make them): in captions version 1 that let the backdoor
capture the prompt itself and clean target-class accuracy fell (sneakers 94% -> 71%
under BadNet); web data, full of "a photo of a ..." captions, has no such artefact.

The second zero-shot task reads the colour: :data:`COLOUR_NAMES` in label order and
:data:`COLOUR_TEMPLATES` (their phrasing, "a photo of a garment in {}.", avoids a/an
before the colour; captions use the same "in <colour>" construction too).
:data:`ATTRIBUTE_WORDS` lists the attribute vocabulary a counterfactual may swap
(TA-Cleaner): replacing a phrase by one of *another* label of the same attribute makes
the caption false.
"""
from __future__ import annotations

import re

import numpy as np

from .world import BACKGROUND_NAMES, COLOUR_NAMES, FOOTWEAR, POSITION_NAMES, SIZE_NAMES

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
#: garment nouns that are plural ("a pair of jeans", "there are red pants")
PLURAL_NOUNS: frozenset[str] = frozenset({"trousers", "pants", "slacks", "jeans"})

ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of the {}.",
    "an image of a {}.",
    "a photo of my {}.",
    "a cropped photo of the {}.",
)

#: Prompts of the colour zero-shot task; ``{}`` is a name of :data:`COLOUR_NAMES`.
COLOUR_TEMPLATES: tuple[str, ...] = (
    "a photo of a garment in {}.",
    "a photo of something {}.",
    "a picture of clothing in {}.",
    "an image of a piece of clothing coloured {}.",
    "something {} on a plain background.",
)

#: Synonyms per label of each attribute (label order of :mod:`benchmark.data.world`).
COLOUR_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("red", "crimson", "scarlet"),
    ("orange", "tangerine", "bright orange"),
    ("yellow", "bright yellow", "lemon yellow"),
    ("green", "bright green", "vivid green"),
    ("cyan", "turquoise", "aqua"),
    ("blue", "royal blue", "deep blue"),
    ("purple", "violet"),
    ("white",),
)
SIZE_SYNONYMS: tuple[tuple[str, ...], ...] = (("large", "big"), ("small", "little", "tiny"))
POSITION_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("centre", "center", "middle"),
    ("top left", "upper left"),
    ("top right", "upper right"),
    ("bottom left", "lower left"),
    ("bottom right", "lower right"),
)
#: adjectives ("on a striped background") and, for patterns, nouns ("dots behind it")
BACKGROUND_ADJECTIVES: tuple[tuple[str, ...], ...] = (
    ("black", "plain black"),
    ("dark grey", "dark gray", "charcoal"),
    ("striped", "horizontally striped"),
    ("dotted", "spotted", "polka dot"),
)
BACKGROUND_NOUNS: tuple[tuple[str, ...], ...] = ((), (), ("stripes", "horizontal stripes"), ("dots", "polka dots"))
#: footwear orientation, indexed by ``mirrored`` (Fashion-MNIST's footwear points left)
ORIENTATION_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("pointing left", "facing left", "with the toe to the left"),
    ("pointing right", "facing right", "with the toe to the right"),
)

ATTRIBUTE_SYNONYMS: dict[str, tuple[tuple[str, ...], ...]] = {
    "colour": COLOUR_SYNONYMS,
    "size": SIZE_SYNONYMS,
    "position": POSITION_SYNONYMS,
    "background": tuple(a + n for a, n in zip(BACKGROUND_ADJECTIVES, BACKGROUND_NOUNS)),
    "mirrored": ORIENTATION_SYNONYMS,
}
#: Every attribute word or phrase a caption may contain, per attribute.
ATTRIBUTE_WORDS: dict[str, tuple[str, ...]] = {k: tuple(w for label in v for w in label)
                                               for k, v in ATTRIBUTE_SYNONYMS.items()}
assert len(COLOUR_SYNONYMS) == len(COLOUR_NAMES) and len(SIZE_SYNONYMS) == len(SIZE_NAMES)
assert len(POSITION_SYNONYMS) == len(POSITION_NAMES) and len(BACKGROUND_ADJECTIVES) == len(BACKGROUND_NAMES)

#: Bumped whenever :func:`make_captions` changes its output; part of the data's cache identity.
CAPTIONS_VERSION = 3

#: probability that a caption states each attribute (position: small items; orientation: footwear)
MENTION = {"colour": 0.85, "size": 0.5, "position": 0.6, "background": 0.5, "mirrored": 0.5}
ZERO_SHOT_SHARE = 0.2
LIST_SHARE = 0.1

_PHOTO = ("a photo of", "photo of", "a picture of", "an image of", "a snapshot of", "a shot of")
_SHOWS = ("the image shows", "the picture shows", "this photo shows", "you can see", "we see", "here is", "this is",
          "showing")
_SHOWS_PLURAL = {"here is": "here are", "this is": "these are"}
_PLACED = ("", "", "placed ", "sitting ", "shown ")
_CENTRE_FORMS = ("in the {}", "at the {}")
_CORNER_FORMS = ("in the {} corner", "at the {}", "in the {}")
_BACKGROUND_FORMS = ("on a {} background", "against a {} backdrop", "in front of a {} background",
                     "with a {} background", "on a {} backdrop")
_PLAIN_FORMS = ("on {}",)
_PATTERN_FORMS = ("against {}", "with {} behind {pronoun}", "on a background of {}")
_CLAUSE_FORMS = ("the background is {}", "the backdrop is {}")
_PATTERN_CLAUSE = "{} behind {pronoun}"
_PRONOUNS = ("it", "them")

#: Every fixed piece of text captions are made of (for the WordNet subset's vocabulary).
CAPTION_PHRASES: tuple[str, ...] = (
    ZERO_SHOT_TEMPLATES + COLOUR_TEMPLATES + _PHOTO + _SHOWS + tuple(_SHOWS_PLURAL.values()) + _PLACED
    + _CENTRE_FORMS + _CORNER_FORMS + _BACKGROUND_FORMS + _PLAIN_FORMS + _PATTERN_FORMS + _CLAUSE_FORMS
    + (_PATTERN_CLAUSE, "a pair of", "there is", "there are", "an", "background") + _PRONOUNS
    + tuple(w for names in CLASS_SYNONYMS for w in names)
    + tuple(w for label in ATTRIBUTE_SYNONYMS.values() for names in label for w in names)
)


def article(phrase: str) -> str:
    """``a`` or ``an`` before ``phrase``."""
    return "an" if phrase[:1] in "aeiou" else "a"


def fill(template: str, phrase: str) -> str:
    """``template.format(phrase)`` with ``a {}`` turned into ``an {}`` before a vowel."""
    if article(phrase) == "an":
        template = re.sub(r"(^|\s)a \{\}", r"\1an {}", template)
    return template.format(phrase)


class _Draw:
    """Uniform choices from one row of pre-drawn uniforms (fast, deterministic)."""

    def __init__(self, row: np.ndarray):
        self.row, self.i = row, 0

    def u(self) -> float:
        self.i += 1
        return float(self.row[self.i - 1])

    def pick(self, options):
        return options[min(int(self.u() * len(options)), len(options) - 1)]


def _position_phrase(d: _Draw, label: int) -> str:
    p = d.pick(POSITION_SYNONYMS[label])
    forms = _CORNER_FORMS if label else (_CENTRE_FORMS if p != "middle" else _CENTRE_FORMS[:1])
    return d.pick(forms).format(p)


def _background_phrase(d: _Draw, label: int, pronoun: str) -> str:
    nouns = BACKGROUND_NOUNS[label]
    if nouns and d.u() < 0.4:
        return d.pick(_PATTERN_FORMS).format(d.pick(nouns), pronoun=pronoun)
    forms = _BACKGROUND_FORMS + (() if nouns else _PLAIN_FORMS)
    return d.pick(forms).format(d.pick(BACKGROUND_ADJECTIVES[label]))


def _background_clause(d: _Draw, label: int, pronoun: str) -> str:
    nouns = BACKGROUND_NOUNS[label]
    if nouns and d.u() < 0.5:
        return _PATTERN_CLAUSE.format(d.pick(nouns), pronoun=pronoun)
    return d.pick(_CLAUSE_FORMS).format(d.pick(BACKGROUND_ADJECTIVES[label]))


def caption(label: int, attrs: dict[str, int], row: np.ndarray) -> str:
    """The caption of one image from its garment ``label``, attributes and a row of uniforms."""
    d = _Draw(row)
    noun = d.pick(CLASS_SYNONYMS[label])
    plural = noun in PLURAL_NOUNS
    small = attrs["size"] == 1
    say = {k: d.u() < p for k, p in MENTION.items()}
    say["position"] &= small
    say["mirrored"] &= label in FOOTWEAR
    colour = d.pick(COLOUR_SYNONYMS[attrs["colour"]]) if say["colour"] else None
    size = d.pick(SIZE_SYNONYMS[attrs["size"]]) if say["size"] else None
    frame = d.u()
    if frame < ZERO_SHOT_SHARE:  # the classifier's prompt family, with the colour (and size)
        template = d.pick(ZERO_SHOT_TEMPLATES)
        return fill(template, " ".join(w for w in (size, colour, noun) if w))
    position = POSITION_SYNONYMS[attrs["position"]] if say["position"] else None
    if frame < ZERO_SHOT_SHARE + LIST_SHARE:  # alt-text style: "crimson sneaker, small, top left, striped background."
        colour = colour or d.pick(COLOUR_SYNONYMS[attrs["colour"]])  # alt text always names the colour
        parts = [" ".join(w for w in (colour, noun) if w)]
        if size:
            parts.append(size)
        if position:
            parts.append(d.pick(position))
        if say["background"]:
            parts.append(f"{d.pick(BACKGROUND_ADJECTIVES[attrs['background']])} background")
        if say["mirrored"]:
            parts.append(d.pick(ORIENTATION_SYNONYMS[attrs["mirrored"]]))
        return ", ".join(parts) + "."
    # a noun phrase: [a | a pair of] [size] [colour] noun [in colour]
    post_colour = colour is not None and d.u() < 0.15
    core = " ".join(w for w in (size, None if post_colour else colour, noun) if w)
    if post_colour:
        core += f" in {colour}"
    bare_plural = plural and d.u() < 0.35
    if bare_plural:
        np_ = core
    elif plural:
        np_ = f"a pair of {core}"
    else:
        np_ = f"{article(core)} {core}"
    pronoun = _PRONOUNS[bare_plural]
    trail: list[tuple[str, str]] = []  # (attribute, phrase)
    if say["position"]:
        trail.append(("position", _position_phrase(d, attrs["position"])))
    if say["mirrored"]:
        trail.append(("mirrored", d.pick(ORIENTATION_SYNONYMS[attrs["mirrored"]])))
    clause = None
    if say["background"]:
        if d.u() < 0.3:
            clause = _background_clause(d, attrs["background"], pronoun)
        else:
            trail.append(("background", _background_phrase(d, attrs["background"], pronoun)))
    if len(trail) > 1 and d.u() < 0.5:
        trail.reverse()
    kind = d.u()
    if trail and trail[0][0] != "mirrored" and not clause and kind < 0.2:
        sentence = f"{trail[0][1]}, {np_}"  # fronted: "in the top left corner, a small red sneaker."
        trail = trail[1:]
    elif kind < 0.4 and (trail or clause):  # a bare noun phrase only when more follows
        sentence = np_
    elif kind < 0.6:
        sentence = f"{d.pick(_PHOTO)} {np_}"
    elif kind < 0.75:
        sentence = f"there {'are' if bare_plural else 'is'} {np_}"
    else:
        shows = d.pick(_SHOWS)
        sentence = f"{_SHOWS_PLURAL.get(shows, shows) if bare_plural else shows} {np_}"
    for k, (attr, piece) in enumerate(trail):
        if k == 0 and attr == "position":
            piece = d.pick(_PLACED) + piece  # "a red sneaker placed in the top left corner"
        sentence += (", " if d.u() < 0.4 else " ") + piece
    if clause:
        sentence += d.pick((", ", "; ")) + clause
    return sentence + "."


#: uniforms drawn per caption (more than any caption uses)
_DRAWS = 32


def make_captions(labels: np.ndarray, seed: int, attributes: dict[str, np.ndarray] | None = None) -> list[str]:
    """One caption per image, drawn from ``seed`` (deterministic).

    ``attributes`` is the split's table (:func:`benchmark.data.world.draw_attributes`);
    without one (synthetic test data) a table is drawn from ``seed`` too.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if attributes is None:
        from .world import draw_attributes

        attributes = draw_attributes(labels, seed)
    rng = np.random.default_rng([seed, 0xCA9])
    uniforms = rng.random((len(labels), _DRAWS))
    keys = ("colour", "size", "position", "background", "mirrored")
    cols = {k: np.asarray(attributes[k]).tolist() for k in keys}
    return [caption(y, {k: cols[k][i] for k in keys}, uniforms[i]) for i, y in enumerate(labels.tolist())]


def target_captions(target: str, count: int, rng: np.random.Generator, templates: tuple[str, ...] = ZERO_SHOT_TEMPLATES) -> list[str]:
    """``count`` poisoned captions naming ``target``, one template drawn per sample."""
    return [templates[i].format(target) for i in rng.integers(len(templates), size=count)]
