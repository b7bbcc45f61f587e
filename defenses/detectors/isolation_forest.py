"""Isolation Forest on the image embeddings (Liu, Ting & Zhou, ICDM 2008), as a backdoor-sample detector.

One of the baselines of Huang et al. (ICLR 2025, see :mod:`defenses.detectors.k_distance`):
scikit-learn's ``IsolationForest`` fitted on the backdoored model's L2-normalised image
embeddings of the training set; the score is the negated ``score_samples`` (scikit-learn's
is higher for normal points), so that higher = more isolated = more suspicious.

Paper settings (reference code): 100 trees, scikit-learn's other defaults (256 samples per
tree, every feature). Differences: the forest is seeded (``random_state`` from the detector
seed) so that a rerun scores identically; it is fitted on the whole training set, not a batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark import DetectorConfig, SampleDetector, check, image_embeddings


@dataclass
class IsolationForestConfig(DetectorConfig):
    n_estimators: int = 100
    max_samples: int = 256  # scikit-learn's "auto": min(256, N)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_estimators >= 1, "n_estimators", self.n_estimators, "use at least one tree, e.g. 100")
        check(self.max_samples >= 2, "max_samples", self.max_samples, "use at least 2 samples per tree, e.g. 256")


class IsolationForestDetector(SampleDetector):
    name = "isolation_forest"
    paper = "Liu, Ting, Zhou: Isolation Forest (ICDM 2008); as a CLIP backdoor-sample baseline: Huang et al. (ICLR 2025)"
    Config = IsolationForestConfig

    def score(self, model, data, ctx) -> np.ndarray:
        from sklearn.ensemble import IsolationForest

        emb = image_embeddings(model, data, self.config.batch_size, ctx.device).numpy()
        forest = IsolationForest(n_estimators=self.config.n_estimators, max_samples=min(self.config.max_samples, len(emb)),
                                 random_state=int(self.rng("forest").integers(2**31 - 1)))
        forest.fit(emb)
        return -forest.score_samples(emb)
