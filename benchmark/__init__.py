"""clipbench: a benchmark of backdoor attacks and defenses on CLIP-style models.

This package is the engine and **the one public API** that attacks, defenses and
third-party plugins import. Everything a method needs is importable from ``benchmark``
directly; anything else (``benchmark.runner``, ``benchmark.plan``, ...) is internal and
may change without notice.

Versioning: :data:`API_VERSION` is ``"MAJOR.MINOR"``. A minor bump adds names or optional
arguments; a major bump removes or changes one. A plugin written against ``1.x`` works
with every ``1.y`` (y >= x).

The API (version 1.5; 1.5 added :meth:`Attack.select_target_class` (clean-label selection); 1.4 added the detectors: :class:`Detector`, :class:`SampleDetector`,
:class:`ModelDetector`, :class:`DetectorKind`, :class:`DetectorConfig`,
:class:`DetectionContext`, the tools :func:`image_embeddings`, :func:`neighbour_distances`,
:func:`lid_mle`, :func:`detection_metrics`, :func:`top_fraction`, :func:`make_detector`,
:func:`check_detector` and the entry-point group ``clipbench.detectors``; 1.1 added :class:`DefenseStage`, :func:`to_uint8` and
:func:`zero_shot_weights`; 1.2 :func:`embedded_caption_phrases`, and ``AttackConfig.target``
no longer defaults to a class of the embedded data: it comes from the suite; 1.3 added
``ClipModel.image_tower`` / ``text_tower`` / ``text_frozen``, the :class:`Objective` hooks
``on_train_start`` and ``on_step_end``, and records ``LossOutput.parts``, ``paper`` and the
schedule in every result; 1.4 also added optimised triggers (``Attack.optimised_trigger``,
``trigger_spec``, ``optimise_trigger``, ``load_trigger``, ``load_trigger_params``: the
engine's cached ``trigger`` stage), ``Attack.allowed_poison_captions``,
``Defense.image_views`` and :func:`defense_image_views` (adaptive attacks' EOT)):

Methods
    :class:`Attack` (``name``, ``Config``, ``apply(images)``, optional ``poison``),
    :class:`AttackConfig` (``target``, ``poison_rate``), :class:`AttackContext`,
    :class:`PoisonedSet`; :class:`Defense` (``name``, ``stage``, ``Config``,
    ``objective(ctx)`` or ``defend(model, ctx)``; ``paper``: its citation, recorded in every
    result), :class:`DefenseConfig` (``train``: a :class:`TrainConfig`; a suite's
    ``defense_common.train`` replaces the method's own default, see the README's "Add your
    own defense"), :class:`DefenseContext`, :class:`DefenseStage` (when a defense
    acts: ``NONE``, ``TRAINING``, ``POST_TRAINING``; ``Stage`` is its deprecated 1.0 name).
Detectors
    :class:`SampleDetector` (``score(model, data, ctx)``: one score per training pair, higher =
    more likely poisoned), :class:`ModelDetector` (``score(model, ctx)``: one score per encoder,
    higher = more likely backdoored), both :class:`Detector` s (``name``, ``kind``: a
    :class:`DetectorKind`, ``paper``, ``Config``: a :class:`DetectorConfig`), with a
    :class:`DetectionContext`; tools: :func:`image_embeddings`, :func:`neighbour_distances`,
    :func:`lid_mle`; metrics: :func:`detection_metrics` (AUROC, AUPRC, TPR at 1% FPR with
    bootstrap intervals); :func:`top_fraction`, :func:`make_detector` (a registered detector,
    configured).
Training
    :class:`Objective` (a batch -> :class:`LossOutput` ``(loss, parts)``; the hooks
    ``on_train_start(model, ctx)`` once before the optimiser is built, ``on_epoch_start(model,
    epoch, ctx)``, ``on_step_end(model, out, ctx)`` after each optimiser step; the per-epoch
    means of ``parts`` are recorded in the result as ``defense.training.parts``), :class:`StepContext`,
    :class:`ClipObjective`, the losses :func:`clip_loss`, :func:`info_nce` and
    :func:`caption_targets`, :class:`TrainConfig`, :class:`TrainStats`, :func:`train`
    (the one training loop), :class:`NonFiniteLossError`.
Data and models
    :class:`TensorPairs` (images uint8 (N, C, H, W), captions, labels, class names),
    :class:`Batch`, :func:`to_uint8` (float [0, 1] images -> uint8, as stored and evaluated),
    :class:`ClipModel` (``encode_image`` on [0, 1] images, ``encode_text``, ``logit_scale``;
    the encoders ``image_tower`` and ``text_tower`` as modules; ``text_frozen``: the text body
    is frozen, cached and not saved, only ``text_tower.proj`` trains),
    :func:`zero_shot_weights` (a model's prompt-ensemble class embeddings), :class:`Reporter`,
    :func:`embedded_caption_phrases` (the embedded data's caption vocabulary),
    :func:`defense_image_views` (a defense's differentiable image augmentation, for EOT).
Configs
    :class:`ConfigError` and :func:`check` (``check(cond, key, value, fix)`` in a
    ``__post_init__`` or ``validate``: a one-line error naming the key and the fix).
Contract tests (for plugin authors' own test suites)
    :func:`check_attack`, :func:`check_defense`, :func:`check_detector` (from :mod:`benchmark.testing`, imported
    on first use so that importing ``benchmark`` stays light).
Plugins
    :func:`is_plugin`; the entry-point groups ``clipbench.attacks``,
    ``clipbench.defenses`` and ``clipbench.detectors`` (see :mod:`benchmark.registry` and the README's "Add your own
    defense").
"""
__version__ = "0.1.0"

