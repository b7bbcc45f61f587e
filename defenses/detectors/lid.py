"""LID: the local intrinsic dimensionality of a pair's image embedding (maximum-likelihood estimate).

Huang et al. (ICLR 2025; see :mod:`defenses.detectors.k_distance`) score pairs by LID: poisoned
pairs' neighbourhoods have a higher local dimensionality than clean ones'. The MLE estimate
(Levina & Bickel 2004; Amsaleg et al., KDD 2015) from the distances d_1 <= ... <= d_k to the
k nearest neighbours: ``LID = -1 / mean_i log(d_i / d_k)``.

Paper (reference code, ``LIDDetector(est_type='mle')``): k = 16 (README), L2-normalised image
embeddings, neighbours within a large batch. Differences: neighbours among all other training
pairs; the reference normalises the k distances by the (k+1)-th and adds 1e-4 inside the log,
clipbench uses the textbook estimate above (d_k normalises, no offset).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark import DetectorConfig, SampleDetector, check, image_embeddings, lid_mle, neighbour_distances


@dataclass
class LIDConfig(DetectorConfig):
    k: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.k >= 2, "k", self.k, "the MLE needs at least two neighbours, e.g. 16")


class LID(SampleDetector):
    name = "lid"
    paper = ("Huang, Erfani, Li, Ma, Bailey: Detecting Backdoor Samples in Contrastive Language Image Pretraining "
             "(ICLR 2025); LID MLE: Amsaleg et al. (KDD 2015)")
    Config = LIDConfig

    def score(self, model, data, ctx) -> np.ndarray:
        emb = image_embeddings(model, data, self.config.batch_size, ctx.device)
        dist, _ = neighbour_distances(emb.numpy(), self.config.k)
        return lid_mle(dist)
