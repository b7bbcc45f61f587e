"""ABL-style loss score: poisoned pairs are learned first, so their loss is lowest after the first epochs.

Li, Lyu, Koren, Lyu, Li & Ma: Anti-Backdoor Learning: Training Clean Models on Poisoned Data
(NeurIPS 2021). ABL's isolation stage trains on the poisoned set for a few epochs with *local
gradient ascent* (LGA: the loss ``L`` is replaced by ``sign(L - gamma) * L``, which keeps clean
samples' loss near the floor ``gamma`` while the easier backdoor samples fall below it), then
computes every sample's loss with that model and isolates the lowest-loss fraction (1%).

clipbench's CLIP version: the defender trains a copy of the clean start model (``ctx.start_model``)
on the poisoned set under the suite's poisoned-training schedule (``ctx.schedule``) for
``epochs`` epochs with the CLIP loss under LGA, then computes each pair's contrastive loss
(the mean of its image->text and text->image cross-entropies, identical captions counted as
positives as in training) in ``passes`` seeded random batchings of the training batch size,
averaged; the score is the negated loss (higher = lower loss = more suspicious; ``flag:
lowest``, the paper's direction).

Differences from the paper: ABL trains a classifier from scratch with cross-entropy for 20
isolation epochs (CIFAR-10); here a pretrained CLIP is fine-tuned, so one epoch is "the first
epochs" (the backdoored model of the benchmark trains 5); a pair's loss depends on the batch
it is in, hence the averaged batchings. ``gamma`` is the paper's 0.5; ``gamma: null`` trains
with the plain loss. The (backdoored) model passed to ``score`` is not used.

Measured on the embedded default (fine-tuning a pretrained CLIP, 1% poison): after one epoch
the poisoned pairs have the *highest* loss (their captions contradict what the clean model
sees), the reverse of ABL's from-scratch premise, so the paper's direction ranks them last
(AUROC far below 0.5); ``flag: highest`` scores ``+loss`` (see benchmark/METHODS.md).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from benchmark import (ClipObjective, DetectorConfig, LossOutput, SampleDetector, caption_targets, check,
                       train)


@dataclass
class ABLLossConfig(DetectorConfig):
    epochs: int = 1  # isolation epochs (the paper: 20 from scratch on CIFAR-10)
    gamma: float | None = 0.5  # LGA loss floor (the paper's); None: plain loss
    passes: int = 2  # random batchings the per-pair loss is averaged over
    flag: Literal["lowest", "highest"] = "lowest"  # which losses are suspicious (the paper: the lowest)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.epochs >= 1, "epochs", self.epochs, "train at least one isolation epoch")
        check(self.gamma is None or self.gamma >= 0, "gamma", self.gamma, "use a non-negative loss floor or null")
        check(self.passes >= 1, "passes", self.passes, "use at least one pass")


class LGAClipObjective(ClipObjective):
    """The CLIP loss under ABL's local gradient ascent: ``sign(L - gamma) * L``."""

    def __init__(self, gamma: float | None):
        super().__init__()
        self.gamma = gamma

    def __call__(self, model, batch, ctx):
        out = super().__call__(model, batch, ctx)
        if self.gamma is None:
            return out
        loss = torch.sign(out.loss.detach() - self.gamma) * out.loss
        return LossOutput(loss, {**out.parts, "lga": float(loss.detach())})


@torch.no_grad()
def pair_losses(model, data, batch_size: int, rng: np.random.Generator, device) -> np.ndarray:
    """Each pair's symmetric contrastive loss within one random batching of ``data``."""
    model.eval()
    order = rng.permutation(len(data))
    out = np.zeros(len(data))
    scale = model.logit_scale.exp()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2:  # a lone leftover pair joins the previous batch's tail
            idx = order[max(0, start - batch_size + 1):start + 1]
        batch = data.subset(idx)
        img = model.encode_image(batch.images.to(device).float().div_(255))
        txt = model.encode_text(batch.captions)
        logits = scale * img @ txt.T
        targets = caption_targets(batch.captions, img.device)
        i2t = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
        t2i = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1)
        out[idx] = (0.5 * (i2t + t2i)).float().cpu().numpy()
    return out


class ABLLoss(SampleDetector):
    name = "abl_loss"
    paper = "Li, Lyu, Koren, Lyu, Li, Ma: Anti-Backdoor Learning: Training Clean Models on Poisoned Data (NeurIPS 2021)"
    Config = ABLLossConfig

    def __init__(self, config=None, *, seed: int = 0):
        super().__init__(config, seed=seed)
        self._diag: dict = {}

    def score(self, model, data, ctx) -> np.ndarray:
        if ctx.start_model is None or ctx.schedule is None:
            raise ValueError("abl_loss trains from the clean start model: the detection context needs start_model and "
                             "schedule (clipbench run provides both)")
        isolated = ctx.start_model()
        schedule = dataclasses.replace(ctx.schedule, epochs=self.config.epochs)
        stats = train(isolated, data, LGAClipObjective(self.config.gamma), schedule, seed=self.seed, device=ctx.device,
                      stage=f"{ctx.stage_name} (isolation)", reporter=ctx.reporter)
        rng = self.rng("batchings")
        losses = np.mean([pair_losses(isolated, data, schedule.batch_size, rng, ctx.device)
                          for _ in range(self.config.passes)], axis=0)
        self._diag = {"isolation_loss_per_epoch": stats.loss_history, "isolation_steps": stats.steps,
                      "mean_pair_loss": float(losses.mean())}
        return -losses if self.config.flag == "lowest" else losses

    def diagnostics(self) -> dict:
        return dict(self._diag)
