"""The embedded CLIP's pretrained MiniLM text tower: frozen body, cached pooled features."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.models import ClipModel, ModelConfig, create_model
from benchmark.text_features import TextFeatureStore

CAPTIONS = ["a small red sneaker in the top left corner.", "a photo of a dress.",
            "a large blue coat on a striped background.", "there is a tiny yellow bag at the bottom right."]


def _model(tmp_path=None, seed=0) -> ClipModel:
    return create_model(ModelConfig("clipbench-minilm-rn"), seed=seed, text_cache=tmp_path)


def test_cached_features_match_the_full_text_tower(tmp_path):
    model = _model(tmp_path)
    cached = model.encode_text(CAPTIONS)
    full = F.normalize(model.clip.encode_text(model.tokenize(CAPTIONS)), dim=-1)  # open_clip's own HF path
    assert torch.allclose(cached, full, atol=2e-3), (cached - full).abs().max()
    sims = cached @ cached.T  # a pretrained encoder: distinct sentences are not collapsed
    assert float(sims[0, 1]) < 0.9


def test_only_the_projection_and_image_tower_train():
    model = _model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(ClipModel.FROZEN_TEXT) for n in trainable)
    assert any(n.startswith("clip.text.proj.") for n in trainable) and any(n.startswith("clip.visual.") for n in trainable)
    state = model.state_dict()
    assert not any(k.startswith(ClipModel.FROZEN_TEXT) for k in state)  # checkpoints hold what trains
    assert sum(v.numel() for v in state.values()) < 2_000_000
    other = _model(seed=1)
    assert not torch.allclose(other.encode_text(CAPTIONS), model.encode_text(CAPTIONS))
    other.load_state_dict(state)
    assert torch.equal(other.encode_text(CAPTIONS), model.encode_text(CAPTIONS))


def test_features_are_computed_once_and_read_back_from_disk(tmp_path):
    model = _model(tmp_path)
    store = model.text_features  # a new cache folder (the shipped features hold none of CAPTIONS)
    assert store.computed == 0 and not set(CAPTIONS) & set(store.features)
    model.encode_text(CAPTIONS)
    model.encode_text(CAPTIONS[:2] + CAPTIONS)
    assert store.computed == len(CAPTIONS)  # each distinct caption once
    fresh = TextFeatureStore(store.body_id, tmp_path, store.encode, store.tokenize, store.pad_id)
    assert fresh.computed == 0 and set(CAPTIONS) <= set(fresh.features)  # read from the shards
    assert torch.equal(fresh(CAPTIONS), store(CAPTIONS))
    assert fresh.computed == 0


def test_a_feature_does_not_depend_on_its_batch():
    model = _model()
    store = model.text_features
    alone = store._compute([CAPTIONS[0]])
    mixed = store._compute(CAPTIONS + [c.upper() for c in CAPTIONS])
    assert torch.equal(alone[0], mixed[0])  # one shape per length, no padding in the mean
    many = [CAPTIONS[0]] + [f"{CAPTIONS[0]} {i}" for i in range(150)]  # many companions, more than one chunk
    assert torch.equal(store._compute(many)[0], alone[0])
    assert torch.equal(store._compute(list(reversed(many)))[-1], alone[0])


def test_the_shipped_clean_model_is_the_one_its_script_describes():
    """The shipped weights record their recipe and data; both must be what the code makes now
    (a change to the world, the captions or the recipe without retraining fails here)."""
    import json

    from safetensors import safe_open

    from benchmark.config import to_dict
    from benchmark.data.sources import open_data
    from benchmark.models import shipped_weights
    from benchmark.pretrain_embedded import ARCH, RECIPE, SEED, TAG
    from benchmark.suite import load_suite

    path = shipped_weights(ARCH, TAG)
    with safe_open(str(path), "pt") as fh:
        record = json.loads(fh.metadata()["clipbench"])
        keys = set(fh.keys())
    data = open_data(load_suite("embedded", {"model": {"pretrained": None}}).data)
    assert record["recipe"] == to_dict(RECIPE) and record["seed"] == SEED
    assert record["data"] == json.loads(json.dumps(data.identity()))
    model = create_model(ModelConfig(ARCH, TAG), seed=0)  # loads strictly: every trained tensor present
    assert keys == set(model.state_dict())
    assert record["val"]["colour_accuracy"] >= 0.9


def test_the_shipped_text_features_are_what_the_code_computes_and_cover_the_splits():
    """The shipped shard (python -m benchmark.data.build_text_features) must hold every caption
    of the embedded training and defense splits, with the features a run would compute."""
    import random

    from benchmark.data.build_text_features import fresh_store, shipped_captions

    store = fresh_store()
    assert store.computed == 0 and not store.features  # reads nothing: computes everything
    shipped = TextFeatureStore(store.body_id, None, store.encode, store.tokenize, store.pad_id)
    captions = shipped_captions()
    assert set(captions) <= set(shipped.features), "rebuild: python -m benchmark.data.build_text_features"
    sample = random.Random(0).sample(captions, 48)
    # The shard stores float16; the MiniLM forward's last float32 bits depend on the CPU's
    # kernels (seen: 40 of 48 rows one float16 step apart on another machine), so the
    # features must agree to float16 rounding, not bit for bit.
    fresh, kept = store(sample), shipped(sample)
    torch.testing.assert_close(fresh, kept, rtol=0, atol=1e-3)
    assert (fresh - kept).abs().mean() < 1e-5  # a float16 step here and there, not a different body
    assert shipped.computed == 0 and store.computed == len(sample)


def _watched(objective, store, log: list[int]):
    """``objective`` with each training step's caption encodings counted into ``log``."""
    base = type(objective)

    class Watched(base):
        def __call__(self, model, batch, ctx):
            before = store.computed
            out = super().__call__(model, batch, ctx)
            log.append(store.computed - before)
            return out

    objective.__class__ = Watched
    return objective


