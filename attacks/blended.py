"""Blended (Chen, Liu, Li, Lu & Song, 2017, "Targeted Backdoor Attacks on Deep Learning
Systems Using Data Poisoning"): the trigger is a fixed pattern blended into the image.

    x' = (1 - alpha) * x + alpha * P,      alpha = 0.2 at train and at test time

Paper/reference settings (benchmark/METHODS.md, blended): BackdoorBench blends a fixed image
(Hello Kitty); CleanCLIP and HanxunH blend fixed uniform noise. clipbench default: a
uniform-noise pattern ``P ~ U[0,1]^(C,H,W)`` drawn once from the attack seed (so the
same pattern at poison and test time, different per seed); ``pattern_path`` blends an
image file instead (converted to the images' channel count and resized to H x W with
bilinear interpolation; its SHA-256 joins the cache key, so editing the file in place
invalidates cached poisons). ``alpha`` is resolution independent: no scaling.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmark import Attack, AttackConfig, ConfigError, check


@dataclass
class BlendedConfig(AttackConfig):
    alpha: float = 0.2  # blend ratio at train and test time (Chen et al.; CleanCLIP)
    pattern_path: str | None = None  # None: uniform noise from the attack seed; else an image file

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.alpha <= 1, "alpha", self.alpha, "use a blend ratio in (0, 1], e.g. 0.2")


class Blended(Attack):
    """Blend a fixed noise (or image) pattern into every poisoned and test image."""

    name = "blended"
    family = "blend"
    paper = "Chen et al., Targeted Backdoor Attacks ... Using Data Poisoning (Blended), 2017"
    Config = BlendedConfig
    config: BlendedConfig

    def validate(self) -> None:
        path = self.config.pattern_path
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"attacks.blended.pattern_path={path!r} is not a file; give an image path (PNG/JPEG) "
                              "or leave it unset for a seeded noise pattern")

    @cached_property
    def pattern(self) -> torch.Tensor:
        """The fixed (C, H, W) pattern in [0, 1]."""
        c, h, w = self.image_shape
        if self.config.pattern_path is None:
            return torch.from_numpy(self.rng("pattern").random((c, h, w))).float()
        from PIL import Image

        with Image.open(self.config.pattern_path) as img:
            img = img.convert("L" if c == 1 else "RGB")
            arr = np.asarray(img, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr).reshape(arr.shape[0], arr.shape[1], -1).permute(2, 0, 1)
        if t.shape[0] != c:  # RGB file for C > 3 channels: repeat (documented: rare)
            t = t.repeat(-(-c // t.shape[0]), 1, 1)[:c]
        t = F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
        return t.clamp(0, 1)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        a = self.config.alpha
        return ((1 - a) * images + a * self.pattern.to(images)).clamp(0, 1)

    def identity(self) -> dict:
        path = self.config.pattern_path
        return {} if path is None else {"pattern_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}

    def trigger_params(self) -> dict:
        return {**super().trigger_params(), **self.identity(),
                "pattern": "noise" if self.config.pattern_path is None else "image"}
