"""EDA, WordNet access and TA-Cleaner's sub-captions (defenses/text_augment.py, ta_cleaner.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from benchmark.data.captions import CLASS_SYNONYMS, make_captions
from defenses import text_augment as ta
from conftest import need


def _debian_wordnet() -> bool:
    return (ta.SYSTEM_WORDNET / "data.noun").is_file()


@pytest.fixture(scope="module")
def lex():
    return ta.load_lexicon("subset")


@pytest.fixture(scope="module")
def captions():
    labels = np.repeat(np.arange(10), 30)
    return make_captions(labels, seed=3), labels


def test_eda_is_seeded_and_changes_captions(lex, captions):
    caps, _ = captions
    a = [ta.eda(c, np.random.default_rng([7, i]), lex) for i, c in enumerate(caps)]
    b = [ta.eda(c, np.random.default_rng([7, i]), lex) for i, c in enumerate(caps)]
    c = [ta.eda(c, np.random.default_rng([8, i]), lex) for i, c in enumerate(caps)]
    assert a == b and a != c
    assert np.mean([x != y for x, y in zip(a, caps)]) > 0.6  # most augmentations change something


def test_eda_operations(lex):
    rng = np.random.default_rng(0)
    tokens = "a photo of a worn sneaker on a dark background .".split()
    swapped = ta.random_swap(tokens, 2, rng)
    assert Counter(swapped) == Counter(tokens) and swapped != tokens
    deleted = ta.random_deletion(tokens, 0.5, np.random.default_rng(1))
    assert 1 <= len(deleted) < len(tokens) and all(t in tokens for t in deleted)
    assert ta.random_deletion(["only"], 0.9, rng) == ["only"]
    sr = ta.synonym_replacement("a photo of a sneaker.".split(), 1, np.random.default_rng(2), lex)
    changed = [(x, y) for x, y in zip("a photo of a sneaker.".split(), sr) if x != y]
    assert len(changed) == 1
    word = ta.split_word(changed[0][0])[1]
    assert ta.split_word(changed[0][1])[1] in lex.synonyms(word) or changed[0][1].rstrip(".") in lex.synonyms(word)
    ri = ta.random_insertion("this is a sneaker.".split(), 1, np.random.default_rng(3), lex)
    assert len(ri) >= 5 and any(w in " ".join(lex.synonyms("sneaker")) for w in ri if w not in "this is a sneaker.".split())
    # stop words are never replaced: a caption of stop words only has nothing to replace
    assert ta.synonym_replacement("this is a".split(), 1, rng, lex) == "this is a".split()


def test_eda_alpha_sets_the_number_of_edits(lex):
    caption = " ".join(["sneaker"] * 30)  # 30 words: n = floor(0.1 * 30) = 3 insertions
    out = ta.random_insertion(caption.split(), max(1, int(0.1 * 30)), np.random.default_rng(0), lex)
    assert len(out) - 30 >= 3


def test_caption_augmenter_once_mode_keys_on_the_sample(lex, captions):
    caps, _ = captions
    aug = ta.CaptionAugmenter(seed=1, lexicon=lex, mode="once")
    first = aug(caps[:20], range(20))
    assert aug(caps[:20], range(20)) == first  # computed once per caption
    assert ta.CaptionAugmenter(seed=1, lexicon=lex, mode="once")(caps[:20], range(20)) == first
    fresh = ta.CaptionAugmenter(seed=1, lexicon=lex, mode="per_step")
    assert fresh(caps[:20]) != fresh(caps[:20])


def test_shipped_subset_covers_every_embedded_caption_word():
    from defenses.text_augment import embedded_vocabulary

    words = json.loads(ta.SUBSET_PATH.read_text())["words"]
    assert set(embedded_vocabulary()) <= set(words)
    lex = ta.load_lexicon("auto")
    for caption in make_captions(np.arange(200) % 10, seed=0):
        for w in ta.caption_words(caption):
            assert w in lex.subset  # "auto" never needs full WordNet on embedded captions


def test_eda_on_every_embedded_caption_needs_no_word_outside_the_subset():
    """The embedded default runs CleanCLIP / TA-Cleaner / RoCLIP without WordNet: EDA (whose
    random insertion looks up synonyms it inserted itself) never leaves the shipped subset."""
    from benchmark.data.captions import ZERO_SHOT_TEMPLATES
    from benchmark.data.embedded import load_split

    class Strict(ta.WordNetLexicon):
        def _entry(self, word: str) -> dict:
            assert word.lower() in self.subset, f"EDA looked up {word!r}, which the shipped subset lacks"
            return self.subset[word.lower()]

    lexicon = Strict(dict(ta._subset_entries()), use_full=False)
    captions = list(dict.fromkeys(c for split in ("poison", "defense") for c in load_split(split).captions))
    captions += [t.format(name) for t in ZERO_SHOT_TEMPLATES for name in ("sneaker", "ankle boot", "t-shirt")]
    longest = max(len(c.split()) for c in captions)
    assert max(1, int(ta.EDAConfig().alpha * longest)) <= ta.SUBSET_HOPS + 1  # the subset's hop count suffices
    ri = ta.EDAConfig(operations=("ri",))  # the operation that looks up its own insertions
    for k, caption in enumerate(captions):
        for config in (ta.EDAConfig(), ri):
            ta.eda(caption, np.random.default_rng(k), lexicon, config)


def test_missing_wordnet_gives_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("NLTK_DATA", str(tmp_path))
    code = ("import nltk; nltk.data.path[:] = [%r]\n"
            "from defenses.text_augment import nltk_wordnet\nnltk_wordnet()") % str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin"})
    assert proc.returncode != 0
    assert "nltk.download('wordnet')" in proc.stderr and "wordnet-base" in proc.stderr
    with pytest.raises(ta.WordNetMissingError, match="apt-get install wordnet-base"):
        ta.setup_wordnet(tmp_path / "out", source=tmp_path)


def test_setup_wordnet_from_debian_and_subset_equals_full_wordnet(tmp_path):
    need("Debian WordNet", _debian_wordnet(), "apt-get install wordnet-base wordnet-sense-index")
    ta.setup_wordnet(tmp_path)
    script = (
        "import json, nltk\n"
        f"nltk.data.path[:] = [{str(tmp_path)!r}]\n"
        "from nltk.corpus import wordnet as wn\n"
        "from defenses import text_augment as ta\n"
        "words = json.loads(ta.SUBSET_PATH.read_text())['words']\n"
        "bad = [w for w, e in words.items() if ta.full_synonyms(w) != e['synonyms'] or ta.full_pos(w) != e['pos']]\n"
        "print(json.dumps({'nouns': len(list(wn.all_synsets('n'))), 'bad': bad}))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["nouns"] == 82115
    assert out["bad"] == []  # the shipped subset is exactly full WordNet on its words


# ---------------------------------------------------------------- TA-Cleaner sub-captions
@pytest.fixture(scope="module")
def subcaptioner(lex, captions):
    from defenses.ta_cleaner import SubCaptioner

    caps, labels = captions
    return SubCaptioner(caps, labels.tolist(), lex)


def _class_words(label: int) -> set[str]:
    return {w for name in CLASS_SYNONYMS[label] for w in ta.caption_words(name)}


def test_positive_subcaption_drops_modifiers_and_keeps_the_class_noun(subcaptioner, captions, lex):
    from benchmark.data.captions import COLOUR_SYNONYMS, SIZE_SYNONYMS

    adjectives = {w for syns in COLOUR_SYNONYMS + SIZE_SYNONYMS for s in syns for w in s.split() if "adj" in lex.pos(w)}
    caps, labels = captions
    dropped = 0
    for caption, label in zip(caps, labels):
        pos = subcaptioner.positive(caption)
        words = ta.caption_words(pos)
        assert set(words) & _class_words(int(label)), (caption, pos)  # the class noun stays
        nouns = [i for i, w in enumerate(words) if w in _class_words(int(label))]
        assert not (nouns and nouns[0] > 0 and words[nouns[0] - 1] in adjectives), (caption, pos)  # its modifiers go
        dropped += len(ta.caption_words(caption)) > len(words)
        assert pos.endswith(".")
        assert all(w in ta.caption_words(caption) for w in words)  # only drops, never adds
    assert dropped > 0.7 * len(caps)


def test_negative_subcaption_differs_in_exactly_one_content_word(subcaptioner, captions):
    caps, labels = captions
    rng = np.random.default_rng(0)
    total = without = 0
    for caption, label in zip(caps, labels):
        negs = subcaptioner.negatives(caption, int(label), 3, rng)
        # a caption whose words are all frequent (max_df) has nothing to swap: "white top, big."
        without += not negs
        assert len(set(negs)) == len(negs)
        for neg in negs:
            a, b = caption.split(), neg.split()
            assert len(a) == len(b)
            diff = [(x, y) for x, y in zip(a, b) if x != y]
            assert len(diff) == 1, (caption, neg)
            old, new = (ta.split_word(t)[1].lower() for t in diff[0])
            assert old in subcaptioner.content and new in subcaptioner.content
            assert old not in ta.STOP_WORDS
            # the swap makes the caption false: the new word is not one of the class's names
            assert new not in _class_words(int(label)), (caption, neg)
            total += 1
    assert without <= 0.05 * len(caps)
    assert total >= 2 * len(caps)
