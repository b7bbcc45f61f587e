"""SIG (Barni, Kallas & Tondi, ICIP 2019, "A New Backdoor Attack in CNNs by Training Set
Corruption Without Label Poisoning"): the trigger is an additive horizontal sinusoid.

    x'(i, j) = clip(x(i, j) + Delta * sin(2 * pi * j * f / W), 0, 1)

for every row ``i``, column ``j`` (0-based) and channel; ``W`` is the image width.

Paper/reference settings (benchmark/METHODS.md, sig):

- Barni et al. poison *clean-label*: only target-class training images get the signal and
  keep their labels; they train with Delta = 20/255 and test with up to 60/255 (a stronger
  signal at test time), f = 6.
- BackdoorBench: Delta = 20/255 at train and test, f = 6.
- The CLIP papers' repositories (CleanCLIP, RoCLIP, BadCLIP) use it *poison-label*: a
  random image gets the signal and a target-class caption, Delta = 60/255 at train and
  test, f = 6 over 224 px.

clipbench: poison-label by default (the CLIP papers' use: captions are target-class
zero-shot templates drawn per sample, as for every poison-label attack); ``clean_label:
true`` is Barni et al.'s setting (target-class images only, truthful captions, the
poison count capped at the class's size, as for label-consistent). One ``delta`` serves
at train and test time (the trigger is one fixed function, identical at poison and test
time). The frequency counts periods over the width, so ``f = 6`` means the same pattern
at any resolution (6 periods over 32 px: a period of 5.3 px). The default amplitude is
BackdoorBench's 20/255; the embedded suite uses 30/255, chosen on VAL (20/255 reaches 83%
val ASR at 32 px and 1% poisoned pairs, 30/255 97%; the sweep is in
``benchmark/suites/embedded.yaml``): the CLIP papers' 60/255 is not needed. The signal is the same on every channel (grey images
stay grey), as in the reference code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from benchmark import Attack, AttackConfig, AttackContext, ConfigError, TensorPairs, check


@dataclass
class SIGConfig(AttackConfig):
    delta: float = 20 / 255  # amplitude at train and test (BackdoorBench; Barni: 20/255 train, up to 60/255 test)
    frequency: float = 6.0  # periods over the image width (Barni et al.: 6)
    clean_label: bool = False  # True: Barni's clean-label setting (target-class images, truthful captions)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.delta <= 1, "delta", self.delta, "use an amplitude in (0, 1], e.g. 20/255 = 0.0784")
        check(self.frequency > 0, "frequency", self.frequency, "use a positive number of periods over the width, e.g. 6")


class SIG(Attack):
    """An additive horizontal sinusoid, poison-label by default, clean-label on request."""

    name = "sig"
    family = "signal"
    paper = "Barni, Kallas & Tondi, A New Backdoor Attack in CNNs by Training Set Corruption Without Label Poisoning, ICIP 2019"
    Config = SIGConfig
    config: SIGConfig

    def __init__(self, config: SIGConfig | None = None, *, seed: int = 0,
                 image_shape: tuple[int, int, int] = (1, 28, 28)):
        super().__init__(config, seed=seed, image_shape=image_shape)
        self.clean_label = bool(self.config.clean_label)  # per instance: the contract checks read it

    def validate(self) -> None:
        w = self.image_shape[2]
        if self.config.frequency >= w / 2:
            raise ConfigError(f"attacks.sig.frequency={self.config.frequency} periods do not fit {w} px (Nyquist: "
                              f"fewer than {w / 2:g}); use e.g. 6")

    @cached_property
    def signal(self) -> torch.Tensor:
        """The additive pattern v, shape (1, H, W): ``delta * sin(2 pi j f / W)`` in every row."""
        _, h, w = self.image_shape
        j = torch.arange(w, dtype=torch.float64)
        row = self.config.delta * torch.sin(2 * math.pi * j * self.config.frequency / w)
        return row.expand(1, h, w).float().clone()

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        return (images + self.signal.to(images)).clamp(0, 1)

    # ------------------------------------------------------------------ clean-label
    def select(self, data: TensorPairs, target: int) -> np.ndarray:
        if not self.clean_label:
            return super().select(data, target)
        return self.select_target_class(data, target)

    def poison_captions(self, data: TensorPairs, index: np.ndarray, ctx: AttackContext) -> list[str]:
        if self.clean_label:
            return [data.captions[i] for i in index.tolist()]  # truthful captions are kept
        return super().poison_captions(data, index, ctx)

    def trigger_params(self) -> dict:
        w = self.image_shape[2]
        return {**super().trigger_params(), "period_px": w / self.config.frequency,
                "mode": "clean-label" if self.clean_label else "poison-label"}
