"""Execute one planned stage (a :class:`~benchmark.plan.Node`) and store its artifact."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

import numpy as np

from .api import Attack, AttackContext, Defense, DefenseContext, DefenseStage, DetectionContext, PoisonedSet
from .cache import Cache
from .config import from_dict, to_dict
from .data.dataset import TensorPairs
from .data.sources import DataBundle
from .evaluate import EvalConfig, evaluate
from .losses import ClipObjective
from .models import ClipModel, ModelConfig, create_model
from .plan import Node
from .progress import Reporter
from .registry import Registry
from .train import TrainConfig, TrainStats, train

MODEL_FILE = "model.safetensors"
TRIGGER_FILE = "trigger.safetensors"  # an optimised trigger (the ``trigger`` stage's artifact)
TEXT_FEATURES = "text"  # the cache folder of frozen text bodies' pooled features (benchmark.text_features)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(cache: Cache, key: str, device: torch.device | str = "cpu") -> ClipModel:
    """The model artifact ``key`` of ``cache`` (its architecture from the artifact's meta), in eval mode."""
    meta = cache.meta("model", key)
    if meta is None:
        raise RuntimeError(f"model artifact {key} is missing from the cache")
    model = create_model(from_dict(ModelConfig, meta["model"]), device=device, seed=0, text_cache=cache.root / TEXT_FEATURES)
    model.load_state_dict(cache.tensors("model", key, MODEL_FILE))
    return model.to(device).eval()


def apply_defense(defense: Defense, model: ClipModel, seed: int, *, class_names: tuple[str, ...],
                  poisoned: TensorPairs | None = None, clean: TensorPairs | None = None, val: TensorPairs | None = None,
                  schedule: TrainConfig | None = None, device: torch.device | str = "cpu", reporter: Reporter | None = None,
                  stage_name: str = "defense", poisoned_model=None) -> TrainStats | None:
    """Apply ``defense`` to ``model`` in place: the one place that branches on when a defense acts.

    - ``DefenseStage.TRAINING`` (RoCLIP): ``model`` is the clean pre-trained model; it is trained on
      the ``poisoned`` set (or the part of it the defense's ``training_data`` keeps:
      detect-and-retrain) with the defense's objective under ``schedule`` (the suite's
      ``poison_train`` schedule in a run) instead of the plain CLIP loss; ``poisoned_model``
      (a loader of the undefended model) is passed on to defenses that declare
      ``needs_poisoned_model``.
    - otherwise ``defense.defend(model, ctx)`` with the ``clean`` fine-tuning set and ``val``:
      post-training defenses fine-tune the backdoored model; ``none`` leaves it (returns None).
    """
    reporter = reporter if reporter is not None else Reporter(enabled=False)
    training = defense.stage is DefenseStage.TRAINING
    ctx = DefenseContext(tuple(class_names), seed, clean_data=clean, val_data=val,
                         train_data=poisoned if training else None, device=torch.device(device), reporter=reporter,
                         stage_name=stage_name, poisoned_model=poisoned_model if training else None,
                         schedule=schedule if training else None)
    if training:
        import copy

        start = copy.deepcopy(model)  # the clean start, before training changes ``model``
        ctx.start_model = lambda: copy.deepcopy(start)
    if not training:
        return defense.defend(model, ctx)
    if poisoned is None or schedule is None:
        raise ValueError(f"training-stage defense {defense.name!r} needs the poisoned training set and a schedule")
    if getattr(defense, "needs_poisoned_model", False) and poisoned_model is None:
        raise ValueError(f"training-stage defense {defense.name!r} reads the undefended poisoned model: pass "
                         "poisoned_model (clipbench run trains it first)")
    data = defense.training_data(poisoned, ctx)
    stats = train(model, data, defense.objective(ctx), schedule, seed=seed, device=device, stage=stage_name,
                  reporter=reporter)
    own = defense.diagnostics() if hasattr(defense, "diagnostics") else {}
    if own:
        stats.diagnostics = {**stats.diagnostics, **own}
    return stats


@dataclass
class StageExecutor:
    """Runs nodes whose artifacts are missing; loads inputs from the cache."""

    cache: Cache
    data: DataBundle
    attacks: Registry
    defenses: Registry
    device: torch.device
    reporter: Reporter = field(default_factory=lambda: Reporter(enabled=False))
    dist: Any = None  # a benchmark.distributed.DistContext inside a torchrun job
    _splits: dict[str, TensorPairs] = field(default_factory=dict)
    detectors: Registry | None = None

    # ---------------------------------------------------------------- inputs
    def split(self, role: str) -> TensorPairs:
        if role not in self._splits:
            self._splits[role] = self.data.split(role)
        return self._splits[role]

    def new_model(self, model_spec: dict[str, Any], seed: int) -> ClipModel:
        return create_model(from_dict(ModelConfig, model_spec), device=self.device, seed=seed,
                            text_cache=self.cache.root / TEXT_FEATURES)

    def load_model(self, key: str) -> ClipModel:
        return load_model(self.cache, key, self.device)

    def load_poisoned(self, key: str) -> PoisonedSet:
        manifest = self.cache.json("poison", key, "manifest.json")
        if manifest.get("storage") == "overlay":  # external data: poisoned samples over the clean source
            from .data.overlay import apply_overlay

            o = self.cache.tensors("poison", key, "overlay.safetensors")
            data = apply_overlay(self.split("train"), o["indices"], o["images"],
                                 self.cache.json("poison", key, "captions.json"), o["poisoned"])
            return PoisonedSet(data, manifest)
        tensors = self.cache.tensors("poison", key, "data.safetensors")
        captions = self.cache.json("poison", key, "captions.json")
        data = TensorPairs(tensors["images"], captions, tensors["labels"],
                           self.data.class_names, tensors["poisoned"].bool())
        return PoisonedSet(data, manifest)

    def model_spec_of(self, key: str) -> dict[str, Any]:
        return self.cache.meta("model", key)["model"]

    def kind_of(self, node: Node) -> str:
        return {"pretrain": "model", "train": "model", "defend": "model", "poison": "poison", "evaluate": "eval",
                "trigger": "trigger", "detect": "detect"}[node.kind]

    def done(self, node: Node) -> bool:
        if self.dist is not None:  # torchrun: rank 0's view of the cache decides, for every rank
            return self.dist.broadcast_object(self.cache.has(self.kind_of(node), node.key) if self.dist.is_main else None)
        return self.cache.has(self.kind_of(node), node.key)

    # ----------------------------------------------------------------- stages
    def run(self, node: Node) -> None:
        dist = self.dist
        if dist is not None and not dist.is_main and node.kind in ("trigger", "poison", "evaluate", "detect"):
            dist.barrier()  # torchrun: rank 0 alone optimises triggers, poisons, evaluates and detects; the others wait
            return
        start = time.perf_counter()
        try:
            files, extra = getattr(self, f"_run_{node.kind}")(node)
            meta = {"label": node.label, "spec": node.spec, "deps": list(node.deps),
                    "seconds": time.perf_counter() - start, **extra}
            if dist is None or dist.is_main:
                self.cache.put(self.kind_of(node), node.key, files, meta)
        finally:
            if dist is not None:
                dist.barrier()

    def _save_model(self, model: ClipModel, model_spec: dict, stats=None) -> tuple[dict, dict]:
        extra = {"model": model_spec}
        if stats is not None:
            extra["train"] = {"steps": stats.steps, "seconds": stats.seconds, "samples_per_s": stats.samples_per_s,
                              "loss_history": stats.loss_history, "parts": stats.parts, "diagnostics": stats.diagnostics}
        return {MODEL_FILE: model.state_dict()}, extra

    def _run_pretrain(self, node: Node):
        spec = node.spec
        model = self.new_model(spec["model"], seed=spec["seed"])
        stats = None
        if spec["train"] is not None:
            stats = train(model, self.split("pretrain"), ClipObjective(), from_dict(TrainConfig, spec["train"]),
                          seed=spec["seed"], device=self.device, stage=node.label, reporter=self.reporter)
        return self._save_model(model, spec["model"], stats)

    def load_trigger(self, attack: Attack, key: str) -> Attack:
        """Install the optimised trigger of the ``trigger`` stage ``key`` into ``attack``."""
        attack.load_trigger(self.cache.tensors("trigger", key, TRIGGER_FILE))
        return attack

    def _run_trigger(self, node: Node):
        """Optimise an attack's trigger on the clean model (``node.deps[0]``) with the clean training split."""
        spec = node.spec
        a = spec["attack"]
        attack = self.attacks.build(a["name"], a["trigger"], a["seed"], image_shape=tuple(spec["image_shape"]))
        ctx = AttackContext(self.data.class_names, spec["target"], a["seed"], self.device,
                            lambda: self.load_model(node.deps[0]), self.data.templates, self.reporter)
        state = attack.optimise_trigger(self.split("train"), ctx)
        return {TRIGGER_FILE: state}, {"tensors": sorted(state)}

    def _run_poison(self, node: Node):
        spec = node.spec
        a = spec["attack"]
        attack = self.attacks.build(a["name"], a["config"], a["seed"], image_shape=tuple(spec["image_shape"]))
        if spec.get("trigger"):
            self.load_trigger(attack, spec["trigger"])
        reference = (lambda: self.load_model(node.deps[0])) if node.deps else None
        ctx = AttackContext(self.data.class_names, spec["target"], a["seed"], self.device, reference,
                            self.data.templates, self.reporter)
        clean = self.split("train")
        if not isinstance(clean, TensorPairs):  # external data: store only the overlay (benchmark.data.overlay)
            from .data.overlay import poison_overlay

            manifest, o = poison_overlay(attack, clean, ctx)
            manifest["data"] = {"role": "train", **spec["data"]}
            if node.deps:
                manifest["reference_model"] = {"cache_key": node.deps[0], "model": spec["model"]}
            files = {"overlay.safetensors": {k: o[k] for k in ("indices", "images", "poisoned")},
                     "captions.json": o["captions"], "manifest.json": manifest}
            return files, {"num_poisoned": manifest["num_poisoned"]}
        poisoned = attack.poison(clean, ctx)
        # where the clean set and the reference model come from (benchmark.poison.regenerate)
        poisoned.manifest["data"] = {"role": "train", **spec["data"]}
        if spec.get("trigger"):  # the optimised trigger is in manifest["trigger"]; its stage, for reference
            poisoned.manifest["trigger_stage"] = self.cache.ref("trigger", spec["trigger"], TRIGGER_FILE)
        if node.deps:
            poisoned.manifest["reference_model"] = {"cache_key": node.deps[0], "model": spec["model"]}
        d = poisoned.data
        files = {"data.safetensors": {"images": d.images, "labels": d.labels, "poisoned": d.poisoned.to(torch.uint8)},
                 "captions.json": d.captions, "manifest.json": poisoned.manifest}
        return files, {"num_poisoned": poisoned.manifest["num_poisoned"]}

    def _run_train(self, node: Node):
        spec = node.spec
        pre, poison, *rest = (*node.deps, None) if len(node.deps) == 1 else node.deps
        model = self.load_model(pre)
        schedule = from_dict(TrainConfig, spec["train"])
        if spec.get("clean"):  # the clean fine-tuned model: the same schedule on the unpoisoned training split
            clean = self.split("train")
            stats = train(model, clean, ClipObjective(), schedule, seed=spec["seed"], device=self.device, stage=node.label,
                          reporter=self.reporter)
            return self._save_model(model, self.model_spec_of(pre), stats)
        data = self.load_poisoned(poison).data
        if spec["objective"] is None:
            stats = train(model, data, ClipObjective(), schedule, seed=spec["seed"], device=self.device, stage=node.label,
                          reporter=self.reporter)
        else:  # a training-stage defense
            d = spec["objective"]
            plain = rest[0] if rest else None  # the undefended poisoned model, for defenses that read it
            stats = apply_defense(self.defenses.build(d["name"], d["config"], d["seed"]), model, d["seed"],
                                  class_names=self.data.class_names, poisoned=data, schedule=schedule, device=self.device,
                                  reporter=self.reporter, stage_name=node.label,
                                  poisoned_model=(lambda: self.load_model(plain)) if plain else None)
        return self._save_model(model, self.model_spec_of(pre), stats)

    def _run_defend(self, node: Node):
        d = node.spec["defense"]
        (parent,) = node.deps
        model = self.load_model(parent)
        stats = apply_defense(self.defenses.build(d["name"], d["config"], d["seed"]), model, d["seed"],
                              class_names=self.data.class_names, clean=self.split("defense"), val=self.split("val"),
                              device=self.device, reporter=self.reporter, stage_name=node.label)
        return self._save_model(model, self.model_spec_of(parent), stats)

    def _run_evaluate(self, node: Node):
        spec = node.spec
        model_key = node.deps[0]  # then the trigger stage, for an optimised trigger
        model = self.load_model(model_key)
        a = spec["attack"]
        attack = self.attacks.build(a["name"], a["config"], a["seed"], image_shape=self.data.image_shape)
        if spec.get("trigger"):
            self.load_trigger(attack, spec["trigger"])
        metrics = evaluate(model, self.split("test"), self.data.class_names, self.data.templates, attack, spec["target"],
                           from_dict(EvalConfig, spec["eval"]), self.data.attribute_tasks)
        return {"metrics.json": to_dict(metrics)}, {}

    def detector_registry(self) -> Registry:
        if self.detectors is None:
            from .registry import detector_registry

            self.detectors = detector_registry()
        return self.detectors

    def _run_detect(self, node: Node):
        """A sample detector's scores of every pair of a poisoned set (with its backdoored model),
        or a model detector's score of one model."""
        from .detection import check_model_score, check_sample_scores

        spec = node.spec
        d = spec["detector"]
        detector = self.detector_registry().build(d["name"], d["config"], d["seed"])
        ctx = DetectionContext(tuple(self.data.class_names), d["seed"], self.device,
                               schedule=from_dict(TrainConfig, spec["schedule"]), clean_data=self.split("defense"),
                               reporter=self.reporter, stage_name=node.label)
        if d["kind"] == "sample":
            pre, poison, plain = node.deps
            ctx.start_model = lambda: self.load_model(pre)
            data = self.load_poisoned(poison).data
            if not isinstance(data, TensorPairs):
                raise ValueError(f"sample detector {d['name']!r} needs an in-memory training set; external sources are "
                                 "not supported for sample detection yet")
            scores = check_sample_scores(d["name"], detector.score(self.load_model(plain), data, ctx), len(data))
            files: dict[str, Any] = {"scores.safetensors": {"scores": torch.from_numpy(np.ascontiguousarray(scores))}}
        else:
            (model_key,) = node.deps
            files = {"score.json": {"score": check_model_score(d["name"], detector.score(self.load_model(model_key), ctx))}}
        return files, {"diagnostics": detector.diagnostics(), "detector_kind": d["kind"]}

    def detect_output(self, key: str) -> dict[str, Any]:
        """A detect node's artifact: ``{"scores": array}`` (sample) or ``{"score": float}`` (model),
        with ``diagnostics`` and ``seconds``."""
        meta = self.cache.meta("detect", key) or {}
        out: dict[str, Any] = {"diagnostics": meta.get("diagnostics") or {}, "seconds": meta.get("seconds")}
        if meta.get("detector_kind") == "sample":
            out["scores"] = self.cache.tensors("detect", key, "scores.safetensors")["scores"].numpy()
        else:
            out["score"] = float(self.cache.json("detect", key, "score.json")["score"])
        return out

    def metrics(self, key: str) -> dict[str, Any]:
        return self.cache.json("eval", key, "metrics.json")
