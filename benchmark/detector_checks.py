"""The detector contract check, :func:`check_detector` (re-exported by :mod:`benchmark.testing`).

::

    from benchmark.testing import check_detector
    from my_plugin import MyDetector

    def test_my_detector_honours_the_contract():
        check_detector(MyDetector)

It raises ``AssertionError`` naming the broken rule, in seconds, on synthetic data (a seeded,
class-balanced uint8 set with 5% of its pairs carrying a corner patch and a target caption)
and a randomly initialised micro CLIP; nothing is downloaded. It checks the class (a
:class:`~benchmark.api.SampleDetector` or :class:`~benchmark.api.ModelDetector`, a snake_case
``name``, a ``paper``, a ``Config`` dataclass extending
:class:`~benchmark.api.DetectorConfig` that survives a to_dict/from_dict round trip), the
output (one finite float per pair, or one finite float per model), determinism for a seed,
that neither the data nor the model is modified (weights and train/eval mode), that
``diagnostics()`` is JSON-able, and that the detection metrics accept the scores.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import torch

from .api import DetectionContext, Detector, DetectorConfig, ModelDetector, SampleDetector
from .config import from_dict, to_dict
from .data.dataset import TensorPairs


def _micro_model():
    from .models import ModelConfig, create_model

    return create_model(ModelConfig(arch="clipbench-micro-rn"), seed=0).eval()


def poisoned_pairs(image_shape: tuple[int, int, int] = (1, 28, 28), per_class: int = 20, seed: int = 0,
                   rate: float = 0.05) -> TensorPairs:
    """:func:`benchmark.testing.synthetic_pairs` with ``rate`` of its non-target pairs poisoned:
    a white 3x3 corner patch and the caption "a photo of a sneaker." (``poisoned`` set)."""
    from .data.captions import CLASS_NAMES

    g = torch.Generator().manual_seed(seed)
    n = per_class * len(CLASS_NAMES)
    labels = torch.arange(len(CLASS_NAMES)).repeat_interleave(per_class)[torch.randperm(n, generator=g)]
    images = torch.randint(0, 256, (n, *image_shape), generator=g, dtype=torch.uint8)
    captions = [f"a synthetic picture of a {CLASS_NAMES[int(k)]} number {i}." for i, k in enumerate(labels)]
    target = CLASS_NAMES.index("sneaker")
    candidates = torch.nonzero(labels != target).flatten()
    chosen = candidates[torch.randperm(len(candidates), generator=g)[:max(1, round(rate * n))]]
    poisoned = torch.zeros(n, dtype=torch.bool)
    poisoned[chosen] = True
    images[chosen, :, -3:, -3:] = 255
    for i in chosen.tolist():
        captions[i] = "a photo of a sneaker."
    return TensorPairs(images, captions, labels, tuple(CLASS_NAMES), poisoned)


def _context(seed: int, clean: TensorPairs) -> DetectionContext:
    from .train import TrainConfig

    return DetectionContext(tuple(clean.class_names), seed, start_model=_micro_model,
                            schedule=TrainConfig(epochs=1, batch_size=20, lr=1e-3, warmup_steps=1), clean_data=clean)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_detector(detector_cls: type[Detector], config: DetectorConfig | None = None, seed: int = 0,
                   image_shape: tuple[int, int, int] = (1, 28, 28)) -> Any:
    """Every contract check of a detector class; returns its scores (an array for a sample
    detector, a float for a model detector) for further, detector-specific assertions.
    ``config``: the class's paper defaults unless given (pass a cheaper one for slow detectors)."""
    from .detection import check_model_score, check_sample_scores, detection_metrics

    name = getattr(detector_cls, "__name__", repr(detector_cls))
    assert isinstance(detector_cls, type) and issubclass(detector_cls, Detector), f"{detector_cls!r} is not a benchmark.Detector"
    assert issubclass(detector_cls, (SampleDetector, ModelDetector)), \
        f"{name} must derive from benchmark.SampleDetector or benchmark.ModelDetector"
    assert detector_cls.name and detector_cls.name == detector_cls.name.lower() and " " not in detector_cls.name, \
        f"{name}.name must be a lowercase snake_case registry name, got {detector_cls.name!r}"
    assert detector_cls.paper, f"{name}.paper should cite the paper"
    assert dataclasses.is_dataclass(detector_cls.Config) and issubclass(detector_cls.Config, DetectorConfig), \
        f"{name}.Config must be a dataclass extending benchmark.DetectorConfig"
    config = config if config is not None else detector_cls.Config()
    assert from_dict(detector_cls.Config, json.loads(json.dumps(to_dict(config)))) == config, \
        f"{name}.Config does not survive a to_dict/from_dict round trip"

    data = poisoned_pairs(image_shape, seed=seed)
    clean = poisoned_pairs(image_shape, per_class=6, seed=seed + 1, rate=0.01)
    clean = TensorPairs(clean.images, clean.captions, clean.labels, clean.class_names)  # nothing poisoned
    before = (data.images.clone(), list(data.captions), data.labels.clone(), data.poisoned.clone())
    model = _micro_model()
    reference = _state(model)

    def run(det: Detector):
        ctx = _context(seed, clean)
        if isinstance(det, SampleDetector):
            return check_sample_scores(det.name, det.score(model, data, ctx), len(data))
        return check_model_score(det.name, det.score(model, ctx))

    detector = detector_cls(config, seed=seed)
    scores = run(detector)
    assert torch.equal(data.images, before[0]) and data.captions == before[1] and torch.equal(data.labels, before[2]) \
        and torch.equal(data.poisoned, before[3]), f"{name}.score modified the data in place"
    after = model.state_dict()
    for k, v in reference.items():
        assert torch.equal(v, after[k]), f"{name}.score changed the model it scores ({k}); work on a copy"
    assert not model.training, f"{name}.score left the model in train mode; restore model.train(was_training)"
    assert all(p.requires_grad for p in model.parameters() if p.is_floating_point()), \
        f"{name}.score left parameters with requires_grad=False; restore the flags"
    diag = detector.diagnostics()
    assert isinstance(diag, dict), f"{name}.diagnostics() must return a dict"
    json.dumps(diag)  # recorded in the result file
    twin = run(detector_cls(config, seed=seed))
    same = np.array_equal(twin, scores) if isinstance(scores, np.ndarray) else twin == scores
    assert same, f"{name}: two runs with seed {seed} score differently; seed every random draw (self.rng(purpose))"
    if isinstance(scores, np.ndarray):
        m = detection_metrics(scores, data.poisoned.numpy(), bootstrap=20, seed=seed)
        assert 0 <= m["auroc"] <= 1 and 0 <= m["auprc"] <= 1, f"{name}: metrics out of range {m}"
    return scores
