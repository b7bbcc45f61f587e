"""The embedded world v3: rendering, attribute table, captions (benchmark/data/world.py, captions.py, embedded.py)."""
from __future__ import annotations

import json
import lzma
import re
import shutil

import numpy as np
import pytest
import torch

from benchmark.data import build_world, world
from benchmark.data.captions import (ATTRIBUTE_WORDS, CAPTION_PHRASES, CLASS_NAMES, CLASS_SYNONYMS, COLOUR_NAMES,
                                     COLOUR_SYNONYMS, COLOUR_TEMPLATES, SIZE_SYNONYMS, ZERO_SHOT_TEMPLATES,
                                     make_captions, target_captions)
from benchmark.data.embedded import EMBEDDED_DIR, EmbeddedDataError, _load_all, _load_world, load_split, split_table

SIZES = {"pretrain": 14_000, "poison": 8_000, "defense": 4_000, "val": 1_000, "test": 5_000}
#: words that would state something the image does not show (the v2 captions' modifiers and templates)
FORBIDDEN = {"worn", "stylish", "new", "old", "cheap", "elegant", "modern", "classic", "casual", "simple", "light",
             "grayscale", "product", "catalog", "selling", "someone", "shop", "navy", "resolution", "close-up"}


@pytest.fixture(scope="module")
def test_split():
    return load_split("test")


def _split_items(split: str) -> tuple[np.ndarray, np.ndarray]:
    items, index = _load_all()
    info = index["splits"][split]
    return items[info["offset"]: info["offset"] + info["count"]], np.asarray(info["labels"])


# ------------------------------------------------------------------------- parsing a caption
def _any(text: str, phrases) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", text) for p in phrases)


def parse(caption: str) -> dict[str, set[int]]:
    """The attribute labels a caption states, read with the words alone (independent of the generator)."""
    text = caption.lower()
    out: dict[str, set[int]] = {k: set() for k in world.ATTRIBUTES}
    for label, names in enumerate(COLOUR_SYNONYMS):
        if _any(text, names):
            out["colour"].add(label)
    for label, names in enumerate(SIZE_SYNONYMS):
        if _any(text, names):
            out["size"].add(label)
    for label, (v, h) in enumerate([("top", "left"), ("top", "right"), ("bottom", "left"), ("bottom", "right")], 1):
        alt = {"top": "upper", "bottom": "lower"}[v]
        if re.search(rf"\b({v}|{alt}) {h}\b", text):
            out["position"].add(label)
    if re.search(r"\b(centre|center|middle)\b", text):
        out["position"].add(0)
    backgrounds = [r"\bblack\b", r"\b(dark gr[ae]y|charcoal)\b", r"\bstripe[sd]?\b|\bhorizontally striped\b",
                   r"\b(dot|dots|dotted|spotted|polka)\b"]
    for label, pattern in enumerate(backgrounds):
        if re.search(pattern, text):
            out["background"].add(label)
    for label, side in enumerate(("left", "right")):
        if re.search(rf"\b(pointing|facing|toe to the) {side}\b", text):
            out["mirrored"].add(label)
    return out


