"""The attack contract (:func:`check_attack`), shared with plugin authors through :mod:`benchmark.testing`.

:func:`check_trigger` checks the test-time trigger ``apply`` (fixed, batch-independent,
shape/dtype/range preserving); :func:`check_poison` the poisoning (seeded, the configured
count, train-time trigger == test-time trigger, labels kept, untouched samples untouched, a
JSON manifest that regenerates the set). Attacks that need a reference model get a
randomly initialised micro CLIP; nothing is downloaded.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from .api import Attack, AttackConfig, AttackContext, PoisonedSet
from .contract_data import synthetic_pairs
from .data.captions import CLASS_NAMES, ZERO_SHOT_TEMPLATES
from .data.dataset import TensorPairs, to_uint8


#: one float32 step of uint8 quantisation, the tolerance when comparing re-quantised images
_Q = 0.5 / 255 + 1e-6


def _reference_model():
    from .models import ModelConfig, create_model

    return create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0).eval()


def _context(attack: Attack, seed: int, model_box: dict[str, Any]) -> AttackContext:
    def loader():
        if "model" not in model_box:
            model_box["model"] = _reference_model()
        return model_box["model"]

    # the contract data is the embedded world's: an attack built without a suite (target None)
    # is checked against its "sneaker" class, the embedded suite's own target
    target = CLASS_NAMES.index(attack.config.target or "sneaker")
    return AttackContext(CLASS_NAMES, target, seed, reference_model=loader if attack.needs_reference_model else None,
                         templates=ZERO_SHOT_TEMPLATES)


def expected_poison_count(attack: Attack, data: TensorPairs, target: int) -> int:
    """``max(1, round(rate * N))``; clean-label attacks cap it at the number of target images."""
    count = max(1, round(attack.config.poison_rate * len(data)))
    if attack.clean_label:
        count = min(count, int((data.labels == target).sum()))
    return count


def check_trigger(attack_cls: type[Attack], config: AttackConfig | None = None, image_shape: tuple[int, int, int] = (1, 28, 28),
                  seed: int = 0) -> None:
    """The test-time trigger ``apply``: fixed, batch-independent, shape/dtype/range preserving."""
    attack = attack_cls(config, seed=seed, image_shape=image_shape)
    twin = attack_cls(config, seed=seed, image_shape=image_shape)
    if attack.optimised_trigger:  # what the engine's trigger stage does: optimise on the clean model, load
        box: dict[str, Any] = {}
        for a in (attack, twin):
            a.load_trigger(a.optimise_trigger(synthetic_pairs(image_shape), _context(a, seed, box)))
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(6, *image_shape, generator=g)
    x[0] = 0.0
    x[1] = 1.0
    before = x.clone()
    y = attack.apply(x)
    assert torch.equal(x, before), f"{attack_cls.__name__}.apply modified its input in place"
    assert y.shape == x.shape, f"{attack_cls.__name__}.apply changed the shape {tuple(x.shape)} -> {tuple(y.shape)}"
    assert y.dtype == x.dtype, f"{attack_cls.__name__}.apply changed the dtype {x.dtype} -> {y.dtype}"
    assert bool(torch.isfinite(y).all()) and float(y.min()) >= 0 and float(y.max()) <= 1, \
        f"{attack_cls.__name__}.apply left [0, 1]: [{float(y.min())}, {float(y.max())}]"
    assert not torch.equal(to_uint8(y), to_uint8(x)), f"{attack_cls.__name__}.apply leaves images unchanged (no trigger)"
    assert torch.equal(y, twin.apply(x)), f"{attack_cls.__name__}.apply is not deterministic for seed {seed}"
    assert torch.equal(y, attack.apply(x)), f"{attack_cls.__name__}.apply changes between calls (trigger redrawn?)"
    single = torch.cat([attack.apply(x[i : i + 1]) for i in range(len(x))])
    assert torch.allclose(single, y, atol=1e-6), \
        f"{attack_cls.__name__}.apply depends on the batch (the trigger must be one fixed function per image)"
    y64 = attack.apply(x.double())
    assert y64.dtype == torch.float64 and torch.allclose(y64.float(), y, atol=1e-5), \
        f"{attack_cls.__name__}.apply does not preserve float64 inputs"


def check_poison(attack_cls: type[Attack], config: AttackConfig | None = None, image_shape: tuple[int, int, int] = (1, 28, 28),
                 seed: int = 0, data: TensorPairs | None = None) -> PoisonedSet:
    """``poison``: seeded, the configured count, train-time trigger == test-time trigger,
    labels kept, untouched samples untouched, a JSON manifest that regenerates the set."""
    from .poison import regenerate

    name = attack_cls.__name__
    data = data if data is not None else synthetic_pairs(image_shape)
    before = data.images.clone()
    box: dict[str, Any] = {}
    attack = attack_cls(config, seed=seed, image_shape=image_shape)
    ctx = _context(attack, seed, box)
    target = ctx.target
    out = attack.poison(data, ctx)
    assert torch.equal(data.images, before), f"{name}.poison modified the clean set in place"
    d, m = out.data, out.manifest
    index = np.asarray(m["indices"], dtype=np.int64)

    # counts
    expected = expected_poison_count(attack, data, target)
    assert len(index) == expected == int(d.poisoned.sum()) == m["num_poisoned"], \
        f"{name} poisoned {len(index)} (mask {int(d.poisoned.sum())}, manifest {m['num_poisoned']}) samples; " \
        f"rate {attack.config.poison_rate} of {len(data)} asks for {expected}"
    assert len(set(index.tolist())) == len(index), f"{name} selected an index twice"
    assert torch.equal(torch.nonzero(d.poisoned).flatten(), torch.as_tensor(np.sort(index))), \
        f"{name}: the poisoned mask does not match the manifest's indices"
    assert len(d) == len(data) and d.images.dtype == torch.uint8 and d.image_shape == data.image_shape, \
        f"{name}.poison changed the size, dtype or image shape of the set"
    assert torch.equal(d.labels, data.labels), f"{name}.poison changed labels (labels are ground truth, never poisoned)"

    # what is touched
    cross = np.asarray(m.get("cross_indices", []), dtype=np.int64)
    assert not set(cross.tolist()) & set(index.tolist()), f"{name}: cross (noise-mode) samples overlap poisoned ones"
    untouched = np.setdiff1d(np.arange(len(data)), np.concatenate([index, cross]))
    assert torch.equal(d.images[untouched], data.images[untouched]), f"{name} changed images it did not select"
    assert all(d.captions[i] == data.captions[i] for i in np.concatenate([untouched, cross]).tolist()), \
        f"{name} changed captions of samples it did not poison"
    if attack.clean_label:
        assert bool((data.labels[index] == target).all()), f"{name} is clean-label but poisoned non-target images"
        assert all(d.captions[i] == data.captions[i] for i in index.tolist()), \
            f"{name} is clean-label but changed captions"
    else:
        assert bool((data.labels[index] != target).all()), f"{name} poisoned target-class images"
        allowed = attack.allowed_poison_captions(data, ctx)  # default: the target-class zero-shot templates
        bad = [d.captions[i] for i in index.tolist() if d.captions[i] not in allowed]
        assert not bad, f"{name}: poisoned captions must be allowed_poison_captions (by default target-class zero-shot templates), got {bad[:3]}"
        if len(index) >= 8 and len(ctx.templates) > 1:
            assert len({d.captions[i] for i in index.tolist()}) > 1, f"{name}: one template for every poisoned caption"

    # train-time trigger == test-time trigger
    clean = data.images[index].float() / 255
    triggered = to_uint8(attack.apply(clean)).float() / 255
    diff = float((d.images[index].float() / 255 - triggered).abs().max()) if len(index) else 0.0
    slack = attack.train_time_slack()
    assert diff <= slack + _Q, \
        f"{name}: poisoned training images differ from the test-time trigger by {diff:.4f} > {slack:.4f} (L-inf)"
    if slack > 0:  # the extra training-time perturbation keeps the trigger itself
        assert torch.equal(to_uint8(attack.apply(d.images[index].float() / 255)), d.images[index]), \
            f"{name}: the training-time perturbation destroys the trigger"

    # determinism and the manifest
    again = attack_cls(config, seed=seed, image_shape=image_shape).poison(data, _context(attack, seed, box))
    assert _same(again, out), f"{name}.poison is not deterministic for seed {seed}"
    candidates = int((data.labels == target).sum()) if attack.clean_label else int((data.labels != target).sum())
    if expected < candidates:
        other = attack_cls(config, seed=seed + 1, image_shape=image_shape).select(data, target)
        assert other.tolist() != m["indices"], f"{name}.select ignores the seed"
    manifest = json.loads(json.dumps(m))  # what the cache stores
    for key in ("attack", "seed", "config", "trigger", "indices", "captions", "num_poisoned", "num_samples", "sha256"):
        assert key in manifest, f"{name}'s manifest lacks {key!r}"
    rebuilt = regenerate(manifest, data, attack_cls=attack_cls, reference_model=box.get("model"))
    assert _same(rebuilt, out), f"{name}: the manifest does not regenerate the poisoned set"
    return out


def _same(a: PoisonedSet, b: PoisonedSet) -> bool:
    return (torch.equal(a.data.images, b.data.images) and a.data.captions == b.data.captions
            and torch.equal(a.data.labels, b.data.labels) and torch.equal(a.data.poisoned, b.data.poisoned))


def check_attack(attack_cls: type[Attack], image_shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0,
                 config: AttackConfig | None = None, poison_rate: float = 0.05) -> PoisonedSet:
    """Every contract check of an attack class, on synthetic data of ``image_shape``.

    ``config`` defaults to the class's paper defaults with ``poison_rate`` (5% of the 200
    synthetic pairs, i.e. 10) so that the checks see several poisoned samples. Returns the
    poisoned set for further, attack-specific assertions.
    """
    import dataclasses

    assert issubclass(attack_cls, Attack), f"{attack_cls!r} is not a benchmark.api.Attack"
    assert attack_cls.name and attack_cls.name == attack_cls.name.lower() and " " not in attack_cls.name, \
        f"{attack_cls.__name__}.name must be a lowercase snake_case registry name, got {attack_cls.name!r}"
    assert attack_cls.paper, f"{attack_cls.__name__}.paper should cite the paper"
    assert dataclasses.is_dataclass(attack_cls.Config) and issubclass(attack_cls.Config, AttackConfig), \
        f"{attack_cls.__name__}.Config must be a dataclass extending AttackConfig"
    if config is None:
        config = dataclasses.replace(attack_cls.Config(), poison_rate=poison_rate)
    check_trigger(attack_cls, config, image_shape, seed)
    return check_poison(attack_cls, config, image_shape, seed)
