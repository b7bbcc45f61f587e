"""BadCLIP's optimised trigger, its cached stage, EOT over a defense's views (also for
label-consistent's PGD), and the natural poisoned captions."""
import dataclasses

import numpy as np
import pytest
import torch

import attacks.badclip as badclip_module
import attacks.label_consistent as lc_module
from attacks.badclip import BadCLIP, BadCLIPConfig
from attacks.badclip_eot import BadCLIPEOT
from attacks.label_consistent import LabelConsistent, LabelConsistentConfig
from benchmark import AttackContext, ConfigError
from benchmark.data.captions import CLASS_NAMES, ZERO_SHOT_TEMPLATES
from benchmark.models import ModelConfig, create_model
from benchmark.poison import regenerate
from benchmark.testing import synthetic_pairs

SHAPE = (3, 32, 32)
TARGET = CLASS_NAMES.index("sneaker")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    """A micro CLIP whose batch-norm statistics are those of the synthetic images: at its
    initial statistics every image gets the same embedding in eval mode (nothing to optimise)."""
    m = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.momentum = None  # a cumulative average over the pass
                mod.reset_running_stats()
        m.train()
        m.encode_image(synthetic_pairs(SHAPE).images.float() / 255)
    return m.eval()


def _ctx(model):
    return AttackContext(CLASS_NAMES, TARGET, 0, reference_model=lambda: model, templates=ZERO_SHOT_TEMPLATES)


def _recorder(monkeypatch, module):
    """Make ``module.defense_image_views`` hand out a recording wrapper of the real views."""
    from benchmark import defense_image_views

    calls = []

    def views_of(name):
        real = defense_image_views(name)

        def views(images, generator):
            out = real(images, generator)
            calls.append((images.detach().clone(), out.detach().clone(), out.requires_grad))
            return out
        return views
    monkeypatch.setattr(module, "defense_image_views", views_of)
    return calls


def test_optimisation_lowers_the_guidance_loss_and_raises_target_similarity_vs_random_patches(model):
    data = synthetic_pairs(SHAPE)
    # an 8 px patch: on the untrained micro CLIP a 3 px one moves the embeddings too little to measure
    attack = BadCLIP(BadCLIPConfig(patch_size=8, steps=60, lr=0.05), seed=0, image_shape=SHAPE)
    state = attack.optimise_trigger(data, _ctx(model))
    assert state["patch"].dtype == torch.uint8 and tuple(state["patch"].shape) == (3, 8, 8)
    assert float(state["loss"][-10:].mean()) < float(state["loss"][:10].mean())
    assert state["target_cosine"].shape == (2,) and bool(torch.isfinite(state["target_cosine"]).all())

    # held-out check on fixed pairs: the optimised patch beats random patches on both guidances
    attack.load_trigger(state)
    g = torch.Generator().manual_seed(7)
    others = torch.nonzero(data.labels != TARGET).flatten()[:64]
    targets = torch.nonzero(data.labels == TARGET).flatten()
    x = data.images[others].float() / 255
    with torch.no_grad():
        text = model.encode_text([data.captions[i] for i in targets[torch.randint(len(targets), (64,), generator=g)]])
        pos = model.encode_image(data.images[targets[torch.randint(len(targets), (64,), generator=g)]].float() / 255)
        t_mean = torch.nn.functional.normalize(text.mean(0), dim=0)

        def score(patch):  # the loss, its visual (triplet) term, and the similarity to the target's captions
            xt = attack.paste(x, patch)
            loss, parts = attack.guidance_loss(model, x, xt, text, pos)
            return float(loss), float(parts["visual"]), float((model.encode_image(xt) @ t_mean).mean())

        opt = score(attack.patch().float() / 255)
        randoms = [score(torch.rand(3, 8, 8, generator=g)) for _ in range(5)]
    assert opt[0] < min(r[0] for r in randoms), (opt, randoms)
    assert opt[1] < min(r[1] for r in randoms), (opt, randoms)  # (synthetic "target" images are noise like the others)
    assert opt[2] > max(r[2] for r in randoms), (opt, randoms)
    # deterministic for a seed, different for another
    assert torch.equal(BadCLIP(attack.config, seed=0, image_shape=SHAPE).optimise_trigger(data, _ctx(model))["patch"],
                       state["patch"])
    assert not torch.equal(BadCLIP(attack.config, seed=1, image_shape=SHAPE).optimise_trigger(data, _ctx(model))["patch"],
                           state["patch"])