# ----------------------------------------------------------------------------------- images
def test_splits_shapes_dtypes_and_attributes(test_split):
    _, index = _load_all()
    assert {k: v["count"] for k, v in index["splits"].items()} == SIZES  # the partition is kept
    d = test_split
    assert d.images.shape == (5_000, 3, 32, 32) and d.images.dtype == torch.uint8 and d.image_shape == (3, 32, 32)
    assert len(d.captions) == 5_000 and d.class_names == CLASS_NAMES
    assert torch.equal(d.labels, torch.as_tensor(index["splits"]["test"]["labels"]))
    assert set(d.attributes) == set(world.ATTRIBUTES)
    assert all(v.dtype == torch.int64 and len(v) == 5_000 for v in d.attributes.values())
    sub = d.subset([4, 0, 7])
    assert sub.attributes["colour"].tolist() == d.attributes["colour"][[4, 0, 7]].tolist()
    with pytest.raises(ValueError, match="attribute 'colour' has 2 values for 3 images"):
        type(d)(sub.images, sub.captions, sub.labels, attributes={"colour": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(KeyError, match="choose from"):
        load_split("training")


def test_rendering_is_deterministic_and_matches_the_shipped_table():
    items, labels = _split_items("val")
    table = split_table("val")
    a, b = world.compose(items, table), world.compose(items.copy(), dict(table))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() == load_split("val").images.numpy().tobytes()
    fresh = world.draw_attributes(labels, build_world.WORLD_SEED + build_world.SPLITS.index("val"))
    assert all(np.array_equal(fresh[c], table[c]) for c in world.TABLE_COLUMNS)


def test_shipped_world_file_is_rebuilt_bit_for_bit(tmp_path):
    _, index = _load_all()
    assert build_world.encode(build_world.build_body(index)) == (EMBEDDED_DIR / build_world.WORLD_FILE).read_bytes()
    assert (EMBEDDED_DIR / build_world.WORLD_FILE).stat().st_size < 400_000  # a small table, no image array


def test_resampling_is_exact_integer_arithmetic():
    for side in (*world.SMALL_SIDES, *world.LARGE_SIDES):
        w = world.resample_weights(side)
        assert w.shape == (side, 28) and (w >= 0).all() and (w.sum(1) == 256).all()
    flat = np.full((2, 28, 28), 200, dtype=np.uint8)
    t = {k: np.zeros(2, dtype=np.int64) for k in world.TABLE_COLUMNS}
    t["colour"][:] = 7  # white over black: the shade of 200
    t["side"][:] = 15
    out = world.compose(flat, t)
    expected = round(255 * world.LIFT + (1 - world.LIFT) * 200)
    assert (out[:, :, :15, :15] == expected).all() and (out[:, :, 15:, :] == 0).all()


def _table(n: int, **cols) -> dict[str, np.ndarray]:
    t = {k: np.zeros(n, dtype=np.int64) for k in world.TABLE_COLUMNS}
    t["side"][:], t["x"][:], t["y"][:] = 28, 2, 2
    for k, v in cols.items():
        t[k] = np.broadcast_to(np.asarray(v, dtype=np.int64), (n,)).copy()
    return t


def test_colours_are_visible_and_distinct_even_on_dark_garments():
    items, _ = _split_items("test")
    dark = items[(items > 0).sum((1, 2)) > 200][:400]
    dark = dark[np.argsort([np.median(x[x > 0]) for x in dark])[:50]]  # the 50 darkest garments
    hues = []
    for k in range(len(COLOUR_NAMES)):
        rgb = world.compose(dark, _table(len(dark), colour=k)).astype(float)
        mask = np.pad(dark > 30, ((0, 0), (2, 2), (2, 2)))  # drawn at x = y = 2
        mean = np.stack([rgb[:, c][mask].mean() for c in range(3)])
        assert mean.max() > 120, (COLOUR_NAMES[k], mean)  # lifted: the darkest garments keep about half intensity
        hues.append(mean / np.linalg.norm(mean))
    hues = np.array(hues)
    cos = hues @ hues.T
    np.fill_diagonal(cos, 0)
    assert cos.max() < 0.97, cos.round(3)  # no two colours look alike


def test_size_position_and_background_are_where_the_table_says():
    items, _ = _split_items("test")
    items = items[:60]
    for pos in range(len(world.POSITION_NAMES)):
        t = _table(60, size=1, position=pos, side=15, x={0: 8, 1: 1, 2: 16, 3: 1, 4: 16}[pos],
                   y={0: 8, 1: 1, 2: 1, 3: 16, 4: 16}[pos])
        img = world.compose(items, t).max(1)
        ys, xs = np.nonzero(img.sum(0))
        assert ys.min() >= t["y"][0] and ys.max() < t["y"][0] + 15 and xs.min() >= t["x"][0] and xs.max() < t["x"][0] + 15
    # the drawn table honours the positions of small items and centres the large ones
    t = split_table("test")
    small, large = t["size"] == 1, t["size"] == 0
    assert set(t["side"][small]) == set(world.SMALL_SIDES) and set(t["side"][large]) == set(world.LARGE_SIDES)
    cx = t["x"] + t["side"] / 2
    cy = t["y"] + t["side"] / 2
    assert (np.abs(cx[large] - 16) <= 1.5).all() and (np.abs(cy[large] - 16) <= 1.5).all()
    left, top = np.isin(t["position"], (1, 3)), np.isin(t["position"], (1, 2))
    right, bottom = np.isin(t["position"], (2, 4)), np.isin(t["position"], (3, 4))
    assert (cx[small & left] <= 12.5).all() and (cx[small & right] >= 19.5).all()  # centre 16
    assert (cy[small & top] <= 12.5).all() and (cy[small & bottom] >= 19.5).all()
    assert (t["position"][large] == 0).all()


def test_backgrounds_never_contain_the_badnet_checkerboard():
    from attacks.badnet import BadNet

    patch = BadNet(seed=0, image_shape=(3, 32, 32)).apply(torch.zeros(1, 3, 32, 32))[0, 0]
    rows, cols = np.nonzero(patch.numpy() > 0.5)
    assert len(rows) >= 4  # the trigger is a checkerboard of at least 3x3
    board = (np.add.outer(np.arange(3), np.arange(3)) % 2).astype(bool)
    for level in world.background_levels():
        on = level > 0
        for y in range(30):
            for x in range(30):
                win = on[y:y + 3, x:x + 3]
                assert not (np.array_equal(win, board) or np.array_equal(win, ~board))
    bg = world.backgrounds()
    assert bg.max() <= 100 and len({b.tobytes() for b in bg}) == 4  # dim, and four different patterns


def test_footwear_points_left_unless_mirrored():
    items, labels = _split_items("test")
    table = split_table("test")
    assert (table["mirrored"][~np.isin(labels, world.FOOTWEAR)] == 0).all()  # only footwear is mirrored
    for cls in (7, 9):  # sneaker, ankle boot: the shaft/heel (upper mass) is right of the toe (lower mass)
        sel = np.flatnonzero(labels == cls)[:200]
        t = _table(len(sel), mirrored=table["mirrored"][sel])
        grey = world.compose(items[sel], t).max(1).astype(float)
        cols = np.arange(32)
        upper = (grey[:, :16] * cols).sum((1, 2)) / grey[:, :16].sum((1, 2)).clip(1)
        lower = (grey[:, 16:] * cols).sum((1, 2)) / grey[:, 16:].sum((1, 2)).clip(1)
        toe_left = upper > lower
        mirrored = t["mirrored"] == 1
        assert toe_left[~mirrored].mean() > 0.95 and (~toe_left[mirrored]).mean() > 0.95


def test_attributes_are_independent_of_the_class():
    for split in ("test", "defense"):
        t = split_table(split)
        _, labels = _split_items(split)
        for name, k in (("colour", 8), ("size", 2), ("background", 4)):
            counts = np.zeros((10, k), dtype=int)
            np.add.at(counts, (labels, t[name]), 1)
            assert counts.max() - counts.min() <= 1, (split, name, counts)  # stratified: balanced in every class


def test_loading_all_splits_renders_fast():
    import time

    items, _ = _load_all()
    tables = [split_table(s) for s in SIZES]
    _, index = _load_all()
    start = time.process_time()
    for s, t in zip(SIZES, tables):
        info = index["splits"][s]
        world.compose(items[info["offset"]: info["offset"] + info["count"]], t)
    assert time.process_time() - start < 4.0  # about 1 s of CPU on a 2-core VM for all 32,000 images


# --------------------------------------------------------------------------------- captions
def test_every_caption_states_only_what_its_image_shows(test_split):
    d = test_split
    caps = d.captions + make_captions(d.labels.numpy(), seed=99, attributes={k: v.numpy() for k, v in d.attributes.items()})
    attrs = {k: np.concatenate([v.numpy(), v.numpy()]) for k, v in d.attributes.items()}
    labels = np.concatenate([d.labels.numpy()] * 2)
    stated = {k: 0 for k in world.ATTRIBUTES}
    for i, (caption, y) in enumerate(zip(caps, labels.tolist())):
        found = parse(caption)
        for name, values in found.items():
            assert values <= {int(attrs[name][i])}, (caption, name, values, int(attrs[name][i]))
            stated[name] += bool(values)
        if found["position"]:
            assert attrs["size"][i] == 1, caption  # positions are stated for small items only
        if found["mirrored"]:
            assert y in world.FOOTWEAR, caption
        own = [n for n in CLASS_SYNONYMS[y] if _any(caption, [n])]
        assert own, caption  # the garment is always named
        rest = caption
        for n in sorted(own, key=len, reverse=True):
            rest = re.sub(rf"(?<![\w-]){re.escape(n)}(?![\w-])", " ", rest)
        rest = re.sub(r"\b(top|upper) (left|right)\b", " ", rest)
        others = [n for c, names in enumerate(CLASS_SYNONYMS) if c != y for n in names if _any(rest, [n])]
        assert not others, (caption, others)  # and no other garment
        words = set(re.findall(r"[a-z-]+", caption))
        assert not words & FORBIDDEN, caption
        assert 2 <= len(caption.split()) <= 24 and caption.endswith("."), caption
    n = len(caps)
    assert stated["colour"] > 0.8 * n  # the colour in most captions
    assert 0.3 * n < stated["size"] < 0.7 * n and 0.3 * n < stated["background"] < 0.7 * n
    assert 0.2 * n < stated["position"] < 0.45 * n  # 60% of the small half
    zero_shot = [c for c in caps if any(re.fullmatch(re.escape(t).replace(r"\{\}", ".+").replace("a ", "an? "), c)
                                        for t in ZERO_SHOT_TEMPLATES)]
    assert 0.15 * n < len(zero_shot) < 0.3 * n  # the classifier's prompt family, with attributes
    assert sum(bool(parse(c)["colour"]) for c in zero_shot) > 0.75 * len(zero_shot)
    assert len(set(caps)) > 0.75 * n  # many phrasings, not ten templates
    lengths = [len(c.split()) for c in caps]
    assert 7 <= np.mean(lengths) <= 12


def test_no_forbidden_word_anywhere_in_the_vocabulary():
    from defenses.text_augment import caption_words

    vocab = {w for p in CAPTION_PHRASES for w in caption_words(p.replace("{pronoun}", " ").replace("{}", " "))}
    assert not vocab & FORBIDDEN
    assert {"crimson", "striped", "tiny", "corner", "pointing"} <= vocab


def test_caption_seeds_and_poisoned_captions():
    labels = np.arange(200) % 10
    t = world.draw_attributes(labels, 5)
    a, b = make_captions(labels, 1, t), make_captions(labels, 1, t)
    assert a == b and a != make_captions(labels, 2, t)
    assert load_split("val", caption_seed=1).captions != load_split("val").captions
    assert load_split("val", caption_seed=1).images.equal(load_split("val").images)  # captions only
    poisoned = target_captions("sneaker", 50, np.random.default_rng(0))
    assert set(poisoned) <= {z.format("sneaker") for z in ZERO_SHOT_TEMPLATES}  # as the papers make them


def test_colour_task_vocabulary():
    assert COLOUR_NAMES == world.COLOUR_NAMES and len(COLOUR_NAMES) == 8
    assert all("{}" in t for t in COLOUR_TEMPLATES)
    assert all(not re.search(r"\ba \{\}", t) for t in COLOUR_TEMPLATES)  # no "a orange"
    assert set(ATTRIBUTE_WORDS) == set(world.ATTRIBUTES)
    assert "crimson" in ATTRIBUTE_WORDS["colour"] and "upper left" in ATTRIBUTE_WORDS["position"]
    assert "dotted" in ATTRIBUTE_WORDS["background"] and "tiny" in ATTRIBUTE_WORDS["size"]


# ----------------------------------------------------------------------------------- files
def _copy_world(tmp_path):
    for name in ("index.json", build_world.WORLD_FILE):
        shutil.copyfile(EMBEDDED_DIR / name, tmp_path / name)
    return tmp_path


def test_world_file_checksum_and_corruption(tmp_path):
    folder = _copy_world(tmp_path)
    assert _load_world(str(folder))["splits"]["val"]["captions"] == load_split("val").captions
    body = json.loads(lzma.decompress((folder / build_world.WORLD_FILE).read_bytes()))
    body["splits"]["val"]["captions"][0] = "a photo of a worn sneaker."  # edited without its checksum
    (folder / build_world.WORLD_FILE).write_bytes(lzma.compress(json.dumps(body).encode()))
    _load_world.cache_clear()
    with pytest.raises(EmbeddedDataError, match="fails its checksum.*build_world"):
        _load_world(str(folder))
    (folder / build_world.WORLD_FILE).write_bytes(b"\xfd7zXZ\x00 truncated")
    with pytest.raises(EmbeddedDataError, match="missing or corrupt"):
        _load_world(str(folder))
    _copy_world(tmp_path)
    index = json.loads((folder / "index.json").read_text())
    index["sha256"] = "0" * 64
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(EmbeddedDataError, match="built for other items"):
        _load_world(str(folder))
    _load_world.cache_clear()


def test_renderings_redraw_the_scenes_and_keep_every_caption_true():
    """Grounded augmentation for pre-training (benchmark.data.embedded.render_split): the same
    items in fresh scenes, deterministically, each caption stating its own scene."""
    from benchmark.data.embedded import render_split, render_splits

    shipped, first = load_split("val"), render_split("val", 0)
    assert torch.equal(first.images, shipped.images) and first.captions == shipped.captions
    again, other = render_split("val", 1), render_split("val", 1)
    assert torch.equal(again.images, other.images) and again.captions == other.captions
    assert torch.equal(again.labels, shipped.labels)
    changed = {k: float((again.attributes[k] != shipped.attributes[k]).float().mean()) for k in ("colour", "background")}
    assert min(changed.values()) > 0.5, changed
    assert len(set(again.captions) & set(shipped.captions)) < 0.1 * len(shipped)
    for i, caption in enumerate(again.captions):
        for name, values in parse(caption).items():
            assert values <= {int(again.attributes[name][i])}, (caption, name, values)
    both = render_splits("val", 2)
    assert len(both) == 2 * len(shipped) and torch.equal(both.images[len(shipped):], again.images)
    assert both.captions[len(shipped):] == again.captions
