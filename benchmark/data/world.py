"""The embedded world (version 3): RGB scenes composed from Fashion-MNIST items.

Each embedded image is one shipped Fashion-MNIST item (28x28 grey, Xiao et al. 2017)
of the same split, drawn onto a 32x32 RGB canvas with attributes that are *visible* and
that its caption (:mod:`benchmark.data.captions`) states:

===========  ======================================================================
attribute    values (label order)
===========  ======================================================================
colour       red, orange, yellow, green, cyan, blue, purple, white: the garment's grey
             intensities tint the colour (white = untinted); dark garments are lifted
             (shade = 0.35 + 0.65 * intensity) so that their colour shows
size         large (26-28 px, roughly centred, +-1 px) or small (18-20 px, downscaled
             with an antialiasing triangle filter)
position     centre, top left, top right, bottom left, bottom right (small items; a
             large item is centred, label 0)
background   black, dark grey (plain), striped (horizontal 2-px stripes every 4 rows),
             dotted (1-px dots on a 4-px grid); the patterns are dim grey, so the
             garment stands out and the colour is the garment's only. No checkerboard:
             BadNet's trigger is a 3x3 checkerboard, and a 3x3 window of these
             patterns never shows one
mirrored     1 = flipped left-right. Only footwear (sandal, sneaker, ankle boot) is
             mirrored: Fashion-MNIST's footwear points its toe to the left (checked on
             a rendered grid), mirrored footwear points it right
===========  ======================================================================

Why: the defenses act on language (RoCLIP retrieves captions, CleanCLIP aligns a caption
with its EDA rewrite, TA-Cleaner swaps words for counterfactuals). With captions that
only name the class there is nothing for them to act on; here every caption states
facts about its image beyond the class, and each fact can be checked against the
image. Colour also gives a second zero-shot task (``COLOUR_NAMES``).

Attributes are drawn per split from a fixed seed, independently of the class and
stratified within each class (each class sees every colour, size and background
equally often), so no attribute predicts the garment. The table (:func:`draw_attributes`)
is written by :mod:`benchmark.data.build_world` and shipped; :func:`compose` renders the
images at load time (no image array is shipped). Rendering is exact integer arithmetic
(the resampling runs as float32 matrix products over integers below 2^24, hence exact;
compositing uses integer lookup tables), so the bytes are identical on every machine,
BLAS and thread count.
"""
from __future__ import annotations

import numpy as np

SIDE = 32  #: canvas side in pixels
ITEM = 28  #: Fashion-MNIST item side

COLOUR_NAMES: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
#: uint8 RGB of each colour at full intensity (well separated in hue; white = untinted)
COLOUR_RGB = np.array([
    (255, 40, 40), (255, 140, 0), (255, 240, 30), (40, 220, 40),
    (0, 230, 240), (50, 90, 255), (190, 60, 255), (255, 255, 255),
], dtype=np.int64)
SIZE_NAMES: tuple[str, ...] = ("large", "small")
POSITION_NAMES: tuple[str, ...] = ("centre", "top left", "top right", "bottom left", "bottom right")
BACKGROUND_NAMES: tuple[str, ...] = ("black", "dark grey", "striped", "dotted")
#: Fashion-MNIST labels of footwear (sandal, sneaker, ankle boot): the only items mirrored
FOOTWEAR: tuple[int, ...] = (5, 7, 9)
ATTRIBUTES: tuple[str, ...] = ("colour", "size", "position", "background", "mirrored")
#: integer columns of the shipped table: the attributes plus where the item is drawn
TABLE_COLUMNS: tuple[str, ...] = ATTRIBUTES + ("side", "x", "y")

LARGE_SIDES = (26, 27, 28)
SMALL_SIDES = (18, 19, 20)
#: shade = LIFT + (1 - LIFT) * intensity: dark garments stay visibly coloured
LIFT = 0.35
#: intensities at and above ALPHA_KNEE (of 255) are opaque; below, the garment fades into the background
ALPHA_KNEE = 24


#: grey levels of the backgrounds (0 = black); patterns index into it
LEVELS = np.array([0, 45, 55, 90], dtype=np.int64)


