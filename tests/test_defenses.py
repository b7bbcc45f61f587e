"""Objectives of the defenses (CleanCLIP, RoCLIP, TA-Cleaner) and the defense contract."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from benchmark.api import DefenseContext, Stage
from benchmark.data.captions import CLASS_NAMES
from benchmark.data.dataset import Batch
from benchmark.losses import StepContext, clip_loss, info_nce, caption_targets
from benchmark.models import ModelConfig, create_model
from benchmark.registry import defense_registry
from benchmark.testing import caption_pairs, check_defense
from benchmark.train import TrainConfig


def _micro():
    return create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0)


def _batch(data, idx) -> Batch:
    return data.__getitems__(list(idx))


def _step(epoch: int = 1, seed: int = 0) -> StepContext:
    return StepContext(epoch=epoch, step=0, total_steps=10, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def data():
    return caption_pairs(per_class=8, seed=0)


# ------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", defense_registry().names())
def test_every_registered_defense_honours_the_contract(name):
    check_defense(defense_registry().get(name))


def test_expected_defenses_and_stages_are_registered():
    reg = defense_registry()
    stages = {n: reg.get(n).stage for n in ("none", "finetune", "finetune_aug", "cleanclip", "roclip", "ta_cleaner")}
    assert stages == {"none": Stage.NONE, "finetune": Stage.POST_TRAINING, "finetune_aug": Stage.POST_TRAINING,
                      "cleanclip": Stage.POST_TRAINING, "roclip": Stage.TRAINING, "ta_cleaner": Stage.POST_TRAINING}


def test_paper_defaults():
    reg = defense_registry()
    cc = reg.get("cleanclip").Config()
    assert (cc.lambda1, cc.lambda2, cc.eda_alpha) == (1.0, 1.0, 0.1)
    assert (cc.train.batch_size, cc.train.epochs, cc.train.lr, cc.train.warmup_steps) == (64, 10, 1e-5, 50)
    assert reg.get("finetune").Config().train == cc.train  # same schedule: the comparison isolates the loss
    assert reg.get("roclip").Config().match_every == 2
    assert reg.get("finetune_aug").Config().augment and not reg.get("finetune").Config().augment


# ------------------------------------------------------------------------- CleanCLIP
def test_cleanclip_with_lambda2_zero_is_the_clip_loss(data):
    from defenses.cleanclip import CleanCLIPConfig, CleanCLIPObjective

    model = _micro().eval()  # eval: batch-norm statistics do not depend on the concatenated views
    batch = _batch(data, range(24))
    obj = CleanCLIPObjective(CleanCLIPConfig(lambda2=0.0), seed=0)
    out = obj(model, batch, _step())
    img, txt = model(batch.images, batch.captions)
    expected = clip_loss(img, txt, model.logit_scale.exp(), caption_targets(batch.captions))
    assert torch.allclose(out.loss, expected, atol=1e-5)
    full = CleanCLIPObjective(CleanCLIPConfig(), seed=0)(model, batch, _step())
    assert full.loss > out.loss + 0.1 and full.parts["inmodal_image"] > 0 and full.parts["inmodal_text"] > 0


def test_cleanclip_inmodal_terms_run_original_to_augmented():
    from defenses.cleanclip import CleanCLIPConfig, CleanCLIPObjective

    obj = CleanCLIPObjective(CleanCLIPConfig(lambda1=0.0, lambda2=2.0), seed=0)
    g = torch.Generator().manual_seed(0)
    n, d = 6, 8
    e = {k: torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1) for k in ("img", "img_aug", "txt", "txt_aug")}
    e["captions"] = [f"caption {i}." for i in range(n)]
    model = torch.nn.Module()
    model.logit_scale = torch.nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
    loss, parts = obj.cleanclip_loss(model, e)
    s = model.logit_scale.exp()
    forward = info_nce(e["img"], e["img_aug"], s) + info_nce(e["txt"], e["txt_aug"], s)
    backward = info_nce(e["img_aug"], e["img"], s) + info_nce(e["txt_aug"], e["txt"], s)
    assert torch.allclose(loss, forward)  # lambda2 * 1/2 * (I->I~ + T->T~)
    assert not torch.allclose(loss, backward)


def test_cleanclip_augments_images_per_sample_with_a_seeded_generator(data):
    from defenses.image_augment import autoaugment

    x = data.images[:64].float() / 255
    a = autoaugment(x, torch.Generator().manual_seed(1))
    b = autoaugment(x, torch.Generator().manual_seed(1))
    c = autoaugment(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    changed = (a - x).flatten(1).abs().amax(1) > 0
    assert 0.3 < changed.float().mean() < 1.0  # fresh per sample: some samples draw no-op sub-policies


# --------------------------------------------------------------------------- RoCLIP
def test_roclip_pool_is_fifo():
    from defenses.roclip import CaptionPool

    pool = CaptionPool(5)
    for start in (0, 3, 6):
        ids = torch.arange(start, start + 3)
        pool.enqueue(torch.randn(3, 4), [f"c{i}" for i in ids.tolist()], ids)
    assert len(pool) == 5
    assert pool.ordered_ids() == [4, 5, 6, 7, 8]  # the oldest four are gone, order kept
    assert [pool.captions[s] for s in pool.order().tolist()] == ["c4", "c5", "c6", "c7", "c8"]


def _roclip(data, **kw):
    from defenses.roclip import RoCLIPConfig, RoCLIPObjective

    cfg = RoCLIPConfig(**{"pool_min_batches": 2, **kw})
    return RoCLIPObjective(cfg, seed=0, num_samples=len(data), prefill_data=data)


def test_roclip_matches_exactly_on_epochs_divisible_by_k(data):
    model = _micro().train()
    for k in (1, 2, 3):
        obj = _roclip(data, match_every=k, prefill=False)
        seen = []
        for epoch in range(1, 7):
            obj.on_epoch_start(model, epoch, _step(epoch))
            before = [] if obj.pool is None else obj.pool.ordered_ids()
            out = obj(model, _batch(data, range(16 * epoch % 64, 16 * epoch % 64 + 16)), _step(epoch))
            after = [] if obj.pool is None else obj.pool.ordered_ids()
            seen.append(obj.matching)
            assert (after != before) == obj.matching  # the pool is written only in matching epochs
            assert ("match" in out.parts or "clip" in out.parts)
        assert seen == [e % k == 0 for e in range(1, 7)]


def test_roclip_never_retrieves_from_the_current_batch_and_text_tower_gets_no_gradient(data):
    model = _micro().train()
    obj = _roclip(data, match_every=1)  # pre-filled pool: it contains samples of the batches too
    obj.on_epoch_start(model, 1, _step(1))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    for b in range(4):
        batch = _batch(data, order[24 * b: 24 * (b + 1)].tolist())
        model.zero_grad(set_to_none=True)
        out = obj(model, batch, _step(1))
        assert "match" in out.parts
        assert not set(obj.last_retrieved_ids.tolist()) & set(batch.index.tolist())
        out.loss.backward()
        text = [p for n, p in model.clip.named_parameters() if not n.startswith("visual.") and n != "logit_scale"]
        assert text and all(p.grad is None or not p.grad.any() for p in text)
        assert any(p.grad is not None and p.grad.any() for p in model.clip.visual.parameters())
    # in a plain epoch both towers learn
    plain = _roclip(data, match_every=2)
    plain.on_epoch_start(model, 1, _step(1))
    model.zero_grad(set_to_none=True)
    plain(model, _batch(data, range(24)), _step(1)).loss.backward()
    assert any(p.grad is not None and p.grad.any() for n, p in model.clip.named_parameters() if not n.startswith("visual."))


def test_roclip_records_what_the_poisoned_images_retrieve(data):
    from defenses.roclip import RoCLIPConfig, RoCLIPObjective

    poisoned = data.subset(range(len(data)))
    poisoned.poisoned[:10] = True
    model = _micro().train()
    obj = RoCLIPObjective(RoCLIPConfig(match_every=1, pool_min_batches=2), seed=0, num_samples=len(poisoned),
                          prefill_data=poisoned, train_data=poisoned)
    obj.on_epoch_start(model, 1, _step(1))
    first = None
    for b in range(3):
        batch = _batch(poisoned, range(24 * b, 24 * (b + 1)))
        obj(model, batch, _step(1))
        if first is None:  # the 10 poisoned pairs are all in the first batch
            first = obj.last_retrieved_ids[poisoned.poisoned[batch.index]]
    (entry,) = obj.diagnostics()["roclip_retrieval"]
    assert entry["epoch"] == 1 and entry["poisoned_images"] == 10
    assert entry["retrieved_poisoned"] + sum(entry["retrieved_label_counts"].values()) == 10
    assert entry["retrieved_poisoned"] == int(poisoned.poisoned[first].sum())
    clean = first[~poisoned.poisoned[first]]
    assert entry["retrieved_label_counts"] == {str(k): int((poisoned.labels[clean] == k).sum())
                                               for k in poisoned.labels[clean].unique().tolist()}


def test_roclip_pool_is_a_fraction_of_the_data():
    from defenses.roclip import RoCLIPConfig, RoCLIPObjective

    obj = RoCLIPObjective(RoCLIPConfig(), seed=0, num_samples=100_000)
    assert obj.pool_size(128) == 5_000  # 5% of the data, >> a batch
    small = RoCLIPObjective(RoCLIPConfig(), seed=0, num_samples=8_000)
    assert small.pool_size(128) == 1_280  # at least 10 batches
    assert small.pool_size(128) < 8_000 / 2


# ----------------------------------------------------------------------- TA-Cleaner
def test_ta_cleaner_resamples_its_subset_every_epoch_and_adds_its_term(data):
    from defenses.ta_cleaner import TACleanerConfig, TACleanerObjective

    model = _micro().eval()
    cfg = TACleanerConfig(subset_fraction=0.5)
    obj = TACleanerObjective(cfg, 0, data.captions, data.labels.tolist(), len(data))
    obj.on_epoch_start(model, 1, _step(1))
    first = obj.selected.clone()
    obj.on_epoch_start(model, 2, _step(2))
    assert first.sum() == obj.selected.sum() == round(0.5 * len(data)) and not torch.equal(first, obj.selected)
    batch = _batch(data, range(32))
    out = obj(model, batch, _step(2))
    assert out.parts["ta_selected"] > 0 and out.parts["ta"] > 0
    zero = TACleanerObjective(dataclasses.replace(cfg, lambda3=0.0), 0, data.captions, data.labels.tolist(), len(data))
    zero.on_epoch_start(model, 2, _step(2))
    assert torch.allclose(zero(model, batch, _step(2)).loss + cfg.lambda3 * out.parts["ta"], out.loss, atol=1e-4)


# ------------------------------------------------------- a clean model stays accurate
SHIPPED = ModelConfig("clipbench-minilm-rn", "embedded-v3")


@pytest.fixture(scope="module")
def clean_tiny(tiny_suite):
    """The shipped clean embedded CLIP (clipbench-minilm-rn / embedded-v3) on the tiny
    suite's data, with its test CA: the realistic clean model a defense may be applied to."""
    from benchmark.data.sources import open_data
    from benchmark.evaluate import evaluate

    data = open_data(tiny_suite.data, tiny_suite.model)
    model = create_model(SHIPPED, seed=0)
    test = data.split("test")
    ca = evaluate(model, test, data.class_names, data.templates).clean_accuracy
    return data, model.state_dict(), ca


