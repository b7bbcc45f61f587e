"""Every registered attack honours the attack contract (timm-style), plus per-attack facts."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attacks.blended import Blended, BlendedConfig
from attacks.label_consistent import LabelConsistent, LabelConsistentConfig
from attacks.wanet import WaNet, WaNetConfig
from benchmark.api import AttackContext
from benchmark.config import ConfigError
from benchmark.data.captions import CLASS_NAMES
from benchmark.data.dataset import to_uint8
from benchmark.registry import attack_registry
from benchmark.testing import check_attack, check_poison, synthetic_pairs

REGISTRY = attack_registry()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads, and on a loaded 2-core box OpenMP spinning
    makes 2 threads up to ~50x slower than 1 (measured): keep PGD tests to seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

#: keep label-consistent PGD and BadCLIP's trigger optimisation short here (their full runs
#: are measured in the suite; tests/test_badclip.py checks that the optimisation works)
FAST = {"label_consistent": {"pgd_steps": 10}, "badclip": {"steps": 4}, "badclip_eot": {"steps": 4}}


def _config(cls, **extra):
    return dataclasses.replace(cls.Config(), poison_rate=0.05, **{**FAST.get(cls.name, {}), **extra})


@pytest.mark.parametrize("name", REGISTRY.names())
@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 32, 32)], ids=["gray28", "rgb32"])
def test_attack_contract(name, image_shape):
    cls = REGISTRY.get(name)
    check_attack(cls, image_shape=image_shape, seed=0, config=_config(cls))


def test_contract_runs_with_paper_defaults_including_100_pgd_steps():
    out = check_attack(LabelConsistent, poison_rate=0.02)  # 4 images; pgd_steps=100, eps 8/255
    assert out.manifest["trigger"]["pgd"]["steps"] == 100


# ---------------------------------------------------------------------------- WaNet
@pytest.mark.parametrize("s", [0.25, 0.5, 1.0])
def test_wanet_displacement_field_matches_strength(s):
    attack = WaNet(WaNetConfig(s=s), seed=3)
    h = 28
    u = attack.control_points
    assert u.shape == (1, 2, 4, 4)
    assert torch.isclose(u.abs().mean(), torch.tensor(1.0))  # U / mean|U|
    disp = attack.displacement()[0]  # (H, H, 2) in grid units
    # k=4 at H=28: (H-1)/(k-1) = 9, so the bicubic (align_corners) field passes exactly through U
    ctrl = disp[::9, ::9].permute(2, 0, 1)
    assert torch.allclose(ctrl * h / s, u[0], atol=1e-5)
    assert torch.isclose(ctrl.abs().mean() * h / s, torch.tensor(1.0), atol=1e-5)
    # the grid is identity + displacement, clamped only at the border
    raw = attack.identity_grid + attack.displacement()
    assert torch.equal(attack.grid, raw.clamp(-1, 1))
    interior = raw.abs() <= 1
    assert torch.allclose(attack.grid[interior], raw[interior])
    assert torch.allclose((attack.grid - attack.identity_grid)[interior], attack.displacement()[interior], atol=1e-6)
    # reported mean displacement in pixels: about s/2 px (grid units * (H-1)/2)
    mean_px = attack.trigger_params()["mean_displacement_px"]
    assert mean_px == pytest.approx(float(disp.abs().mean()) * (h - 1) / 2)
    assert 0.25 * s < mean_px < 0.75 * s


def test_wanet_strength_scales_the_warp_and_identity_warp_is_identity():
    x = torch.rand(4, 1, 28, 28)
    weak, strong = WaNet(WaNetConfig(s=0.25), seed=0), WaNet(WaNetConfig(s=1.0), seed=0)
    assert torch.allclose(strong.displacement(), 4 * weak.displacement())
    assert (strong.apply(x) - x).abs().mean() > 2 * (weak.apply(x) - x).abs().mean()
    ident = F.grid_sample(x, strong.identity_grid.expand(4, -1, -1, -1), align_corners=True)
    assert torch.allclose(ident, x, atol=1e-5)  # the identity grid follows grid_sample's (x, y) convention
    assert not torch.equal(WaNet(seed=0).control_points, WaNet(seed=1).control_points)


def test_wanet_noise_mode_keeps_true_captions_and_uses_per_sample_noise():
    data = synthetic_pairs()
    attack = WaNet(WaNetConfig(poison_rate=0.05, cross_ratio=2.0), seed=0)
    out = check_poison(WaNet, attack.config, data=data)
    m = out.manifest
    cross = np.asarray(m["cross_indices"])
    assert m["num_cross"] == len(cross) == 2 * m["num_poisoned"] == 20
    assert not out.data.poisoned[cross].any()
    assert [out.data.captions[i] for i in cross] == [data.captions[i] for i in cross]
    # each noise sample differs from the plain warp (grid + Uniform(-1,1)/H, fresh per sample)
    x = data.images[cross].float() / 255
    assert not torch.equal(out.data.images[cross], to_uint8(attack.apply(x)))
    grids = attack.noise_grids(len(cross))
    assert not torch.equal(grids[0], grids[1])
    assert float((grids - attack.grid).abs().max()) <= 1 / 28 + 1e-6


def test_wanet_rejects_bad_geometry():
    with pytest.raises(ConfigError, match="square"):
        WaNet(seed=0, image_shape=(1, 28, 32))
    with pytest.raises(ConfigError, match="k"):
        WaNetConfig(k=1)


# --------------------------------------------------------------------------- Blended
def test_blended_is_the_alpha_blend_of_a_seeded_pattern():
    attack = Blended(seed=0)
    x = torch.rand(3, 1, 28, 28)
    p = attack.pattern
    assert p.shape == (1, 28, 28) and 0 <= float(p.min()) and float(p.max()) <= 1
    assert torch.allclose(attack.apply(x), 0.8 * x + 0.2 * p)
    assert not torch.equal(p, Blended(seed=1).pattern)
    with pytest.raises(ConfigError, match="alpha"):
        BlendedConfig(alpha=0)


def test_blended_image_pattern_file_is_used_and_its_content_keys_the_cache(tmp_path):
    from PIL import Image

    path = tmp_path / "pattern.png"
    arr = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (40, 1))
    Image.fromarray(arr).convert("RGB").save(path)
    attack = Blended(BlendedConfig(pattern_path=str(path)), seed=0)
    assert attack.pattern.shape == (1, 28, 28)
    assert float(attack.pattern[0, :, 0].mean()) < 0.1 < 0.9 < float(attack.pattern[0, :, -1].mean())  # the gradient
    rgb = Blended(BlendedConfig(pattern_path=str(path)), seed=0, image_shape=(3, 32, 32))
    assert rgb.pattern.shape == (3, 32, 32)
    first = attack.identity()
    Image.fromarray(255 - arr).save(path)
    assert Blended(BlendedConfig(pattern_path=str(path)), seed=0).identity() != first
    with pytest.raises(ConfigError, match="not a file"):
        Blended(BlendedConfig(pattern_path=str(tmp_path / "missing.png")), seed=0)


# ----------------------------------------------------------------- label-consistent
def test_lc_touches_only_target_class_images_and_keeps_captions():
    data = synthetic_pairs()
    cfg = LabelConsistentConfig(poison_rate=0.05, pgd_steps=5)
    out = check_poison(LabelConsistent, cfg, data=data)
    target = CLASS_NAMES.index("sneaker")
    changed = torch.nonzero((out.data.images != data.images).flatten(1).any(1)).flatten()
    assert len(changed) == 10 and bool((data.labels[changed] == target).all())
    assert out.data.captions == data.captions  # every caption is the truthful original
    assert out.manifest["clean_label"] is True


def test_lc_rate_is_relative_to_the_whole_set_and_capped_at_the_target_class():
    data = synthetic_pairs()  # 20 images per class, 200 in all
    ctx = AttackContext(CLASS_NAMES, CLASS_NAMES.index("sneaker"), 0)
    assert len(LabelConsistent(LabelConsistentConfig(poison_rate=0.05), seed=0).select(data, ctx.target)) == 10
    assert len(LabelConsistent(LabelConsistentConfig(poison_rate=0.5), seed=0).select(data, ctx.target)) == 20


def test_lc_four_corner_trigger_sets_pixels_to_0_or_1():
    attack = LabelConsistent(seed=0)
    x = torch.full((2, 1, 28, 28), 0.5)
    y = attack.apply(x)
    mask = attack.mask()[0]
    assert int(mask.sum()) == 4 * 9
    assert set(y[:, 0][:, mask].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(y[:, 0][:, ~mask], x[:, 0][:, ~mask])
    for corner in (y[0, 0, :3, :3], y[0, 0, :3, -3:], y[0, 0, -3:, :3], y[0, 0, -3:, -3:]):
        assert corner.sum() == 5  # a 3x3 checkerboard with the outer corner pixel +1
    assert torch.equal(y, y.flip(-1)) and torch.equal(y, y.flip(-2))  # mirrored into the four corners


def test_lc_pgd_raises_the_reference_models_loss_within_eps():
    from benchmark.evaluate import zero_shot_weights
    from benchmark.models import ModelConfig, create_model

    torch.manual_seed(0)
    model = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0).eval()
    target = CLASS_NAMES.index("sneaker")
    ctx = AttackContext(CLASS_NAMES, target, 0, reference_model=lambda: model)
    x = (torch.rand(6, 1, 28, 28) * 255).round().to(torch.uint8)
    attack = LabelConsistent(LabelConsistentConfig(pgd_steps=20, pgd_batch_size=4), seed=0)
    xf = x.float() / 255
    adv = attack.pgd(model, xf, ctx)
    assert float((adv - xf).abs().max()) <= attack.config.eps + 1e-6
    assert 0 <= float(adv.min()) and float(adv.max()) <= 1
    w = zero_shot_weights(model, CLASS_NAMES, ctx.templates)
    labels = torch.full((6,), target)
    with torch.no_grad():
        def loss(z):
            return F.cross_entropy(model.logit_scale.exp() * model.encode_image(z) @ w.T, labels, reduction="none")
        assert bool((loss(adv) > loss(xf)).all())
    assert all(p.requires_grad for p in model.parameters())  # restored after PGD
    # batching does not change the result
    adv_one = attack.__class__(dataclasses.replace(attack.config, pgd_batch_size=6), seed=0).pgd(model, xf, ctx)
    assert torch.allclose(adv, adv_one, atol=1e-6)


def test_lc_pgd_steps_zero_is_the_caption_only_variant():
    data = synthetic_pairs()
    cfg = LabelConsistentConfig(poison_rate=0.05, pgd_steps=0)
    attack = LabelConsistent(cfg, seed=0)
    ctx = AttackContext(CLASS_NAMES, CLASS_NAMES.index("sneaker"), 0)  # no reference model needed
    out = attack.poison(data, ctx)
    idx = out.manifest["indices"]
    assert torch.equal(out.data.images[idx], to_uint8(attack.apply(data.images[idx].float() / 255)))
    assert out.data.captions == data.captions


# --------------------------------------------------------------------------- preview
#: attacks with a fixed trigger (an optimised one, BadCLIP's, is previewed in its own test: it trains first)
FIXED = [n for n in REGISTRY.names() if not REGISTRY.get(n).optimised_trigger]


def test_preview_cli_writes_a_png_of_every_attack_and_prints_its_path(tmp_path, capsys):
    from benchmark.cli import main
    from benchmark.preview import summary

    out = tmp_path / "sub" / "triggers.png"
    assert main(["preview", "--attack", ",".join(FIXED), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(out) as img:  # a clean row plus two rows per attack
        assert img.height > 100 * (1 + 2 * len(FIXED)) * 0.9
    thumbs = sorted(p.stem for p in (out.parent / "attacks").glob("*.png"))  # one thumbnail per attack
    assert thumbs == sorted(FIXED)
    with Image.open(out.parent / "attacks" / "sig.png") as img:  # clean | triggered | difference, x2
        assert img.size == (2 * (3 * 34 + 2), 2 * 36)
    changes = summary(FIXED)
    assert all(c["mean_abs_change"] > 0 for c in changes.values()), changes
    # the paper's warp (s = 0.5) is subtle; the embedded suite's s = 8 is what implants at 28 px
    from benchmark.suite import load_suite

    paper = load_suite("embedded", overrides={"attacks": {"wanet": {"s": 0.5}}})
    subtle = summary(["wanet"], suite=paper)["wanet"]["mean_abs_change"]
    assert subtle < changes["wanet"]["mean_abs_change"] / 2 and subtle < changes["blended"]["mean_abs_change"]
    assert main(["preview", "--attack", "badnet", "--out", str(tmp_path / "x.jpg")]) == 2
    assert main(["preview", "--attack", "badnett", "--out", str(out)]) == 2


def test_preview_of_an_optimised_trigger_runs_its_trigger_stage_once(tmp_path, cache_dir, capsys):
    from benchmark.cli import main
    from benchmark.session import Session

    out = tmp_path / "triggers.png"
    args = ["preview", "--attack", "badclip", "--out", str(out), "--set", "attacks.badclip.steps=2",
            "--set", "data.fraction=0.08"]
    assert main(args) == 0 and (tmp_path / "attacks" / "badclip.png").is_file()
    assert len(list((cache_dir / "trigger").iterdir())) == 1  # the stage, cached
    session = Session.open("embedded", ["attacks.badclip.steps=2", "data.fraction=0.08"])
    patch = session.method("attack", "badclip", 0).patch()  # served from the cache: the same trigger
    assert main(args) == 0 and len(list((cache_dir / "trigger").iterdir())) == 1
    x = session.split("test").images[:4].float() / 255
    attack = session.method("attack", "badclip", 0)
    (top, left), s = attack.position(), attack.side  # the suite's patch, in the middle
    assert torch.equal(attack.apply(x)[..., top : top + s, left : left + s], (patch.float() / 255).expand(4, -1, -1, -1))