def test_eot_draws_the_defense_views_and_changes_the_trigger(model, monkeypatch):
    data = synthetic_pairs(SHAPE)
    config = BadCLIPConfig(patch_size=6, steps=6, batch_size=16, lr=0.05)
    plain = BadCLIP(config, seed=0, image_shape=SHAPE).optimise_trigger(data, _ctx(model))["patch"]
    calls = _recorder(monkeypatch, badclip_module)
    eot = BadCLIP(dataclasses.replace(config, eot="cleanclip"), seed=0, image_shape=SHAPE)
    patch = eot.optimise_trigger(data, _ctx(model))["patch"]
    assert len(calls) == 6  # one draw of views per step
    for images, views, differentiable in calls:
        assert images.shape == (16, *SHAPE) and differentiable  # the triggered batch, with a gradient path
        changed = (views - images).flatten(1).abs().amax(1) > 1 / 255
        assert 0 < int(changed.sum()) <= 16  # AutoAugment's ops changed images (some ops may be identities)
    assert not torch.equal(calls[0][1], calls[1][1])  # fresh draws every step
    assert not torch.equal(patch, plain)  # the expectation over views moved the trigger elsewhere
    monkeypatch.undo()
    again = BadCLIP(dataclasses.replace(config, eot="cleanclip"), seed=0, image_shape=SHAPE).optimise_trigger(
        data, _ctx(model))["patch"]
    assert torch.equal(again, patch)  # the draws come from the seed


def test_label_consistent_pgd_with_eot_draws_views_per_sample(model, monkeypatch):
    calls = _recorder(monkeypatch, lc_module)
    attack = LabelConsistent(LabelConsistentConfig(pgd_steps=3, eot="cleanclip", eot_samples=2), seed=0,
                             image_shape=SHAPE)
    x = torch.rand(5, *SHAPE)
    adv = attack.pgd(model, x, _ctx(model))
    assert len(calls) == 3 * 2  # eot_samples draws per step
    assert float((adv - x).abs().max()) <= attack.config.eps + 1e-6
    monkeypatch.undo()
    plain = LabelConsistent(LabelConsistentConfig(pgd_steps=3), seed=0, image_shape=SHAPE).pgd(model, x, _ctx(model))
    assert not torch.equal(adv, plain)


def test_poisoned_captions_are_natural_target_captions_and_the_manifest_holds_the_trigger(model):
    data = synthetic_pairs(SHAPE)
    attack = BadCLIP(BadCLIPConfig(poison_rate=0.05, steps=3), seed=0, image_shape=SHAPE)
    with pytest.raises(RuntimeError, match="none is loaded"):
        attack.apply(torch.rand(1, *SHAPE))
    out = attack.poison(data, _ctx(model))  # no trigger loaded: optimised on the data first
    idx = out.manifest["indices"]
    pool = {data.captions[i] for i in np.flatnonzero(data.labels.numpy() == TARGET)}
    captions = [out.data.captions[i] for i in idx]
    assert set(captions) <= pool and len(set(captions)) > 1
    assert not set(captions) & {t.format("sneaker") for t in ZERO_SHOT_TEMPLATES}
    assert not bool((data.labels[idx] == TARGET).any())
    m = out.manifest
    assert torch.equal(torch.tensor(m["trigger"]["patch_u8"], dtype=torch.uint8), attack.patch())
    assert set(m["trigger"]["optimisation"]) == {"loss", "textual", "visual", "target_cosine"}
    rebuilt = regenerate(m, data, attack_cls=BadCLIP)  # the trigger comes from the manifest: no model needed
    assert torch.equal(rebuilt.data.images, out.data.images) and rebuilt.data.captions == out.data.captions
    with pytest.raises(ValueError, match="does not fit"):
        BadCLIP(BadCLIPConfig(patch_size=4), seed=0, image_shape=SHAPE).load_trigger({"patch": attack.patch()})


