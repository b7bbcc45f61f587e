"""k-distance: the distance from a pair's image embedding to its k-th nearest neighbour.

Huang, Erfani, Li, Ma & Bailey: Detecting Backdoor Samples in Contrastive Language Image
Pretraining (ICLR 2025). Backdoor pairs sit in sparse local neighbourhoods of the backdoored
CLIP's image-embedding space, so a large k-distance is suspicious.

Paper (reference code, ``KDistanceDetector``): L2-normalised image embeddings of the
backdoored model, Euclidean distance, k = 16 (the README's setting; the class default is 32),
the neighbours taken among the other images of a large random batch. clipbench takes them
among *all* other training pairs (the whole poisoned set is the batch: 8,000 pairs on the
embedded default), which is the paper's "the larger the batch, the better" limit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark import DetectorConfig, SampleDetector, check, image_embeddings, neighbour_distances


@dataclass
class KDistanceConfig(DetectorConfig):
    k: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.k >= 1, "k", self.k, "use at least one neighbour, e.g. 16")


class KDistance(SampleDetector):
    name = "k_distance"
    paper = ("Huang, Erfani, Li, Ma, Bailey: Detecting Backdoor Samples in Contrastive Language Image Pretraining "
             "(ICLR 2025)")
    Config = KDistanceConfig

    def score(self, model, data, ctx) -> np.ndarray:
        emb = image_embeddings(model, data, self.config.batch_size, ctx.device)
        dist, _ = neighbour_distances(emb.numpy(), self.config.k)
        return dist[:, -1]
