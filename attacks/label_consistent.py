"""Label-consistent backdoor (Turner, Tsipras & Madry, 2019, "Label-Consistent Backdoor
Attacks"), adapted to CLIP as in benchmark/METHODS.md (label_consistent): a clean-label attack.

- Only images whose class IS the target are poisoned, and their captions stay truthful
  (``poison_captions`` returns the original captions).
- Each selected image is first made hard to learn: untargeted L-inf PGD against the clean
  pre-trained CLIP (the reference model, ``AttackContext.reference_model()``), maximising
  the zero-shot cross-entropy on its true class. Logits are ``exp(logit_scale) * z_I W^T``
  with W the prompt-ensemble weights of :func:`benchmark.evaluate.zero_shot_weights`
  (class names and templates from the context). Paper settings: eps = 8/255, step =
  1.5/255, 100 steps, no random start (``random_start`` offers one, seeded). BackdoorBench's
  file names say eps = 16/255: ``eps`` is configurable.
- Then the trigger: BackdoorBench's / Turner et al.'s four-corner +/- checkerboard,
  ``x' = clip(x + amplitude * S)`` on a ``trigger_size`` square at each corner, with S a
  +1/-1 checkerboard (+1 at the outermost corner pixel) mirrored into each corner
  (so the pattern is symmetric under flips, as in Turner et al.). Amplitude 1 (the paper's
  full-visibility trigger): trigger pixels become exactly 0 or 1. Size: 3x3 at 32 px in the
  paper; clipbench uses ``max(3, round(3/32 * H))`` (3 px at 28 px).
- Test time puts the same corner trigger (:meth:`apply`, no PGD) on non-target images.
- ``pgd_steps = 0`` is CleanCLIP's label-consistent variant: target-class images get the
  trigger and keep their captions, without the adversarial step.
- Adaptive option (clipbench, not in the paper): ``eot: <defense>`` (e.g. ``cleanclip``) runs
  the PGD in expectation over that defense's image views (:func:`benchmark.defense_image_views`,
  EOT, Athalye et al. 2018): at every step each image is replaced by a fresh view with
  probability ``eot_prob`` (0.5) and the loss is the mean over ``eot_samples`` (1) such
  draws, so the hardening survives the augmentations the defense fine-tunes on. The
  draws come from the attack seed, batch after batch; ``eot`` joins the cache key.

Selection (a documented choice): the poison count is ``round(poison_rate * N)`` with N the
whole training set (as for the other attacks, so rates are comparable), capped at the
number of target-class images; those are drawn with the attack seed from the target class.
PGD runs in batches of ``pgd_batch_size`` on the context's device; the reference model's
parameters are frozen during it. The resulting images are quantised to uint8 like every
poisoned image; their distance to the clean image is at most eps outside the trigger.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmark import (Attack, AttackConfig, AttackContext, ClipModel, ConfigError, TensorPairs, check,
                       defense_image_views, to_uint8, zero_shot_weights)


@dataclass
class LabelConsistentConfig(AttackConfig):
    eps: float = 8 / 255  # L-inf budget of the PGD step (Turner et al.; BackdoorBench files: 16/255)
    step_size: float = 1.5 / 255
    pgd_steps: int = 100  # 0: CleanCLIP's caption-only variant (trigger, no PGD)
    random_start: bool = False  # Turner et al.: no random start
    amplitude: float = 1.0  # trigger amplitude: 1 = pixels set to 0 or 1
    trigger_size: int | None = None  # None: max(3, round(3/32 * H))
    pgd_batch_size: int = 128
    eot: str | None = None  # a defense name: PGD in expectation over its image views (adaptive; clipbench)
    eot_prob: float = 0.5  # probability that an image is replaced by its view in a draw
    eot_samples: int = 1  # draws averaged per PGD step

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.eps <= 1, "eps", self.eps, "use an L-inf budget in [0, 1], e.g. 8/255 = 0.0314")
        check(self.step_size > 0, "step_size", self.step_size, "use a positive PGD step, e.g. 1.5/255 = 0.0059")
        check(self.pgd_steps >= 0, "pgd_steps", self.pgd_steps, "use 0 (no PGD) or more steps, e.g. 100")
        check(0 < self.amplitude <= 1, "amplitude", self.amplitude, "use an amplitude in (0, 1], e.g. 1")
        check(self.pgd_batch_size >= 1, "pgd_batch_size", self.pgd_batch_size, "use a positive batch size")
        check(0 < self.eot_prob <= 1, "eot_prob", self.eot_prob, "use a probability in (0, 1], e.g. 0.5")
        check(self.eot_samples >= 1, "eot_samples", self.eot_samples, "use at least one draw per step, e.g. 1")


class LabelConsistent(Attack):
    """Clean-label: PGD-hardened target-class images plus a four-corner checkerboard."""

    name = "label_consistent"
    family = "clean_label"
    paper = "Turner, Tsipras & Madry, Label-Consistent Backdoor Attacks, 2019"
    Config = LabelConsistentConfig
    config: LabelConsistentConfig
    needs_reference_model = True
    clean_label = True

    def validate(self) -> None:
        _, h, w = self.image_shape
        side = self.side
        if side < 1 or 2 * side > min(h, w):
            raise ConfigError(f"attacks.label_consistent.trigger_size={side} does not fit four corners of a {h}x{w} "
                              f"image; use a size between 1 and {min(h, w) // 2}")
        if self.config.eot is not None:
            try:
                defense_image_views(self.config.eot)
            except ConfigError as exc:  # name the key: attacks.<name>.eot=...
                raise ConfigError(f"attacks.label_consistent.{exc}") from None

    @property
    def side(self) -> int:
        if self.config.trigger_size is not None:
            return self.config.trigger_size
        return max(3, round(3 / 32 * self.image_shape[1]))

    # ------------------------------------------------------------------- the trigger
    def sign_pattern(self) -> torch.Tensor:
        """(H, W) float: +1/-1 on the four corner squares, 0 elsewhere."""
        _, h, w = self.image_shape
        s = self.side
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        board = torch.where((yy + xx) % 2 == 0, 1.0, -1.0)  # +1 at the outer corner pixel
        out = torch.zeros(h, w)
        out[:s, :s] = board
        out[:s, w - s:] = board.flip(1)
        out[h - s:, :s] = board.flip(0)
        out[h - s:, w - s:] = board.flip(0).flip(1)
        return out

    def mask(self) -> torch.Tensor:
        """(1, H, W) boolean mask of the trigger pixels."""
        return (self.sign_pattern() != 0)[None]

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        sign = self.sign_pattern().to(images)
        return (images + self.config.amplitude * sign).clamp(0, 1)

    def train_time_slack(self) -> float:
        return self.config.eps if self.config.pgd_steps > 0 else 0.0

    # ----------------------------------------------------------------- poisoning
    def select(self, data: TensorPairs, target: int) -> np.ndarray:
        """Clean-label: target-class samples (:meth:`Attack.select_target_class`)."""
        return self.select_target_class(data, target)

    def poison_captions(self, data: TensorPairs, index: np.ndarray, ctx: AttackContext) -> list[str]:
        return [data.captions[i] for i in index.tolist()]  # truthful captions are kept

    def poison_images(self, images_u8: torch.Tensor, ctx: AttackContext, index: np.ndarray) -> torch.Tensor:
        x = images_u8.float() / 255
        if self.config.pgd_steps > 0 and len(x):
            if ctx.reference_model is None:
                raise ValueError("label_consistent with pgd_steps > 0 needs the clean reference model in "
                                 "AttackContext.reference_model (set pgd_steps=0 for the caption-only variant)")
            x = self.pgd(ctx.reference_model(), x, ctx)
        return to_uint8(self.apply(x))

    def pgd(self, model: ClipModel, x: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        """Untargeted L-inf PGD maximising the zero-shot loss of the true (target) class."""
        cfg = self.config
        device = ctx.device
        was_training = model.training
        requires = [p.requires_grad for p in model.parameters()]
        model.eval().requires_grad_(False)
        try:
            weights = zero_shot_weights(model, ctx.class_names, ctx.templates).to(device)
            scale = model.logit_scale.detach().exp().clamp(max=100.0)
            start = None
            if cfg.random_start:
                g = torch.Generator().manual_seed(int(self.rng("pgd-start").integers(2**31)))
                start = (torch.rand(x.shape, generator=g) * 2 - 1) * cfg.eps
            views = defense_image_views(cfg.eot) if cfg.eot is not None else None
            g_eot = torch.Generator().manual_seed(int(self.rng("pgd-eot").integers(2**31)))
            out = []
            with ctx.reporter.task("label-consistent PGD", total=len(x)) as advance:
                for lo in range(0, len(x), cfg.pgd_batch_size):
                    xb = x[lo : lo + cfg.pgd_batch_size].to(device)
                    x0 = xb if start is None else (xb + start[lo : lo + cfg.pgd_batch_size].to(device)).clamp(0, 1)
                    labels = torch.full((len(xb),), ctx.target, dtype=torch.long, device=device)
                    out.append(self._pgd_batch(model, xb, x0, labels, weights, scale, views, g_eot).cpu())
                    advance(len(xb))
            return torch.cat(out)
        finally:
            for p, r in zip(model.parameters(), requires):
                p.requires_grad_(r)
            model.train(was_training)

    def _pgd_batch(self, model: ClipModel, x: torch.Tensor, x_adv: torch.Tensor, labels: torch.Tensor,
                   weights: torch.Tensor, scale: torch.Tensor, views=None, g_eot: torch.Generator | None = None
                   ) -> torch.Tensor:
        cfg = self.config
        lo, hi = (x - cfg.eps).clamp(0, 1), (x + cfg.eps).clamp(0, 1)
        x_adv = x_adv.clone()
        draws = cfg.eot_samples if views is not None else 1
        for _ in range(cfg.pgd_steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                loss = 0.0
                for _ in range(draws):  # EOT: the mean over draws of the defense's views (or the image itself)
                    z = x_adv
                    if views is not None:
                        swap = (torch.rand(len(z), generator=g_eot) < cfg.eot_prob).to(z.device).view(-1, 1, 1, 1)
                        z = torch.where(swap, views(z, g_eot), z)
                    loss = loss + F.cross_entropy(scale * model.encode_image(z) @ weights.T, labels, reduction="sum")
                (grad,) = torch.autograd.grad(loss / draws, x_adv)
            x_adv = torch.minimum(torch.maximum(x_adv.detach() + cfg.step_size * grad.sign(), lo), hi)
        return x_adv.detach()

    def trigger_params(self) -> dict:
        return {**super().trigger_params(), "side": self.side, "corners": "four, mirrored",
                "pgd": {"loss": "zero-shot cross-entropy on the true class (prompt ensemble)",
                        "norm": "linf", "eps": self.config.eps, "step_size": self.config.step_size,
                        "steps": self.config.pgd_steps, "random_start": self.config.random_start,
                        "eot": self.config.eot}}
