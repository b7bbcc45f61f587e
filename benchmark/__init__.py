"""clipbench: a benchmark of backdoor attacks and defenses on CLIP-style models.

This package is the engine and the one public API that attacks, defenses and plugins
import (:mod:`benchmark.api`, re-exported here).
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
    PoisonedSet,
    Stage,
)
from .losses import ClipObjective, LossOutput, Objective, StepContext, clip_loss, info_nce  # noqa: E402
from .train import TrainConfig  # noqa: E402

__all__ = [
    "API_VERSION", "Attack", "AttackConfig", "AttackContext", "ClipObjective", "Defense", "DefenseConfig",
    "DefenseContext", "LossOutput", "Objective", "PoisonedSet", "Stage", "StepContext", "TrainConfig",
    "clip_loss", "info_nce", "__version__",
]
