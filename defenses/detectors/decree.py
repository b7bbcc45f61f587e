"""DECREE: model-level backdoor detection for (self-supervised / CLIP) image encoders by trigger inversion.

Feng, Tao, Cheng, Shen, Xu, Liu, Zhang, Ma & Zhang: Detecting Backdoors in Pre-trained Encoders
(CVPR 2023).
A backdoored encoder maps every image carrying its trigger to nearly one embedding, so a small
trigger suffices to make the embeddings of many clean images *collapse together*; a clean
encoder needs a large one. DECREE inverts a mask ``m`` (H x W, in [0, 1]) and a pattern ``p``
(C x H x W) on clean shadow images ``x``, stamped as ``(1 - m) x + m p``, minimising

    - mean pairwise cosine similarity of the stamped images' embeddings  +  lambda * |m|_1

where lambda adapts (Neural-Cleanse style): multiplied by 5 after more than 5 consecutive steps
whose similarity exceeds the success threshold 0.99, divided by 5 after more than 5 below it,
reset to its initial 1e-3 when it fell under 1e-7 and stays successful. The smallest mask
reached while the similarity exceeded the threshold is the inverted trigger; its **PL1 norm**
(L1 norm relative to the image size, in [0, 1]) is small for backdoored encoders. The score is
``1 - PL1`` (higher = more likely backdoored); no mask meeting the threshold gives PL1 = 1.

Paper / reference code settings kept: the tanh parametrisation of mask and pattern, random
initialisation (``mask_init=rand``), Adam (betas 0.5, 0.9) at lr 0.5 with the CLIP schedule
(lr, then 0.1 from 20% of the run, 0.05 from 50%), batch 32, threshold 0.99, lambda 1e-3 /
x5 / patience 5 / minimum 1e-7, the L1 norm of the 3-channel mask. Differences: a fixed number
of steps (``steps``, default 600 at 32 px on CPU) instead of 1,000 epochs with early
stopping; the shadow set is ``shadow_size`` images of the defender's clean split (the
reference: 20% of a 50K ImageNet subset); the cosine similarity is over distinct pairs only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark import DetectorConfig, ModelDetector, check

_EPS = 1e-7  # the reference code's epsilon() in the tanh parametrisation


@dataclass
class DECREEConfig(DetectorConfig):
    steps: int = 600
    inversion_batch_size: int = 32
    lr: float = 0.5
    threshold: float = 0.99
    init_lambda: float = 1e-3
    lambda_factor: float = 5.0
    patience: int = 5
    lambda_min: float = 1e-7
    shadow_size: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.steps >= 1, "steps", self.steps, "run at least one inversion step, e.g. 600")
        check(self.inversion_batch_size >= 2, "inversion_batch_size", self.inversion_batch_size,
              "pairwise similarity needs at least 2 images a batch, e.g. 32")
        check(self.lr > 0, "lr", self.lr, "use a positive learning rate, e.g. 0.5")
        check(0 < self.threshold < 1, "threshold", self.threshold, "use a cosine similarity in (0, 1), e.g. 0.99")
        check(self.init_lambda > 0 and self.lambda_factor > 1, "init_lambda", self.init_lambda,
              "use a positive initial lambda and a lambda_factor above 1")
        check(self.patience >= 1, "patience", self.patience, "use at least one step of patience")
        check(self.shadow_size >= 2, "shadow_size", self.shadow_size, "use at least 2 clean shadow images, e.g. 500")


def _squash(raw: torch.Tensor) -> torch.Tensor:
    return torch.tanh(raw) / (2 - _EPS) + 0.5


def _unsquash(x: torch.Tensor) -> torch.Tensor:
    return torch.atanh((x - 0.5) * (2 - _EPS))


def mean_pairwise_cosine(z: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over the distinct pairs of the rows of ``z`` (rows L2-normalised)."""
    n = len(z)
    sim = z @ z.T
    return (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))