from .api import (  # noqa: E402
    API_VERSION,
    Attack,
    AttackConfig,
    AttackContext,
    Defense,
    DefenseConfig,
    DefenseContext,
    DefenseStage,
    DetectionContext,
    Detector,
    DetectorConfig,
    DetectorKind,
    ModelDetector,
    PoisonedSet,
    SampleDetector,
    Stage,
)
from .config import ConfigError, check  # noqa: E402
from .data.dataset import Batch, TensorPairs, to_uint8  # noqa: E402
from .evaluate import zero_shot_weights  # noqa: E402
from .losses import ClipObjective, LossOutput, Objective, StepContext, caption_targets, clip_loss, info_nce  # noqa: E402
from .clip_model import ClipModel  # noqa: E402
from .progress import Reporter  # noqa: E402
from .detection import (  # noqa: E402
    detection_metrics,
    image_embeddings,
    lid_mle,
    make_detector,
    neighbour_distances,
    top_fraction,
)
from .registry import ATTACK_GROUP, DEFENSE_GROUP, DETECTOR_GROUP, is_plugin  # noqa: E402
from .train import NonFiniteLossError, TrainConfig, TrainStats, train  # noqa: E402

_LAZY = {"check_attack": "benchmark.testing", "check_defense": "benchmark.testing",
         "check_detector": "benchmark.testing"}


def embedded_caption_phrases() -> tuple[str, ...]:
    """Every phrase an embedded-world caption is made of (frames, garment names, attribute
    phrases; ``{}`` / ``{pronoun}`` mark slots): the vocabulary of the embedded data, for
    methods that ship word resources for it (EDA's WordNet subset). Added in API 1.2."""
    from .data.captions import CAPTION_PHRASES

    return tuple(CAPTION_PHRASES)


def defense_image_views(name: str):
    """The image augmentation defense ``name`` trains on (its :meth:`Defense.image_views`, the
    class built with its paper defaults), for attacks that optimise their trigger in
    expectation over it (``eot: <name>``): ``views(images, generator)``, differentiable.
    Raises :class:`ConfigError` naming the defenses that have one when ``name`` is unknown or
    trains on un-augmented images. Added in API 1.4."""
    from .registry import RegistryError, defense_registry

    registry = defense_registry()

    def with_views() -> list[str]:
        out = []
        for other in registry.names():
            try:
                if registry.build(other).image_views() is not None:
                    out.append(other)
            except Exception:  # noqa: BLE001 - a broken plugin is not a candidate
                continue
        return out

    try:
        views = registry.build(name).image_views()
    except RegistryError as exc:
        raise ConfigError(f"eot={name!r}: {exc}; name a defense with image augmentations: "
                          f"{', '.join(with_views())}") from None
    if views is None:
        raise ConfigError(f"eot={name!r}: that defense trains on un-augmented images, there is nothing to optimise "
                          f"over; name one with image augmentations: {', '.join(with_views())} (or eot: null)")
    return views


def __getattr__(name: str):
    """``check_attack`` / ``check_defense`` / ``check_detector`` are imported from :mod:`benchmark.testing` on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")


__all__ = [
    "API_VERSION", "ATTACK_GROUP", "Attack", "AttackConfig", "AttackContext", "Batch", "ClipModel", "ClipObjective",
    "ConfigError", "DEFENSE_GROUP", "DETECTOR_GROUP", "Defense", "DefenseConfig", "DefenseContext", "DetectionContext",
    "Detector", "DetectorConfig", "DetectorKind", "ModelDetector", "SampleDetector", "check_detector", "detection_metrics",
    "image_embeddings", "lid_mle", "make_detector", "neighbour_distances", "top_fraction", "LossOutput", "NonFiniteLossError",
    "Objective", "PoisonedSet", "Reporter", "DefenseStage", "Stage", "StepContext", "TensorPairs", "TrainConfig", "TrainStats",
    "caption_targets", "check", "defense_image_views", "embedded_caption_phrases", "to_uint8", "zero_shot_weights", "check_attack", "check_defense", "clip_loss", "info_nce", "is_plugin", "train",
    "__version__",
]