def background_levels() -> np.ndarray:
    """``(4, SIDE, SIDE)`` indices into :data:`LEVELS`: the four background patterns."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    out = np.zeros((len(BACKGROUND_NAMES), SIDE, SIDE), dtype=np.int64)
    out[1] = 1  # plain dark grey
    out[2] = np.where((y % 4) < 2, 2, 0)  # horizontal 2-px stripes, 2-px gaps
    out[3] = np.where((y % 4 == 1) & (x % 4 == 1), 3, 0)  # 1-px dots on a 4-px grid
    return out


def backgrounds() -> np.ndarray:
    """The four background patterns, ``(4, SIDE, SIDE)`` uint8 grey."""
    return LEVELS[background_levels()].astype(np.uint8)


def composite_lut() -> np.ndarray:
    """``(colours * levels * 256, 3)`` uint8: the RGB pixel of colour k over level l at grey g.

    Row ``(k * len(LEVELS) + l) * 256 + g``. The garment is ``shade(g) * colour / 255``
    with ``shade = 255 * LIFT + (1 - LIFT) * g`` (dark garments lifted so their colour
    shows); it covers the background with opacity ``min(1, g / ALPHA_KNEE)`` (the
    item's black surround is transparent, its antialiased edges blend). Integers only.
    """
    g = np.arange(256, dtype=np.int64)
    alpha = np.minimum(256, (256 * g + ALPHA_KNEE // 2) // ALPHA_KNEE)  # 0..256
    shade = np.round(255 * LIFT + (1 - LIFT) * g).astype(np.int64)  # 0..255
    fg = (shade[None, :, None] * COLOUR_RGB[:, None, :] + 127) // 255  # (k, g, c)
    lut = (LEVELS[None, :, None, None] * (256 - alpha)[None, None, :, None]
           + alpha[None, None, :, None] * fg[:, None] + 128) >> 8  # (k, l, g, c)
    return lut.reshape(-1, 3).astype(np.uint8)


def resample_weights(side: int, source: int = ITEM) -> np.ndarray:
    """``(side, source)`` integer weights summing to 256 per row: a triangle (antialiasing) filter.

    The filter's support is the scale factor (at least one source pixel), as PIL's
    antialiased bilinear resize; weights are rounded to integers with the rows' sums kept
    at exactly 256, so the resize is exact integer arithmetic.
    """
    if side == source:
        return np.eye(side, dtype=np.int64) * 256
    scale = source / side
    support = max(scale, 1.0)
    centres = (np.arange(side) + 0.5) * scale
    pos = np.arange(source) + 0.5
    w = np.clip(1 - np.abs(pos[None, :] - centres[:, None]) / support, 0, None)
    w = 256 * w / w.sum(1, keepdims=True)
    out = np.floor(w).astype(np.int64)
    for i in range(side):  # hand the rounding remainder to the largest fractions
        rest = 256 - out[i].sum()
        out[i, np.argsort(-(w[i] - out[i]), kind="stable")[:rest]] += 1
    return out


def draw_attributes(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The attribute table of one split: int64 columns :data:`TABLE_COLUMNS`, one row per item.

    Within each class, colour, size and background are balanced permutations (every
    value equally often, up to one), positions of small items and the mirroring of
    footwear too; sides and jitter are uniform. Depends only on ``labels`` and ``seed``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    rng = np.random.default_rng([seed, 0x3011D])
    t = {k: np.zeros(n, dtype=np.int64) for k in TABLE_COLUMNS}

    def balanced(idx: np.ndarray, k: int) -> np.ndarray:
        return rng.permutation(np.resize(rng.permutation(k), len(idx)))

    for cls in range(int(labels.max(initial=-1)) + 1):
        idx = np.flatnonzero(labels == cls)
        t["colour"][idx] = balanced(idx, len(COLOUR_NAMES))
        t["size"][idx] = balanced(idx, len(SIZE_NAMES))
        t["background"][idx] = balanced(idx, len(BACKGROUND_NAMES))
        small = idx[t["size"][idx] == 1]
        t["position"][small] = balanced(small, len(POSITION_NAMES))
        if cls in FOOTWEAR:
            t["mirrored"][idx] = balanced(idx, 2)
    large = t["size"] == 0
    t["side"] = np.where(large, rng.choice(LARGE_SIDES, n), rng.choice(SMALL_SIDES, n))
    room = SIDE - t["side"]
    jitter = rng.integers(-1, 2, size=(2, n))
    margin = rng.integers(1, 3, size=(2, n))  # corners: 1-2 px from the edges
    centre = room // 2
    x = np.where(t["position"] % 2 == 1, margin[0], room - margin[0])  # top/bottom left: 1, 3
    y = np.where(t["position"] <= 2, margin[1], room - margin[1])  # top: 1, 2
    central = t["position"] == 0
    t["x"] = np.clip(np.where(central, centre + jitter[0], x), 0, room)
    t["y"] = np.clip(np.where(central, centre + jitter[1], y), 0, room)
    return t


def compose(items: np.ndarray, table: dict[str, np.ndarray]) -> np.ndarray:
    """Render ``(N, 3, SIDE, SIDE)`` uint8 scenes from ``(N, 28, 28)`` uint8 items and their table."""
    items = np.asarray(items)
    if items.dtype != np.uint8 or items.shape[1:] != (ITEM, ITEM):
        raise ValueError(f"items must be uint8 (N, {ITEM}, {ITEM}), got {items.dtype} {items.shape}")
    n = len(items)
    if any(len(table[k]) != n for k in TABLE_COLUMNS):
        raise ValueError(f"attribute table rows do not match the {n} items")
    grey = np.zeros((n, SIDE, SIDE), dtype=np.uint8)
    mirrored = table["mirrored"].astype(bool)
    for side in np.unique(table["side"]):
        rows = np.flatnonzero(table["side"] == side)
        src = items[rows].astype(np.float32)
        src[mirrored[rows]] = src[mirrored[rows]][:, :, ::-1]
        w = resample_weights(int(side)).astype(np.float32)
        # (W X) W^T over integers < 2^24: exact in float32 whatever the summation order
        out = np.matmul(np.matmul(w, src), w.T)
        out = np.floor(out / 65536 + 0.5).astype(np.uint8)
        s = int(side)
        ys = table["y"][rows, None, None] + np.arange(s)[None, :, None]
        xs = table["x"][rows, None, None] + np.arange(s)[None, None, :]
        grey[rows[:, None, None], ys, xs] = out
    # one table look-up per pixel and channel: (colour, background level, grey) -> R, G, B
    levels = background_levels()
    base = ((np.arange(len(COLOUR_NAMES))[:, None, None, None] * len(LEVELS) + levels[None]) * 256)
    base = base.reshape(-1, SIDE, SIDE).astype(np.int16)  # < 8 * 4 * 256
    key = base[table["colour"] * len(BACKGROUND_NAMES) + table["background"]]
    key += grey
    lut = np.ascontiguousarray(composite_lut().T)  # (3, rows)
    result = np.empty((n, 3, SIDE, SIDE), dtype=np.uint8)
    for c in range(3):
        result[:, c] = lut[c][key]
    return result
