"""DAO: dimensionality-aware outlier detection on the image embeddings (the ICLR 2025 paper's best detector).

Huang et al., Detecting Backdoor Samples in Contrastive Language Image Pretraining (ICLR 2025),
use DAO (Anderberg, Bailey, Campello, Houle, Marques, Radovanović & Zimek, SDM 2024): a
LOF-style ratio of a point's k-distance to its neighbours' k-distances, each ratio raised to
the neighbour's local intrinsic dimensionality, so that the density comparison is corrected
for how fast volume grows locally. The reference code's score (``DAODetector``) is the mean of
the logarithms:

    DAO(q) = (1/k) * sum over the k nearest neighbours o of q:  LID(o) * log(d_k(q) / d_k(o))

with LID the MLE estimate (:func:`benchmark.lid_mle`) at each neighbour from its own k
neighbours. Higher = more outlying = more suspicious.

Paper settings: k = 16 (README), L2-normalised image embeddings of the backdoored model,
Euclidean distance. Differences: neighbours among all other training pairs (the reference
takes a large batch); the textbook LID estimate (see :mod:`defenses.detectors.lid`); SDM's
original DAO averages the ratios themselves, the reference code (followed here) their logs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark import DetectorConfig, SampleDetector, check, image_embeddings, lid_mle, neighbour_distances


@dataclass
class DAOConfig(DetectorConfig):
    k: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.k >= 2, "k", self.k, "DAO's LID estimate needs at least two neighbours, e.g. 16")


def dao_scores(embeddings: np.ndarray, k: int) -> np.ndarray:
    """DAO of every row of ``embeddings`` against the others (see the module docstring)."""
    dist, idx = neighbour_distances(embeddings, k)
    kdist = np.maximum(dist[:, -1], 1e-12)
    lid = lid_mle(dist)
    ratio = np.log(kdist[:, None] / kdist[idx])  # (N, k): log d_k(q) / d_k(o)
    return (lid[idx] * ratio).mean(axis=1)


class DAO(SampleDetector):
    name = "dao"
    paper = ("Huang, Erfani, Li, Ma, Bailey: Detecting Backdoor Samples in Contrastive Language Image Pretraining "
             "(ICLR 2025); DAO: Anderberg et al. (SDM 2024)")
    Config = DAOConfig

    def score(self, model, data, ctx) -> np.ndarray:
        emb = image_embeddings(model, data, self.config.batch_size, ctx.device)
        return dao_scores(emb.numpy(), self.config.k)
