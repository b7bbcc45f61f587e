"""Contract checks shared with plugin authors (timm-style): call them from your own tests.

::

    from benchmark.testing import check_attack
    from my_plugin import MyAttack

    def test_my_attack_honours_the_contract():
        check_attack(MyAttack)

Each check raises ``AssertionError`` naming the broken rule. They run in a second or two
on synthetic data (a seeded, class-balanced uint8 set) and, for attacks that need a
reference model, a randomly initialised micro CLIP; nothing is downloaded.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from .api import Attack, AttackConfig, AttackContext, PoisonedSet
from .data.captions import CLASS_NAMES, ZERO_SHOT_TEMPLATES
from .data.dataset import TensorPairs, to_uint8

#: one float32 step of uint8 quantisation, the tolerance when comparing re-quantised images
_Q = 0.5 / 255 + 1e-6


def synthetic_pairs(image_shape: tuple[int, int, int] = (1, 28, 28), per_class: int = 20, seed: int = 0,
                    class_names: tuple[str, ...] = CLASS_NAMES) -> TensorPairs:
    """A seeded, class-balanced set of random uint8 images with one caption per image."""
    g = torch.Generator().manual_seed(seed)
    n = per_class * len(class_names)
    labels = torch.arange(len(class_names)).repeat_interleave(per_class)
    labels = labels[torch.randperm(n, generator=g)]
    images = torch.randint(0, 256, (n, *image_shape), generator=g, dtype=torch.uint8)
    captions = [f"a synthetic picture of a {class_names[int(k)]} number {i}." for i, k in enumerate(labels)]
    return TensorPairs(images, captions, labels, tuple(class_names))


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


# ----------------------------------------------------------------------------- defenses
def caption_pairs(per_class: int = 12, seed: int = 0, image_shape: tuple[int, int, int] = (1, 28, 28)) -> TensorPairs:
    """:func:`synthetic_pairs` with the embedded data's training captions (template x synonym x modifier).

    Defenses that rewrite captions (EDA, sub-captions) then see realistic captions whose
    words the shipped WordNet subset covers, so the checks need no WordNet installed.
    """
    from .data.captions import make_captions

    data = synthetic_pairs(image_shape, per_class, seed)
    data.captions[:] = make_captions(data.labels.numpy(), seed)
    return data


def _tiny_defense_config(defense_cls, config=None):
    import dataclasses

    from .train import TrainConfig

    config = config if config is not None else defense_cls.Config()
    if any(f.name == "train" for f in dataclasses.fields(config)):
        config = dataclasses.replace(config, train=TrainConfig(epochs=2, batch_size=20, lr=1e-3, warmup_steps=1))
    return config


HOOKS = ("on_train_start", "on_epoch_start", "on_step_end")


def _record_hooks(defense, log: list[list[tuple]]) -> None:
    """Make every objective ``defense.objective`` returns log its calls into a list of ``log`` (one
    list per objective): ``(hook, epoch, step)`` tuples, ``on_step_end`` with the parts, and
    ``("__call__", epoch, step)`` for every batch it computes a loss on."""
    build = defense.objective

    def objective(ctx):
        obj = build(ctx)
        calls: list[tuple] = []
        log.append(calls)
        cls = type(obj)

        def on_train_start(self, model, ctx):
            calls.append(("on_train_start", ctx.epoch, ctx.step))
            return cls.on_train_start(self, model, ctx)

        def on_epoch_start(self, model, epoch, ctx):
            calls.append(("on_epoch_start", epoch, ctx.step))
            return cls.on_epoch_start(self, model, epoch, ctx)

        def on_step_end(self, model, out, ctx):
            calls.append(("on_step_end", ctx.epoch, ctx.step, dict(out.parts or {})))
            return cls.on_step_end(self, model, out, ctx)

        def __call__(self, model, batch, ctx):
            calls.append(("__call__", getattr(ctx, "epoch", None), getattr(ctx, "step", None)))
            return cls.__call__(self, model, batch, ctx)

        try:  # a recording subclass of the objective's own class (the methods are looked up on the type)
            obj.__class__ = type(cls.__name__, (cls,), {"on_train_start": on_train_start, "on_epoch_start": on_epoch_start,
                                                        "on_step_end": on_step_end, "__call__": __call__})
        except TypeError:  # an objective whose class cannot be swapped (slots, extension types): not recorded
            log.pop()
        return obj

    defense.objective = objective


def _run_defense(defense_cls, config, seed: int, data: TensorPairs, hooks: list | None = None):
    """Apply a defense once to a fresh micro CLIP (the engine's :func:`~benchmark.stages.apply_defense`,
    a training-stage defense trained on ``data`` under its own ``config.train``): returns (model, stats).
    ``hooks``: a list that receives the hook calls of every objective the defense builds."""
    from .models import ModelConfig, create_model
    from .stages import apply_defense

    defense = defense_cls(config, seed=seed)
    if hooks is not None:
        _record_hooks(defense, hooks)
    model = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0)
    stats = apply_defense(defense, model, seed, class_names=tuple(data.class_names), poisoned=data, clean=data,
                          schedule=getattr(config, "train", None))
    return model, stats


def check_hooks(name: str, calls: list[tuple], epochs: int | None = None) -> None:
    """The hook calls of one training run are complete and in order: ``on_train_start`` once,
    first, at step 0; ``on_epoch_start`` for epochs 1, 2, ... each before that epoch's steps;
    ``on_step_end`` after every step (0, 1, 2, ... in order) with ``LossOutput.parts`` of
    string names and finite float values (they are recorded in the result JSON)."""
    import math

    assert calls and calls[0][0] == "on_train_start" and calls[0][2] == 0, \
        f"{name}: on_train_start was not called first, before any step (calls: {calls[:3]})"
    assert [c[0] for c in calls].count("on_train_start") == 1, f"{name}: on_train_start called more than once"
    epoch, step = 0, 0
    for hook, e, s, *rest in calls[1:]:
        if hook == "__call__":
            continue
        if hook == "on_epoch_start":
            assert e == epoch + 1 and s == step, f"{name}: on_epoch_start({e}) at step {s}, expected epoch {epoch + 1} at step {step}"
            epoch = e
        elif hook == "on_step_end":
            assert epoch >= 1, f"{name}: on_step_end before any on_epoch_start"
            assert s == step and e == epoch, f"{name}: on_step_end at step {s} (epoch {e}), expected step {step} (epoch {epoch})"
            parts = rest[0]
            for key, value in parts.items():
                assert isinstance(key, str), f"{name}: LossOutput.parts key {key!r} is not a string"
                assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), \
                    f"{name}: LossOutput.parts[{key!r}] = {value!r} is not a finite float (report float(term.detach()))"
            step += 1
    assert step > 0, f"{name}: on_step_end was never called"
    if epochs is not None:
        assert epoch == epochs, f"{name}: on_epoch_start ran for {epoch} epoch(s) of {epochs}"


def check_defense(defense_cls, config=None, seed: int = 0):
    """Every contract check of a defense class, on a micro CLIP and synthetic captioned data.

    - class attributes: a snake_case ``name``, a ``paper``, a :class:`DefenseStage`, a dataclass
      ``Config`` extending :class:`DefenseConfig` whose defaults construct and survive a
      dict round trip (configs go into cache keys and result files);
    - ``none``-stage defenses leave the model untouched; post-training ones fine-tune it in
      place through ``defend``; training-stage ones provide an ``objective`` the trainer
      runs on the (poisoned) training set;
    - losses are finite, the model changes, the data is not modified, and the same seed
      gives bit-identical weights (all randomness is seeded);
    - the objective's lifecycle hooks (:class:`~benchmark.losses.Objective`: ``on_train_start``,
      ``on_epoch_start``, ``on_step_end``) are each called, in order (:func:`check_hooks`), and
      its ``LossOutput.parts`` are finite floats whose per-epoch means reach
      ``TrainStats.parts`` (what the result file records): an objective from
      ``self.objective`` that computes losses outside :func:`benchmark.train` fails. A
      ``defend`` that never calls ``self.objective`` skips this check.

    ``config`` defaults to the class's defaults with a two-epoch micro schedule. Returns
    the defended model.
    """
    import dataclasses

    from .api import Defense, DefenseConfig, DefenseStage
    from .config import from_dict, to_dict
    from .losses import Objective

    assert isinstance(defense_cls, type) and issubclass(defense_cls, Defense), f"{defense_cls!r} is not a benchmark.api.Defense"
    name = defense_cls.__name__
    assert defense_cls.name and defense_cls.name == defense_cls.name.lower() and " " not in defense_cls.name, \
        f"{name}.name must be a lowercase snake_case registry name, got {defense_cls.name!r}"
    assert defense_cls.paper, f"{name}.paper should cite the paper"
    assert isinstance(defense_cls.stage, DefenseStage), f"{name}.stage must be a benchmark.DefenseStage"
    assert dataclasses.is_dataclass(defense_cls.Config) and issubclass(defense_cls.Config, DefenseConfig), \
        f"{name}.Config must be a dataclass extending DefenseConfig"
    defaults = defense_cls.Config()
    as_dict = to_dict(defaults)
    json.dumps(as_dict)  # JSON-able
    assert from_dict(defense_cls.Config, as_dict) == defaults, f"{name}.Config does not survive a to_dict/from_dict round trip"

    config = _tiny_defense_config(defense_cls, config)
    data = caption_pairs(per_class=6, seed=seed)
    before = (data.images.clone(), list(data.captions), data.labels.clone())
    from .models import ModelConfig, create_model

    reference = create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0).state_dict()
    if defense_cls.stage is DefenseStage.NONE:
        model, stats = _run_defense(defense_cls, config, seed, data)
        assert stats is None, f"{name}: a 'none'-stage defense must not train (defend returned {stats!r})"
        for k, v in model.state_dict().items():
            assert torch.equal(v, reference[k]), f"{name}: a 'none'-stage defense changed the model ({k})"
        return model
    objective = defense_cls(config, seed=seed).objective(
        __import__("benchmark.api", fromlist=["DefenseContext"]).DefenseContext(tuple(data.class_names), seed, clean_data=data,
                                                                               train_data=data))
    assert isinstance(objective, Objective), f"{name}.objective must return a benchmark.losses.Objective"
    hooks: list[list[tuple]] = []
    model, stats = _run_defense(defense_cls, config, seed, data, hooks)
    assert stats is not None and stats.steps > 0, f"{name}: defend/objective trained no step"
    assert all(np.isfinite(stats.loss_history)), f"{name}: non-finite loss {stats.loss_history}"
    used = [calls for calls in hooks if any(c[0] == "__call__" for c in calls)]
    for calls in used:  # every objective the defense computed a loss with
        check_hooks(name, calls)
    if len(used) == 1:
        calls = used[0]
        assert sum(c[0] == "on_step_end" for c in calls) == stats.steps, \
            f"{name}: on_step_end ran {sum(c[0] == 'on_step_end' for c in calls)} times for {stats.steps} steps"
        assert max(c[1] for c in calls if c[0] == "on_epoch_start") == len(stats.loss_history), \
            f"{name}: on_epoch_start missed an epoch"
        reported = {k for c in calls if c[0] == "on_step_end" for k in c[3]}
        assert set(stats.parts) == reported, f"{name}: parts {sorted(reported)} reported, {sorted(stats.parts)} recorded"
        assert all(len(v) == len(stats.loss_history) for v in stats.parts.values()), \
            f"{name}: TrainStats.parts does not hold one mean per epoch"
        json.dumps(stats.parts)  # recorded in the result file
    changed = any(not torch.equal(v, reference[k]) for k, v in model.state_dict().items() if v.is_floating_point())
    assert changed, f"{name}: the model did not change"
    assert torch.equal(data.images, before[0]) and data.captions == before[1] and torch.equal(data.labels, before[2]), \
        f"{name}: the defense modified its data in place"
    twin, _ = _run_defense(defense_cls, config, seed, data)
    for k, v in model.state_dict().items():
        assert torch.equal(v, twin.state_dict()[k]), f"{name}: two runs with seed {seed} differ ({k}); seed every random draw"
    return model
