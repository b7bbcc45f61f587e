"""BadNet (Gu, Dolan-Gavitt & Garg, 2017): a fixed patch pasted over the image.

Paper/reference settings (benchmark/METHODS.md, badnet): BackdoorBench pastes a 3x3 white square
at the bottom-right of 32x32 images; CleanCLIP/RoCLIP paste a 16x16 noise patch at a
random location of 224x224 images, *redrawn per image*, which is not a fixed backdoor.

clipbench: one fixed patch per (config, seed). Its side is ``round(16/224 * H)``
(the CleanCLIP area fraction), at least 3 px (3 px at 28 px); the pattern is a
checkerboard of 0/1 pixels (default), seeded uniform noise, or white; the location is a
corner, the centre, or ``random`` (one position drawn from the seed, then fixed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from benchmark import Attack, AttackConfig, ConfigError


@dataclass
class BadNetConfig(AttackConfig):
    patch_size: int | None = None  # None: round(16/224 * H), at least 3
    pattern: Literal["checkerboard", "noise", "white"] = "checkerboard"
    location: Literal["bottom_right", "bottom_left", "top_right", "top_left", "center", "random"] = "bottom_right"
    margin: int = 0


class BadNet(Attack):
    name = "badnet"
    family = "patch"
    paper = "Gu et al., BadNets, 2017"
    Config = BadNetConfig
    config: BadNetConfig

    def validate(self) -> None:
        _, h, w = self.image_shape
        side = self.side
        if side < 1 or side + self.config.margin > min(h, w):
            raise ConfigError(f"patch_size={side} (margin {self.config.margin}) does not fit a {h}x{w} image; "
                              f"use a patch_size between 1 and {min(h, w) - self.config.margin}")

    @property
    def side(self) -> int:
        if self.config.patch_size is not None:
            return self.config.patch_size
        return max(3, round(16 / 224 * self.image_shape[1]))

    def patch(self) -> torch.Tensor:
        """The fixed (C, s, s) patch."""
        c, s = self.image_shape[0], self.side
        if self.config.pattern == "white":
            return torch.ones(c, s, s)
        if self.config.pattern == "noise":
            g = torch.Generator().manual_seed(int(self.rng("patch").integers(2**31)))
            return torch.rand(c, s, s, generator=g)
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        return ((yy + xx) % 2 == 0).float().expand(c, s, s).clone()

    def position(self) -> tuple[int, int]:
        """(top, left) of the patch."""
        _, h, w = self.image_shape
        s, m = self.side, self.config.margin
        loc = self.config.location
        if loc == "random":
            rng = self.rng("location")
            return int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        top = {"top": m, "bottom": h - s - m}.get(loc.split("_")[0], (h - s) // 2)
        left = {"left": m, "right": w - s - m}.get(loc.split("_")[-1], (w - s) // 2)
        return top, left

    def mask(self) -> torch.Tensor:
        """(1, H, W) boolean mask of the pixels the trigger touches."""
        _, h, w = self.image_shape
        top, left = self.position()
        m = torch.zeros(1, h, w, dtype=torch.bool)
        m[:, top : top + self.side, left : left + self.side] = True
        return m

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        out = images.clone()
        top, left = self.position()
        s = self.side
        out[..., top : top + s, left : left + s] = self.patch().to(images)
        return out

    def trigger_params(self) -> dict:
        return {**super().trigger_params(), "side": self.side, "position": list(self.position())}
