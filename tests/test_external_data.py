"""External data sources, validation, the poison overlay, pretrained/local models, paper suites.

Every fixture is generated here (images, a CSV, a saved Hugging Face dataset, tar shards,
class folders); HF_DATASETS_OFFLINE=1 and HF_HUB_OFFLINE=1 hold (tests/conftest.py):
nothing is downloaded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import external_fixtures as fx
from benchmark.cli import main
from benchmark.config import ConfigError, parse_set
from benchmark.data.external import LazyPairs, SplitSource, StreamPairs, open_split
from benchmark.data.images import DataError, make_transform, to_rgb
from benchmark.data.sources import open_data
from benchmark.suite import load_suite

SPEC = {"image_size": 32, "mean": None, "std": None, "resize_mode": "shortest", "interpolation": "bicubic"}
SHAPE = (3, 32, 32)
TINY = {"pretrain": None, "poison_train": {"epochs": 1, "batch_size": 16, "lr": 5e-3, "warmup_steps": 1},
        "attack_common": {"target": "banana", "poison_rate": 0.1}, "eval": {"batch_size": 64}}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("fx")
    return {"csv": fx.write_csv(root / "csv", n=64), "hf": fx.write_hf(root / "hf", n=64),
            "hfcls": fx.write_hf(root / "hfcls", n=24, classification=True),
            "wds": fx.write_shards(root / "wds", n=64, per_shard=25), "val": fx.write_class_folders(root / "val", 6)}


def _open(src: SplitSource, role: str = "train"):
    return open_split(src, role, make_transform(SPEC), SHAPE)


TRAIN_SOURCES = {
    "csv": lambda f: {"format": "csv", "path": str(f["csv"]), "limit": 48},
    "hf": lambda f: {"format": "hf", "path": str(f["hf"]), "caption_column": "text", "limit": 48},
    "hf_stream": lambda f: {"format": "hf", "path": str(f["hf"]), "caption_column": "text", "streaming": True, "limit": 48},
    "webdataset": lambda f: {"format": "webdataset", "path": str(f["wds"]), "label_column": "cls", "limit": 48},
}


@pytest.mark.parametrize("kind", list(TRAIN_SOURCES))
def test_a_cell_runs_through_each_source(kind, fixtures, tmp_path, cache_dir):
    train = TRAIN_SOURCES[kind](fixtures)
    test = ({"format": "imagefolder", "path": str(fixtures["val"]), "classes": "folder"} if kind != "hf" else
            {"format": "hf", "path": str(fixtures["hfcls"]), "label_column": "label", "classes": "features"})
    suite = {"name": f"ext-{kind}", "model": {"arch": "clipbench-micro-rn"}, **TINY,
             "data": {"source": "external", "train": train, "defense": {**train, "limit": 16}, "test": test}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    results = tmp_path / "results"
    assert main(["run", "--suite", str(path), "--attack", "badnet", "--defense", "none", "--results-dir", str(results),
                 "--quiet"]) == 0
    r = json.loads((results / f"ext-{kind}" / "badnet" / "none" / "seed-0.json").read_text())
    assert r["status"] == "ok", r["error"]
    for block in (r["metrics"], r["clean_model"]):
        assert 0 <= block["clean_accuracy"] <= 1 and 0 <= block["asr"] <= 1
    assert r["metrics"]["counts"]["clean"] == 24  # 4 classes x 6 images, or 24 HF rows
    assert r["metrics"]["counts"]["triggered"] == 18  # the 6 banana images are excluded from ASR
    assert r["poison"]["num_poisoned"] == round(0.1 * 48)
    # the poison stage stored only the overlay: the poisoned samples' images, not the whole set
    from benchmark.cache import resolve_ref

    folder = resolve_ref(r["poison"]["manifest"]).parent  # cache:poison/<key>/manifest.json, under $CLIPBENCH_CACHE
    assert (folder / "overlay.safetensors").exists() and not (folder / "data.safetensors").exists()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["storage"] == "overlay" and manifest["image_shape"] == [3, 32, 32]
    assert all("banana" in c for c in manifest["captions"])


def test_overlay_equals_a_full_materialisation(fixtures):
    """The overlay over the lazily decoded source gives exactly what poisoning the whole set in memory gives."""
    from benchmark.api import AttackContext
    from benchmark.data.dataset import TensorPairs
    from benchmark.data.overlay import apply_overlay, poison_overlay
    from benchmark.registry import attack_registry

    lazy = _open(SplitSource("csv", str(fixtures["csv"])))
    full = TensorPairs(lazy.load_uint8(np.arange(len(lazy))), list(lazy.captions), lazy.labels.clone())
    attack = attack_registry().build("badnet", {"poison_rate": 0.1, "target": "banana"}, 3, image_shape=SHAPE)
    ctx = AttackContext(fx.CLASSES, 1, 3)
    reference = attack.poison(full, ctx)
    manifest, o = poison_overlay(attack, lazy, ctx)
    assert manifest["indices"] == reference.manifest["indices"] and manifest["captions"] == reference.manifest["captions"]
    data = apply_overlay(lazy, o["indices"], o["images"], o["captions"], o["poisoned"])
    assert torch.equal(data.poisoned, reference.data.poisoned) and data.captions == reference.data.captions
    for i in range(len(data)):
        image, caption, _, index = data[i]
        assert index == i and caption == reference.data.captions[i]
        assert torch.equal(image, reference.data.images[i].float() / 255), i


def test_stream_indices_do_not_depend_on_workers(fixtures):
    stream = _open(SplitSource("hf", str(fixtures["hf"]), caption_column="text", streaming=True, limit=20))
    assert isinstance(stream, StreamPairs) and len(stream) == 20 and len(stream.captions) == 20
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(stream, batch_size=8, num_workers=workers, collate_fn=lambda b: b)
        items = [it for batch in loader for it in batch]
        assert sorted(it[3] for it in items) == list(range(20))
        assert all(it[1] == stream.captions[it[3]] for it in items)


def test_sources_agree_on_the_same_pairs(fixtures):
    csv = _open(SplitSource("csv", str(fixtures["csv"]), limit=12))
    hf = _open(SplitSource("hf", str(fixtures["hf"]), caption_column="text", limit=12))
    tar = _open(SplitSource("webdataset", str(fixtures["wds"]) + "/shard-{000..002}.tar", limit=12, label_column="cls"))
    assert csv.captions == hf.captions == tar.captions
    assert tar.labels.tolist() == [i % 4 for i in range(12)]
    for ds in (csv, hf, tar):
        image, caption, _, _ = ds[3]  # an RGBA file: converted, resized and cropped to the model's input
        assert image.shape == SHAPE and 0 <= float(image.min()) and float(image.max()) <= 1
    assert torch.allclose(csv[0][0], hf[0][0])  # same PNG pixels through two formats
    assert (csv[4][0][0] == csv[4][0][1]).all()  # the greyscale file became 3 equal channels


def test_imagefolder_and_classification_sets(fixtures, tmp_path):
    folder = _open(SplitSource("imagefolder", str(fixtures["val"]), classes="folder"), "test")
    assert folder.class_names == fx.CLASSES and folder.labels.tolist() == sorted([0, 1, 2, 3] * 6)
    with pytest.raises(DataError, match="1000 names but the data has 4 classes"):
        _open(SplitSource("imagefolder", str(fixtures["val"]), classes="imagenet1k"), "test")
    hf = _open(SplitSource("hf", str(fixtures["hfcls"]), label_column="label", classes="features"), "test")
    assert hf.class_names == fx.CLASSES and hf.labels.tolist() == [i % 4 for i in range(24)]
    suite = load_suite("cleanclip-paper")  # ImageNet presets come from open_clip, offline
    bundle = open_data(suite.data, suite.model)
    assert len(bundle.class_names) == 1000 and len(bundle.templates) == 80 and bundle.image_shape == (3, 224, 224)
    assert all("{}" in t for t in bundle.templates) and bundle.class_names[bundle.target_index("banana")] == "banana"


# ------------------------------------------------------------------------ validation (issue 8)
def _csv(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    return path


@pytest.fixture
def good_images(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        fx.make_image(i, rng).save(tmp_path / f"{i}.png")
    return tmp_path


@pytest.mark.parametrize("rows, needle", [
    ([("0.png", "a"), ("gone.png", "b")], "row 2: image file '.*gone.png' is missing"),
    ([("0.png", "a"), ("1.png", "  ")], "row 2: empty caption for '.*1.png'"),
    ([("0.png", "a"), ("1.png", "b"), ("0.png", "c")], "row 3: duplicate id '.*0.png' \\(first at row 1\\)"),
])
def test_bad_rows_are_rejected_with_the_row_and_file_named(rows, needle, good_images):
    path = _csv(good_images, rows)
    with pytest.raises(DataError, match=needle):
        _open(SplitSource("csv", str(path)))
    with pytest.warns(UserWarning, match="dropped 1 invalid rows"):
        kept = _open(SplitSource("csv", str(path), on_invalid="drop"))
    assert len(kept) == len(rows) - 1


def test_missing_columns_and_files_are_named(good_images, tmp_path):
    path = _csv(good_images, [("0.png", "a")])
    with pytest.raises(DataError, match="no column 'filepath'.*set image_column"):
        _open(SplitSource("csv", str(path), image_column="filepath"))
    with pytest.raises(DataError, match="CSV file not found"):
        _open(SplitSource("csv", str(tmp_path / "nope.csv")))


def test_corrupt_tiny_and_odd_images(good_images):
    from PIL import Image

    (good_images / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    Image.new("RGB", (4, 30)).save(good_images / "tiny.png")
    path = _csv(good_images, [("0.png", "a"), ("bad.png", "b"), ("tiny.png", "c")])
    ds = _open(SplitSource("csv", str(path)))
    assert ds[0][0].shape == SHAPE
    with pytest.raises(DataError, match="bad.png: corrupt or unreadable image"):
        ds[1]
    with pytest.raises(DataError, match="tiny.png: image is 4x30 px, smaller than 8 px"):
        ds[2]
    # conversions where the RGB meaning is well defined, rejection otherwise
    for mode in ("L", "LA", "RGBA", "P", "CMYK", "I;16", "1"):
        assert to_rgb(Image.new(mode, (20, 20)), "x").mode == "RGB", mode
    assert to_rgb(np.zeros((3, 20, 20), np.uint8), "x").size == (20, 20)  # channels-first array
    with pytest.raises(DataError, match="f.png: image mode 'F'"):
        to_rgb(Image.new("F", (20, 20)), "f.png")
    with pytest.raises(DataError, match="arr: image array of shape \\(20, 20, 2\\)"):
        to_rgb(np.zeros((20, 20, 2), np.uint8), "arr")
    with pytest.raises(DataError, match="dtype float32"):
        to_rgb(np.zeros((20, 20, 3), np.float32), "arr")


def test_corrupt_shard_and_sample_without_image(tmp_path):
    import io
    import tarfile

    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(DataError, match="bad.tar: unreadable or corrupt tar"):
        _open(SplitSource("webdataset", str(tmp_path / "bad.tar")))
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        info = tarfile.TarInfo("k1.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"cap"))
    with pytest.raises(DataError, match="'k1 \\(no image member\\)' is missing"):
        _open(SplitSource("webdataset", str(tmp_path / "s.tar")))


def test_hf_name_not_cached_offline_says_what_to_do(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="cannot be loaded.*save_to_disk"):
        _open(SplitSource("hf", "clipbench-test/definitely-not-cached"))


def test_suite_data_config_errors():
    with pytest.raises(ConfigError, match="external suite needs data.train"):
        load_suite("embedded", parse_set(["data.source=external"]))
    with pytest.raises(ConfigError, match="need data.source: external"):
        load_suite("embedded", parse_set(["data.train.path=x.csv"]))
    with pytest.raises(ConfigError, match="streaming is for format: hf only"):
        SplitSource("csv", "x.csv", streaming=True)


def test_embedded_identity_is_unchanged():
    """Adding external options must not change any cache key of the embedded default;
    changing the captions' generator must (its version is part of the identity)."""
    from benchmark.data.captions import CAPTIONS_VERSION

    bundle = open_data(load_suite("embedded").data)
    assert bundle.identity() == {"source": "embedded", "caption_seed": 0, "pretrain_split": "pretrain",
                                 "train_split": "poison", "defense_split": "defense", "val_split": "val",
                                 "test_split": "test", "fraction": 1.0, "captions_version": CAPTIONS_VERSION}


