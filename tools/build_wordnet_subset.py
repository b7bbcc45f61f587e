"""Build ``defenses/data/wordnet_subset.json``: WordNet for the embedded captions' words.

EDA (synonym replacement / insertion) and TA-Cleaner (parts of speech) look words up in
WordNet. The embedded default must run without WordNet installed, so this script
computes, from full WordNet 3.0 through NLTK, the synonyms (EDA's ``get_synonyms``) and
parts of speech of every word that can occur in an embedded caption: the training and
zero-shot templates, every class synonym and the modifiers (EDA is applied once, to an
original caption, so no other word is ever looked up). The JSON is shipped as package
data. Rebuild with::

    python -m defenses.text_augment --setup-wordnet /tmp/nltk_data    # if NLTK lacks WordNet
    NLTK_DATA=/tmp/nltk_data python -m tools.build_wordnet_subset
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmark.data.captions import CLASS_SYNONYMS, MODIFIERS, TRAIN_TEMPLATES, ZERO_SHOT_TEMPLATES
from defenses.text_augment import SUBSET_PATH, caption_words, full_pos, full_synonyms, nltk_wordnet


def embedded_vocabulary() -> list[str]:
    """Every word of every embedded caption (templates x names x modifiers)."""
    words: set[str] = set()
    for template in TRAIN_TEMPLATES + ZERO_SHOT_TEMPLATES:
        words.update(caption_words(template.replace("{}", " ")))
    for names in CLASS_SYNONYMS:
        for name in names:
            words.update(caption_words(name))
    words.update(MODIFIERS)
    return sorted(words)


def build() -> dict:
    wn = nltk_wordnet()
    words = {w: {"synonyms": full_synonyms(w), "pos": full_pos(w)} for w in embedded_vocabulary()}
    return {
        "source": f"WordNet {wn.get_version()} via NLTK (EDA get_synonyms; parts of speech of all synsets)",
        "built_by": "python -m tools.build_wordnet_subset",
        "words": words,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.build_wordnet_subset", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SUBSET_PATH)
    args = parser.parse_args(argv)
    data = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    print(f"wrote {len(data['words'])} words to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