def _augmenting_objectives(data):
    from defenses.cleanclip import CleanCLIPConfig, CleanCLIPObjective
    from defenses.roclip import RoCLIPConfig, RoCLIPObjective
    from defenses.ta_cleaner import TACleanerConfig, TACleanerObjective

    return {
        "cleanclip": lambda: CleanCLIPObjective(CleanCLIPConfig(), seed=0),
        # every sample selected, so that each epoch has sub-captions to encode
        "ta_cleaner": lambda: TACleanerObjective(TACleanerConfig(subset_fraction=1.0), 0, data.captions,
                                                 data.labels.tolist(), len(data)),
        "roclip": lambda: RoCLIPObjective(RoCLIPConfig(text_aug=True), 0, len(data), train_data=data),
    }


def test_augmented_texts_are_encoded_before_the_steps_not_per_batch(tmp_path):
    """EDA rewrites (CleanCLIP, TA-Cleaner, RoCLIP) and TA-Cleaner's sub-captions are known
    before an epoch (Objective.texts): the trainer encodes them in one call, so no training
    step encodes a caption (a per-batch encoding costs a whole fixed-shape chunk per caption
    length). Without the hook the steps do encode them: the check can fail."""
    from benchmark.data.embedded import load_split
    from benchmark.train import TrainConfig, train

    data = load_split("val").subset(range(48))
    cfg = TrainConfig(epochs=2, batch_size=24, lr=1e-4, warmup_steps=1)
    runs = [(name, make, True) for name, make in _augmenting_objectives(data).items()]
    runs.append(("cleanclip", _augmenting_objectives(data)["cleanclip"], False))  # the control
    for name, make, ahead in runs:
        model = _model(tmp_path / f"{name}-{ahead}")
        store, log = model.text_features, []
        objective = _watched(make(), store, log)
        if not ahead:
            objective.texts = lambda dataset, epoch: ()
        train(model, data, objective, cfg if ahead else TrainConfig(epochs=1, batch_size=24, lr=1e-4), seed=0)
        if ahead:
            assert len(log) == 4 and sum(log) == 0, f"{name}: steps encoded {log} captions"
            assert store.computed > len(set(data.captions)), name  # the augmented texts were encoded, ahead
        else:
            assert log[0] > 0, name