# ------------------------------------------------------------------------ models
def test_local_checkpoints_load_safely(tmp_path):
    from safetensors.torch import save_file

    from benchmark.models import ModelConfig, ModelLoadError, create_model

    model = create_model(ModelConfig("clipbench-micro-rn"), seed=5)
    state = {k: v.contiguous().clone() for k, v in model.clip.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "cleanclip.pt")
    for name in ("w.safetensors", "cleanclip.pt"):
        loaded = create_model(ModelConfig("clipbench-micro-rn", str(tmp_path / name)), seed=0)
        assert all(torch.equal(loaded.clip.state_dict()[k], v) for k, v in state.items()), name

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"state_dict": state, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelLoadError, match="holds pickled code.*refused without running it"):
        create_model(ModelConfig("clipbench-micro-rn", str(tmp_path / "evil.pt")))
    assert not (tmp_path / "pwned").exists()
    raw = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelLoadError, match="truncated, corrupt"):
        create_model(ModelConfig("clipbench-micro-rn", str(tmp_path / "cut.safetensors")))
    with pytest.raises(ModelLoadError, match="does not match clipbench-tiny-rn"):
        create_model(ModelConfig("clipbench-tiny-rn", str(tmp_path / "w.safetensors")))
    with pytest.raises(ModelLoadError, match="no such checkpoint file"):
        create_model(ModelConfig("clipbench-micro-rn", str(tmp_path / "missing.pt")))