class DECREE(ModelDetector):
    name = "decree"
    paper = "Feng, Tao, Cheng, Shen, Xu, Liu, Zhang, Ma, Zhang: Detecting Backdoors in Pre-trained Encoders (CVPR 2023)"
    Config = DECREEConfig

    def __init__(self, config=None, *, seed: int = 0):
        super().__init__(config, seed=seed)
        self._diag: dict = {}

    def lr_at(self, step: int) -> float:
        """The reference code's CLIP schedule (epochs 200 / 500 of 1,000) as fractions of ``steps``."""
        frac = step / self.config.steps
        return self.config.lr if frac < 0.2 else (0.1 if frac < 0.5 else 0.05)

    def score(self, model, ctx) -> float:
        cfg = self.config
        if ctx.clean_data is None or len(ctx.clean_data) < 2:
            raise ValueError("decree inverts a trigger on clean shadow images: the detection context needs clean_data "
                             "(clipbench run passes the suite's defense split)")
        rng = self.rng("shadow")
        shadow = ctx.clean_data.images[np.sort(rng.choice(len(ctx.clean_data), min(cfg.shadow_size, len(ctx.clean_data)),
                                                          replace=False))]
        device = ctx.device
        c, h, w = shadow.shape[1:]
        g = torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))
        mask_raw = _unsquash(torch.rand(h, w, generator=g, dtype=torch.float64)).float().to(device).requires_grad_(True)
        patch_raw = _unsquash(torch.rand(c, h, w, generator=g, dtype=torch.float64)).float().to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([mask_raw, patch_raw], lr=cfg.lr, betas=(0.5, 0.9))
        flags = [p.requires_grad for p in model.parameters()]
        was_training = model.training
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        lam, up, down, reset = cfg.init_lambda, 0, 0, 0
        best, best_sim, sims = float("inf"), None, []
        try:
            with torch.no_grad():
                z0 = model.encode_image(shadow[:256].to(device).float().div_(255))
                clean_sim = float(mean_pairwise_cosine(z0))
            for step in range(cfg.steps):
                for group in optimizer.param_groups:
                    group["lr"] = self.lr_at(step)
                idx = torch.randint(len(shadow), (min(cfg.inversion_batch_size, len(shadow)),), generator=g)
                x = shadow[idx].to(device).float().div_(255)
                m, p = _squash(mask_raw).clamp(0, 1), _squash(patch_raw).clamp(0, 1)
                z = model.encode_image(((1 - m) * x + m * p).clamp(0, 1))
                sim = mean_pairwise_cosine(z)
                reg = m.sum() * c  # the L1 norm of the C-channel mask, as the reference computes it
                loss = -sim + lam * reg
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                s, r = float(sim.detach()), float(reg.detach())
                sims.append(s)
                success = s > cfg.threshold
                if success and r < best:
                    best, best_sim = r, s
                if lam < cfg.lambda_min and success:  # the reference's reset of a vanished lambda
                    reset += 1
                    if reset > 2 * cfg.patience:
                        lam, up, down, reset = cfg.init_lambda, 0, 0, 0
                else:
                    reset = 0
                up, down = (up + 1, 0) if success else (0, down + 1)
                if up > cfg.patience:
                    if lam < 1e5:
                        lam *= cfg.lambda_factor
                    up = 0
                elif down > cfg.patience:
                    if lam >= cfg.lambda_min:
                        lam /= cfg.lambda_factor
                    down = 0
        finally:
            for p, f in zip(model.parameters(), flags):
                p.requires_grad_(f)
            model.train(was_training)
        found = best < float("inf")
        pl1 = best / (c * h * w) if found else 1.0
        self._diag = {"pl1": pl1, "found": found, "best_similarity": best_sim, "clean_similarity": clean_sim,
                      "final_similarity": sims[-1] if sims else None, "final_lambda": lam, "steps": cfg.steps,
                      "shadow_size": len(shadow)}
        return 1.0 - pl1

    def diagnostics(self) -> dict:
        return dict(self._diag)