def test_eot_names_a_defense_with_views():
    with pytest.raises(ConfigError, match="cleanclip"):
        BadCLIP(BadCLIPConfig(eot="finetune"), image_shape=SHAPE)
    with pytest.raises(ConfigError, match="unknown defense"):
        LabelConsistent(LabelConsistentConfig(eot="cleanclipp"), image_shape=SHAPE)
    with pytest.raises(ConfigError, match="badclip attack"):
        BadCLIPEOT(dataclasses.replace(BadCLIPEOT.Config(), eot=None), image_shape=SHAPE)
    assert BadCLIPEOT(image_shape=SHAPE).config.eot == "cleanclip"
    assert BadCLIP(image_shape=SHAPE).side == 3 and BadCLIP(image_shape=SHAPE).position() == (14, 14)  # middle


def test_the_trigger_is_a_stage_of_its_own_keyed_by_what_it_depends_on(tmp_path):
    from benchmark.data.sources import open_data
    from benchmark.plan import make_plan
    from benchmark.registry import attack_registry, defense_registry
    from benchmark.suite import SuiteConfig

    def plan(attack="badclip", **cfg):
        suite = SuiteConfig(attack_common={"target": "sneaker"}, attacks={attack: cfg} if cfg else {})
        return make_plan(suite, open_data(suite.data), [attack], ["none", "finetune"], [0], attack_registry(),
                         defense_registry(), tmp_path)

    base = plan()
    (trigger,) = [n for n in base.nodes.values() if n.kind == "trigger"]
    assert trigger.deps == (base.cells[0].stage_keys["pretrain"],)  # optimised on the clean model
    for cell in base.cells:
        assert trigger.key in base.nodes[cell.stage_keys["poison"]].deps
        for key in (cell.eval_key, cell.baseline_key, cell.clean_key):
            assert trigger.key in base.nodes[key].deps and base.nodes[key].spec["trigger"] == trigger.key

    def keys(p):
        (t,) = [n.key for n in p.nodes.values() if n.kind == "trigger"]
        return t, p.cells[0].stage_keys["poison"], p.cells[0].eval_key

    t0, p0, e0 = keys(base)
    t1, p1, e1 = keys(plan(eot="cleanclip"))
    assert t1 != t0 and p1 != p0 and e1 != e0  # eot changes the trigger, hence everything below it
    t2, p2, _ = keys(plan(poison_rate=0.02))
    assert t2 == t0 and p2 != p0  # the poison rate does not touch the optimisation: the trigger is reused
    assert keys(plan(steps=10))[0] != t0
    assert not [n for n in plan("badnet").nodes.values() if n.kind == "trigger"]


@pytest.mark.slow
def test_a_badclip_cell_runs_its_trigger_stage_once_and_evaluates_with_it(tmp_path, tiny_sets):
    from benchmark.cache import resolve_ref
    from benchmark.config import parse_set
    from benchmark.session import Session

    import json

    session = Session.open("embedded", parse_set(tiny_sets + ["attacks.badclip.steps=3"]), cache_dir=tmp_path / "cache")
    plan = session.plan("badclip", "none", [0], tmp_path / "results")
    kinds = [n.kind for n in session.status(plan).to_run]
    assert kinds.count("trigger") == 1 and kinds.index("trigger") < kinds.index("poison")
    report = session.run(plan, "local")
    assert not report.failed
    result = report.results[0]
    assert result["attack"]["family"] == "optimised"
    manifest = json.loads(resolve_ref(result["poison"]["manifest"], tmp_path / "cache").read_text())
    assert manifest["trigger_stage"].startswith("cache:trigger/")
    attack = session.method("attack", "badclip", 0)  # the preview / tuning path: loaded from the cached stage
    assert attack.patch().tolist() == manifest["trigger"]["patch_u8"]
    assert not session.status(session.plan("badclip", "none", [0], tmp_path / "other")).to_run


def test_defense_views_are_exactly_the_defenses_augmentations_and_differentiable():
    from benchmark import defense_image_views
    from defenses.image_augment import autoaugment, simclr_augment

    x = torch.rand(32, *SHAPE)
    for name, plain in (("cleanclip", autoaugment), ("ta_cleaner", autoaugment), ("finetune_aug", autoaugment),
                        ("roclip", simclr_augment)):
        views = defense_image_views(name)
        xg = x.clone().requires_grad_(True)
        out = views(xg, torch.Generator().manual_seed(3))
        assert torch.equal(out.detach(), plain(x, torch.Generator().manual_seed(3))), name  # the same draws and values
        (grad,) = torch.autograd.grad(out.sum(), xg)
        assert float(grad.abs().sum()) > 0, name
    with pytest.raises(ConfigError, match="un-augmented"):
        defense_image_views("finetune")