def test_uncached_pretrained_tag_offline_names_the_download(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    from benchmark.models import ModelConfig, ModelLoadError, create_model, input_spec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelLoadError, match="RN50/openai are not cached.*huggingface-cli download timm/resnet50_clip.openai"):
        create_model(ModelConfig("RN50", "openai"))
    with pytest.raises(ModelLoadError, match="not a tag of RN50"):
        create_model(ModelConfig("RN50", "laion-nonsense"))
    spec = input_spec(ModelConfig("ViT-B-32", "laion2b_s34b_b79k"))
    assert spec["image_size"] == 224 and spec["interpolation"] == "bicubic"


def test_paper_suites_plan_offline_with_cost_estimates(tmp_path):
    from benchmark.cost import estimate_cost, split_size
    from benchmark.plan import make_plan
    from benchmark.registry import attack_registry, defense_registry

    for name, n_train, epochs in (("cleanclip-paper", 500_000, 10), ("roclip-paper", 1_000_000, 24)):
        suite = load_suite(name)
        assert suite.data.train.limit == n_train and suite.poison_train.epochs == epochs
        assert suite.model.arch == "RN50" and suite.attack_common["target"] == "banana"
        assert split_size(suite, "test") == 50_000 and split_size(suite, "defense") == 100_000
        plan = make_plan(suite, open_data(suite.data, suite.model), ["badnet"], ["none"], [0], attack_registry(),
                         defense_registry(), tmp_path)
        nodes = list(plan.nodes.values()) if isinstance(plan.nodes, dict) else list(plan.nodes)
        cost = estimate_cost(plan, nodes, tmp_path / "empty-cache", lambda role: split_size(suite, role))
        train = next(n for n in nodes if n.kind == "train")
        assert cost.seconds[train.key] == pytest.approx(n_train * epochs / suite.cost.train_samples_per_s)
        assert cost.unknown() == 0 and str(cost.device) == "cuda"
    s = load_suite("cleanclip-paper")
    assert round(s.attack_common["poison_rate"] * s.data.train.limit) == 1500
    assert s.defense_common["train"] == {"epochs": 10, "batch_size": 64, "lr": 1e-5, "warmup_steps": 50,
                                         "weight_decay": 0.1, "beta2": 0.999, "eps": 1e-8, "num_workers": 8}


def test_token_ids_are_memoised_per_tokenizer_across_models_and_capped(monkeypatch):
    from benchmark.models import ModelConfig, TokenCache, create_model

    a = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0)
    b = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=1)
    assert a.tokenizer is b.tokenizer  # one cache per tokenizer in the process
    captions = ["a photo of a sneaker.", "a tee.", "a photo of a sneaker."]
    ids = a.tokenize(captions)
    assert torch.equal(ids, torch.stack([a.tokenizer.tokenizer([c])[0] for c in captions]))
    assert torch.equal(b.tokenize(captions), ids)
    small = TokenCache(a.tokenizer.tokenizer)
    monkeypatch.setattr(TokenCache, "max_entries", 2)
    small(["one", "two"])
    small(["three"])  # over the cap: the cache starts afresh instead of growing
    assert set(small.ids) == {"three"}
    assert torch.equal(small(["one", "three"]), torch.stack([a.tokenizer.tokenizer([c])[0] for c in ("one", "three")]))
