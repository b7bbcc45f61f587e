"""The defense contract (:func:`check_defense`), shared with plugin authors through :mod:`benchmark.testing`.

A defense is applied to a micro CLIP on synthetic captioned data (:func:`~benchmark.contract_data.caption_pairs`)
through the engine's own :func:`~benchmark.stages.apply_defense`; the objective's hooks are
recorded and checked for order and completeness (:func:`check_hooks`).
"""
from __future__ import annotations

import json

import numpy as np
import torch

from .contract_data import caption_pairs
from .data.dataset import TensorPairs


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
    # a defense that reads the undefended poisoned model (detect_and_retrain) gets a fresh micro CLIP for it
    poisoned_model = ((lambda: create_model(ModelConfig(arch="clipbench-micro-rn"), seed=1).eval())
                      if getattr(defense_cls, "needs_poisoned_model", False) else None)
    stats = apply_defense(defense, model, seed, class_names=tuple(data.class_names), poisoned=data, clean=data,
                          schedule=getattr(config, "train", None), poisoned_model=poisoned_model)
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
