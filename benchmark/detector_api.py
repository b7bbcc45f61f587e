"""The detector half of the public API (re-exported by :mod:`benchmark.api` and :mod:`benchmark`).

- :class:`SampleDetector`: ``score(model, data, ctx)`` scores every pair of a (poisoned)
  training set, an ``(N,)`` array, higher = more likely poisoned;
- :class:`ModelDetector`: ``score(model, ctx)`` scores an encoder, one float, higher = more
  likely backdoored.

Both are :class:`Detector` s (``name``, ``kind``, ``paper``, a typed ``Config`` extending
:class:`DetectorConfig` with the paper's defaults) and receive a :class:`DetectionContext`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from .config import check
from .data.dataset import TensorPairs
from .models import ClipModel
from .progress import Reporter
from .train import TrainConfig


class DetectorKind(str, enum.Enum):
    """What a :class:`Detector` scores."""

    SAMPLE = "sample"  # every pair of a training set (which pairs are poisoned?)
    MODEL = "model"  # an encoder (is it backdoored?)


@dataclass
class DetectorConfig:
    """Options shared by detectors: ``batch_size`` of the embedding passes (no effect on the scores
    beyond float rounding)."""

    batch_size: int = 512

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "batch_size", self.batch_size, "use a positive batch size, e.g. 512")


@dataclass
class DetectionContext:
    """What a detector receives besides the model (and, for sample detectors, the data).

    ``start_model`` loads a fresh copy of the clean model the poisoned training started from
    (detectors that watch training, like the ABL-style loss score, train it under ``schedule``,
    the suite's poisoned-training schedule); ``clean_data`` is a clean set the defender owns
    (the suite's defense split: DECREE's shadow images)."""

    class_names: tuple[str, ...]
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    start_model: Callable[[], ClipModel] | None = None
    schedule: TrainConfig | None = None
    clean_data: TensorPairs | None = None
    reporter: Reporter = field(default_factory=lambda: Reporter(enabled=False))
    stage_name: str = "detect"


class Detector:
    """Base class of backdoor detectors (see :class:`SampleDetector` and :class:`ModelDetector`).

    Subclasses set ``name``, ``paper``, ``Config`` (a dataclass extending
    :class:`DetectorConfig`, the paper's defaults) and implement ``score``; higher scores are
    more suspicious. :meth:`diagnostics` may report what the last ``score`` call measured
    (JSON-able), recorded in the result file.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[DetectorKind] = DetectorKind.SAMPLE
    paper: ClassVar[str] = ""
    Config: ClassVar[type[DetectorConfig]] = DetectorConfig
    version: ClassVar[str] = "1"

    def __init__(self, config: DetectorConfig | None = None, *, seed: int = 0):
        self.config = config if config is not None else self.Config()
        self.seed = seed

    def rng(self, purpose: str) -> np.random.Generator:
        """A generator derived from the detector seed and a purpose string."""
        return np.random.default_rng([self.seed, *purpose.encode()])

    def diagnostics(self) -> dict[str, Any]:
        """What the last :meth:`score` call measured (JSON-able); ``{}`` by default."""
        return {}


class SampleDetector(Detector):
    """Scores every pair of a training set: ``score(model, data, ctx)`` returns a float array of
    ``len(data)`` finite values, higher = more likely poisoned. ``model`` is the model trained
    on ``data`` (the backdoored one in the benchmark); ``data`` is not modified."""

    kind = DetectorKind.SAMPLE

    def score(self, model: ClipModel, data: TensorPairs, ctx: DetectionContext) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class ModelDetector(Detector):
    """Scores an encoder: ``score(model, ctx)`` returns one finite float, higher = more likely
    backdoored. ``ctx.clean_data`` holds clean images the defender owns."""

    kind = DetectorKind.MODEL

    def score(self, model: ClipModel, ctx: DetectionContext) -> float:  # pragma: no cover
        raise NotImplementedError
