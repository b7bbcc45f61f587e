"""The public API that attacks, defenses and plugins are written against.

Plugins import only from :mod:`benchmark` (which re-exports this module). One uniform
class API per kind of method (BackdoorBox style):

- :class:`Attack`: a fixed trigger ``apply(images)`` and ``poison(data, ctx)``;
- :class:`Defense`: a :class:`DefenseStage` and either ``objective(ctx)`` (the loss used while
  training) or a full ``defend(model, ctx)``;
- :class:`Detector` (:mod:`benchmark.detector_api`): ``score`` of every training pair
  (:class:`SampleDetector`) or of an encoder (:class:`ModelDetector`), higher = more suspicious.

Each method declares a typed ``Config`` dataclass whose defaults are its paper's.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from .config import check, to_dict
from .data.captions import ZERO_SHOT_TEMPLATES, target_captions
from .data.dataset import TensorPairs, to_uint8
from .data.digest import pairs_digest
from .losses import ClipObjective, Objective
from .clip_model import ClipModel
from .progress import Reporter
from .train import TrainConfig, TrainStats, train

API_VERSION = "1.5"
MANIFEST_VERSION = 1


class DefenseStage(str, enum.Enum):
    """When a defense acts (a :class:`Defense`'s ``stage``)."""

    NONE = "none"  # the no-defense baseline
    TRAINING = "training"  # replaces the objective of poisoned training (RoCLIP)
    POST_TRAINING = "post_training"  # fine-tunes the backdoored model on clean data


#: Deprecated alias of :class:`DefenseStage` (API 1.0's name); kept so that plugins written
#: against 1.0 keep working. New code uses ``DefenseStage``.
Stage = DefenseStage


# ---------------------------------------------------------------------------- attacks
@dataclass
class AttackConfig:
    """Options shared by all attacks. ``target`` is a class name of the suite's data.

    It has no default here: the target is dataset-specific, so it comes from the suite
    (``attack_common.target``, or ``attacks.<name>.target``); a suite without one is
    refused before any work."""

    target: str | None = None
    poison_rate: float = 0.01

    def __post_init__(self) -> None:
        check(0 < self.poison_rate < 1, "poison_rate", self.poison_rate, "use a fraction strictly between 0 and 1, e.g. 0.01")


@dataclass
class AttackContext:
    """What an attack receives when poisoning."""

    class_names: tuple[str, ...]
    target: int
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    reference_model: Callable[[], ClipModel] | None = None  # the clean model, loaded on demand
    templates: tuple[str, ...] = ZERO_SHOT_TEMPLATES
    reporter: Reporter = field(default_factory=lambda: Reporter(enabled=False))


@dataclass
class PoisonedSet:
    """A poisoned training set and the manifest that regenerates it."""

    data: TensorPairs
    manifest: dict[str, Any]


class Attack:
    """Base class of backdoor attacks.

    Subclasses set ``name``, ``Config`` and implement :meth:`apply`, the fixed trigger
    T(x) on a float batch ``(N, C, H, W)`` in [0, 1]. The default :meth:`poison` picks
    ``round(poison_rate * N)`` non-target-class samples with the attack seed, replaces
    their images with T(x) (quantised to uint8) and their captions with target-class
    zero-shot templates drawn per sample.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = "other"
    paper: ClassVar[str] = ""
    Config: ClassVar[type[AttackConfig]] = AttackConfig
    #: True when poisoning needs the clean model (e.g. label-consistent PGD).
    needs_reference_model: ClassVar[bool] = False
    #: True for clean-label attacks: only target-class samples are poisoned and their
    #: captions stay truthful (checked by :func:`benchmark.testing.check_attack`).
    clean_label: ClassVar[bool] = False
    #: True when the trigger itself is optimised on the clean model (BadCLIP; API 1.4). The
    #: engine then runs :meth:`optimise_trigger` as a stage of its own (``trigger``: cached,
    #: keyed by :meth:`trigger_spec`, the seed, the clean training split, the target and the
    #: clean model), and hands its result to :meth:`load_trigger` before the attack poisons
    #: or is evaluated; :meth:`apply` raises until a trigger is loaded. Such attacks also set
    #: ``needs_reference_model`` (the optimisation runs on the clean model).
    optimised_trigger: ClassVar[bool] = False
    version: ClassVar[str] = "1"

    def __init__(self, config: AttackConfig | None = None, *, seed: int = 0, image_shape: tuple[int, int, int] = (1, 28, 28)):
        self.config = config if config is not None else self.Config()
        self.seed = seed
        self.image_shape = tuple(image_shape)
        self.validate()

    def validate(self) -> None:
        """Check the config against the image shape; raise ConfigError with the fix."""

    def apply(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.apply(images)

    def trigger_params(self) -> dict[str, Any]:
        """Everything that defines the trigger (goes into the manifest)."""
        return to_dict(self.config)

    def identity(self) -> dict[str, Any]:
        """What defines the trigger beyond the config and seed (e.g. a pattern file's digest).

        Non-empty values join the cache keys of the poison and evaluation stages, so editing
        a pattern file in place invalidates the cached poisons built from it.
        """
        return {}

    def train_time_slack(self) -> float:
        """L-inf distance (in [0,1] units) allowed between a poisoned training image and the
        test-time trigger of the same clean image. 0 (identical) unless the attack perturbs
        training images beyond the trigger (label-consistent PGD: its eps)."""
        return 0.0

    # -- optimised triggers (API 1.4; only for ``optimised_trigger`` attacks) -------------
    def trigger_spec(self) -> dict[str, Any]:
        """What the trigger optimisation depends on, besides the seed, data, target and clean
        model: the trigger stage's cache key. Default: the whole config (an attack leaves out
        what only poisoning reads, e.g. ``poison_rate``, so that a poison-rate sweep reuses
        one optimised trigger)."""
        return to_dict(self.config)

    def optimise_trigger(self, data: TensorPairs, ctx: AttackContext) -> dict[str, torch.Tensor]:
        """Optimise the trigger on ``ctx.reference_model()`` (the clean model) with the clean
        training split ``data``; return the tensors that define it (stored by the trigger stage)."""
        raise NotImplementedError(f"{type(self).__name__} has no optimised trigger")

    def load_trigger(self, state: dict[str, torch.Tensor]) -> None:
        """Install an optimised trigger (what :meth:`optimise_trigger` returned)."""
        raise NotImplementedError(f"{type(self).__name__} has no optimised trigger")

    def load_trigger_params(self, params: dict[str, Any]) -> None:
        """Install an optimised trigger from a poison manifest's ``trigger`` record (what
        :meth:`trigger_params` wrote), so that a manifest regenerates its set without
        re-running the optimisation (:func:`benchmark.poison.regenerate`)."""
        raise NotImplementedError(f"{type(self).__name__} has no optimised trigger")

    def allowed_poison_captions(self, data: TensorPairs, ctx: AttackContext) -> set[str]:
        """Every caption a poison-label attack may write on a poisoned pair (the contract check's
        rule, :func:`benchmark.testing.check_poison`): the target class's zero-shot templates.
        An attack that writes other captions (BadCLIP: natural target-class captions of the
        data) widens it. API 1.4."""
        return {t.format(ctx.class_names[ctx.target]) for t in ctx.templates}

    def rng(self, purpose: str) -> np.random.Generator:
        """A generator derived from the attack seed and a purpose string."""
        return np.random.default_rng([self.seed, *purpose.encode()])

    def select(self, data: TensorPairs, target: int) -> np.ndarray:
        """Indices to poison: ``round(rate * N)`` non-target samples, seeded."""
        count = max(1, round(self.config.poison_rate * len(data)))
        candidates = np.flatnonzero(data.labels.numpy() != target)
        if count > len(candidates):
            from .config import ConfigError

            raise ConfigError(f"poison_rate={self.config.poison_rate} asks for {count} poisoned pairs but only "
                              f"{len(candidates)} candidates exist; lower poison_rate")
        return np.sort(self.rng("select").choice(candidates, size=count, replace=False))

    def select_target_class(self, data: TensorPairs, target: int) -> np.ndarray:
        """Clean-label selection: ``round(rate * N)`` target-class samples (N = the whole set),
        capped at their number, seeded. API 1.5."""
        candidates = np.flatnonzero(data.labels.numpy() == target)
        if len(candidates) == 0:
            from .config import ConfigError

            raise ConfigError(f"{self.name} poisons target-class images (clean-label) but the training set has none "
                              f"of class {target}; choose a target present in the data")
        count = min(max(1, round(self.config.poison_rate * len(data))), len(candidates))
        return np.sort(self.rng("select").choice(candidates, size=count, replace=False))

    def poison_images(self, images_u8: torch.Tensor, ctx: AttackContext, index: np.ndarray) -> torch.Tensor:
        """Triggered uint8 images for the selected samples."""
        return to_uint8(self.apply(images_u8.float() / 255))

    def poison_captions(self, data: TensorPairs, index: np.ndarray, ctx: AttackContext) -> list[str]:
        return target_captions(ctx.class_names[ctx.target], len(index), self.rng("captions"), ctx.templates)

    def poison(self, data: TensorPairs, ctx: AttackContext) -> PoisonedSet:
        """Poison ``data``: choose (seeded) what to poison, record it in a manifest, build the set.

        All random choices are made here and written into the manifest; the images are then
        built from the manifest by :meth:`materialize`, the same code path that
        :func:`benchmark.poison.regenerate` uses, so a manifest regenerates its set exactly.
        """
        index = self.select(data, ctx.target)
        manifest = self.make_manifest(data, ctx, index, self.poison_captions(data, index, ctx))
        poisoned = self.materialize(data, manifest, ctx)
        manifest["sha256"] = pairs_digest(poisoned.data)
        return poisoned

    def make_manifest(self, data: TensorPairs, ctx: AttackContext, index: np.ndarray, captions: list[str]) -> dict[str, Any]:
        """The poison manifest: every choice needed to rebuild the poisoned set from the clean one.

        Subclasses that make further random choices (WaNet's noise mode) extend it (call
        ``super()`` first). ``sha256`` (a digest of the resulting set) is added by :meth:`poison`.
        """
        return {
            "manifest_version": MANIFEST_VERSION,
            "attack": self.name,
            "attack_version": self.version,
            "clean_label": self.clean_label,
            "seed": self.seed,
            "config": to_dict(self.config),
            "image_shape": list(self.image_shape),
            "target": ctx.class_names[ctx.target],
            "target_index": ctx.target,
            "class_names": list(ctx.class_names),
            "templates": list(ctx.templates),
            "trigger": self.trigger_params(),
            "num_samples": len(data),
            "num_poisoned": int(len(index)),
            "poison_rate_actual": len(index) / len(data),
            "indices": index.tolist(),
            "captions": list(captions),
            "original_labels": data.labels[index].tolist(),
            "cross_indices": [],  # samples modified without the backdoor (kept captions), e.g. WaNet noise mode
        }

    def materialize(self, data: TensorPairs, manifest: dict[str, Any], ctx: AttackContext) -> PoisonedSet:
        """Build the poisoned set that ``manifest`` describes from the clean ``data``.

        Deterministic given the manifest (and, for attacks with ``needs_reference_model``,
        the same reference model): selected images go through :meth:`poison_images`, their
        captions are replaced by the manifest's, labels are kept.
        """
        index = np.asarray(manifest["indices"], dtype=np.int64)
        images = data.images.clone()
        captions = list(data.captions)
        poisoned = torch.zeros(len(data), dtype=torch.bool)
        if len(index):
            images[index] = self.poison_images(data.images[index], ctx, index)
        for i, c in zip(index.tolist(), manifest["captions"]):
            captions[i] = c
        poisoned[index] = True
        return PoisonedSet(TensorPairs(images, captions, data.labels.clone(), data.class_names, poisoned), manifest)


# --------------------------------------------------------------------------- defenses
@dataclass
class DefenseConfig:
    """Options shared by defenses. ``train`` is the schedule of post-training defenses."""

    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class DefenseContext:
    """What a defense receives."""

    class_names: tuple[str, ...]
    seed: int
    clean_data: TensorPairs | None = None  # the clean defense split (post-training)
    val_data: TensorPairs | None = None
    train_data: TensorPairs | None = None  # the (poisoned) training set (training-stage defenses)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    reporter: Reporter = field(default_factory=lambda: Reporter(enabled=False))
    stage_name: str = "defense"
    #: API 1.4: the undefended model trained on ``train_data`` (loaded on demand), for training-stage
    #: defenses that declare ``needs_poisoned_model`` (detect-and-retrain scores pairs with it)
    poisoned_model: Callable[[], ClipModel] | None = None
    #: API 1.4: the schedule a training-stage defense trains under (the suite's ``poison_train``)
    schedule: TrainConfig | None = None
    #: API 1.4: a fresh copy of the clean model a training-stage defense starts from (loaded on demand)
    start_model: Callable[[], ClipModel] | None = None


class Defense:
    """Base class of defenses.

    A post-training defense fine-tunes the backdoored model on ``ctx.clean_data`` with
    :meth:`objective` under ``config.train`` (override :meth:`defend` for anything
    else). A training-stage defense provides the :meth:`objective` that replaces the
    plain CLIP loss during poisoned training.
    """

    name: ClassVar[str] = ""
    stage: ClassVar[DefenseStage] = DefenseStage.POST_TRAINING
    paper: ClassVar[str] = ""
    Config: ClassVar[type[DefenseConfig]] = DefenseConfig
    version: ClassVar[str] = "1"
    #: API 1.4: a training-stage defense that reads the undefended poisoned model
    #: (``ctx.poisoned_model``) sets this; the plan then trains that model first
    needs_poisoned_model: ClassVar[bool] = False

    def __init__(self, config: DefenseConfig | None = None, *, seed: int = 0):
        self.config = config if config is not None else self.Config()
        self.seed = seed

    def objective(self, ctx: DefenseContext) -> Objective:
        return ClipObjective()

    def image_views(self) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
        """The random image augmentation this defense trains on, as ``views(images, generator)``
        on float images in [0, 1], differentiable with respect to ``images``; None (the default)
        when it trains on the images as they are. Adaptive attacks optimise their trigger in
        expectation over it (``eot: <defense name>``, :func:`benchmark.defense_image_views`).
        API 1.4."""
        return None

    def training_data(self, data: TensorPairs, ctx: DefenseContext) -> TensorPairs:
        """API 1.4: the pairs a training-stage defense trains on (default: all of ``data``, the
        poisoned set); a data-filtering defense returns a subset (``data.subset(keep)``)."""
        return data

    def diagnostics(self) -> dict[str, Any]:
        """API 1.4: what the defense itself measured (JSON-able), recorded with the trained model
        beside its objective's diagnostics; ``{}`` by default."""
        return {}

    def defend(self, model: ClipModel, ctx: DefenseContext) -> TrainStats | None:
        """Fine-tune ``model`` in place (post-training defenses)."""
        if self.stage is not DefenseStage.POST_TRAINING:
            return None
        if ctx.clean_data is None:
            raise ValueError(f"defense {self.name!r} needs a clean fine-tuning set")
        return train(model, ctx.clean_data, self.objective(ctx), self.config.train, seed=self.seed,
                     device=ctx.device, stage=ctx.stage_name, reporter=ctx.reporter)


# detectors (API 1.4): defined in benchmark.detector_api, part of this public API
from .detector_api import DetectionContext, Detector, DetectorConfig, DetectorKind, ModelDetector, SampleDetector  # noqa