@pytest.mark.slow
@pytest.mark.parametrize("name", ["finetune", "finetune_aug", "cleanclip", "ta_cleaner", "roclip"])
def test_defense_keeps_a_clean_models_accuracy(name, clean_tiny, tiny_suite):
    """Defending a model that has no backdoor must not wreck it (tiny run, 12-point tolerance)."""
    from benchmark.evaluate import evaluate
    from benchmark.stages import apply_defense

    data, state, ca = clean_tiny
    assert ca > 0.4  # the tiny clean model is a real classifier
    from benchmark.config import from_dict

    cls = defense_registry().get(name)
    # the suite's configuration of the defense (what the benchmark runs), on a tiny schedule
    schedule = TrainConfig(epochs=3, batch_size=64, lr=5e-4, warmup_steps=5, beta2=0.999, eps=1e-8)
    defense = cls(dataclasses.replace(from_dict(cls.Config, tiny_suite.defense_overrides(name)), train=schedule), seed=0)
    model = create_model(SHIPPED, seed=0)
    model.load_state_dict(state)
    apply_defense(defense, model, 0, class_names=data.class_names, poisoned=data.split("train"),
                  clean=data.split("defense"), schedule=schedule)
    after = evaluate(model, data.split("test"), data.class_names, data.templates).clean_accuracy
    # 12 points: on the shipped model and 320 defense pairs TA-Cleaner measured 0.720 -> 0.615
    # (the full-scale matrix: -0.3 to -2.2 points); the others stay within 5
    assert after > ca - 0.12, f"{name}: clean accuracy {ca:.3f} -> {after:.3f}"
