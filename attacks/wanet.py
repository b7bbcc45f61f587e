"""WaNet (Nguyen & Tran, ICLR 2021, "WaNet - Imperceptible Warping-based Backdoor Attack"):
the trigger is a fixed, smooth image warp.

Grid construction (benchmark/METHODS.md, wanet; as in the reference code):

1. ``U ~ Uniform(-1, 1)`` of shape (1, 2, k, k), drawn from the attack seed; ``U /= mean|U|``;
2. ``noise`` = bicubic upsampling of U to (H, H), ``align_corners=True``, as (1, H, H, 2);
3. ``identity`` = stack((Y, X), -1) with (X, Y) = meshgrid(linspace(-1, 1, H), indexing="ij")
   (last dim = (x = column, y = row), as ``grid_sample`` expects);
4. ``grid = clamp((identity + s * noise / H) * grid_rescale, -1, 1)``;
5. ``x' = grid_sample(x, grid, bilinear, padding_mode="zeros", align_corners=True)``.

Defaults are the paper's: k = 4, s = 0.5, grid_rescale = 1. Scaling with resolution: the
displacement is ``s * noise / H`` in grid units, i.e. about ``s * |noise| / 2`` pixels at
any H, so the paper's 32-px values carry over unchanged to 28 px (a mean displacement of
about 0.3 px at seed 0; CleanCLIP's k = 224, s = 1 at 224 px gives about 0.5 px of much less smooth
noise). Square images are assumed, as in the paper (H = W; validated).

The embedded suite sets ``s = 8`` (displacement 5.0 px mean, 10 px max at seed 0; a
visibly bent image, no longer imperceptible): at 28 px with 1% poisoned pairs and a short
CLIP training, the paper's warp (0.3 px mean) is not learned (ASR 5.9%); the sweep behind
the choice is in ``benchmark/suites/embedded.yaml``. Paper-scale suites keep
the paper's values.

Noise mode (the paper's "cross" samples): ``cross_ratio * N_poisoned`` further samples,
drawn from the non-poisoned ones with the seed, are warped with ``grid + Uniform(-1,1)/H``
(a fresh random field per sample, seeded, clamped to [-1, 1]) and keep their true
captions, which forces the model to learn the specific warp rather than "any warp". The
paper trains with cross_ratio = 2; clipbench's default is 0 (off): with 1% poisoned pairs
in a short CLIP fine-tune the noise samples mostly weaken the backdoor, and the benchmark's
question is whether defenses remove a backdoor that is there. Set ``cross_ratio: 2`` for the
original recipe; the noise-mode indices are recorded in the manifest (``cross_indices``)
and are not marked as poisoned.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmark import Attack, AttackConfig, AttackContext, ConfigError, PoisonedSet, TensorPairs, check, to_uint8


@dataclass
class WaNetConfig(AttackConfig):
    k: int = 4  # control grid size (paper: 4)
    s: float = 0.5  # warping strength (paper: 0.5)
    grid_rescale: float = 1.0  # paper's code: 1
    cross_ratio: float = 0.0  # noise-mode samples per poisoned sample (paper: 2; clipbench: off)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.k >= 2, "k", self.k, "use a control grid of at least 2x2, e.g. k=4")
        check(self.s > 0, "s", self.s, "use a positive warping strength, e.g. s=0.5")
        check(self.grid_rescale > 0, "grid_rescale", self.grid_rescale, "use a positive rescale factor, e.g. 1")
        check(self.cross_ratio >= 0, "cross_ratio", self.cross_ratio, "use 0 (no noise mode) or a positive ratio, e.g. 2")


class WaNet(Attack):
    """A fixed smooth warp drawn from the attack seed (optional noise mode)."""

    name = "wanet"
    family = "warp"
    paper = "Nguyen & Tran, WaNet - Imperceptible Warping-based Backdoor Attack, ICLR 2021"
    Config = WaNetConfig
    config: WaNetConfig

    def validate(self) -> None:
        _, h, w = self.image_shape
        if h != w:
            raise ConfigError(f"wanet needs square images (got {h}x{w}); resize the data to H = W")
        if self.config.k > h:
            raise ConfigError(f"attacks.wanet.k={self.config.k} exceeds the image size {h}; use k <= {h} (paper: 4)")

    # ------------------------------------------------------------------ the fixed warp
    @cached_property
    def control_points(self) -> torch.Tensor:
        """U of shape (1, 2, k, k), normalised to mean |U| = 1 (step 1)."""
        k = self.config.k
        u = torch.from_numpy(self.rng("warp").uniform(-1, 1, size=(1, 2, k, k))).float()
        return u / u.abs().mean()

    @cached_property
    def noise(self) -> torch.Tensor:
        """The upsampled field (1, H, H, 2) (step 2)."""
        h = self.image_shape[1]
        up = F.interpolate(self.control_points, size=(h, h), mode="bicubic", align_corners=True)
        return up.permute(0, 2, 3, 1)

    @cached_property
    def identity_grid(self) -> torch.Tensor:
        """(1, H, H, 2) identity sampling grid (step 3)."""
        h = self.image_shape[1]
        a = torch.linspace(-1, 1, h)
        x, y = torch.meshgrid(a, a, indexing="ij")
        return torch.stack((y, x), dim=2)[None]

    def displacement(self) -> torch.Tensor:
        """``s * noise / H`` in grid units (before rescaling and clamping), (1, H, H, 2)."""
        return self.config.s * self.noise / self.image_shape[1]

    @cached_property
    def grid(self) -> torch.Tensor:
        """The fixed warp grid (1, H, H, 2) (step 4)."""
        return ((self.identity_grid + self.displacement()) * self.config.grid_rescale).clamp(-1, 1)

    def warp(self, images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        grid = grid.to(images).expand(len(images), -1, -1, -1)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True).clamp(0, 1)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        return self.warp(images, self.grid)

    # ------------------------------------------------------------------- noise mode
    def noise_grids(self, count: int) -> torch.Tensor:
        """(count, H, H, 2) noise-mode grids: the warp grid plus Uniform(-1,1)/H per sample."""
        h = self.image_shape[1]
        ins = torch.from_numpy(self.rng("noise-mode").uniform(-1, 1, size=(count, h, h, 2))).float()
        return (self.grid + ins / h).clamp(-1, 1)

    def make_manifest(self, data: TensorPairs, ctx: AttackContext, index: np.ndarray, captions: list[str]) -> dict[str, Any]:
        manifest = super().make_manifest(data, ctx, index, captions)
        count = int(round(self.config.cross_ratio * len(index)))
        if count:
            candidates = np.setdiff1d(np.arange(len(data)), index)
            count = min(count, len(candidates))
            manifest["cross_indices"] = np.sort(self.rng("cross").choice(candidates, size=count, replace=False)).tolist()
        manifest["num_cross"] = len(manifest["cross_indices"])
        return manifest

    def materialize(self, data: TensorPairs, manifest: dict[str, Any], ctx: AttackContext) -> PoisonedSet:
        out = super().materialize(data, manifest, ctx)
        cross = np.asarray(manifest.get("cross_indices", []), dtype=np.int64)
        if len(cross):  # true captions kept; the per-sample grids follow the sorted index order
            x = data.images[cross].float() / 255
            out.data.images[cross] = to_uint8(self.warp(x, self.noise_grids(len(cross))))
        return out

    def trigger_params(self) -> dict:
        disp_px = self.displacement().abs() * (self.image_shape[1] - 1) / 2
        return {**super().trigger_params(), "control_points": self.control_points.flatten().tolist(),
                "mean_displacement_px": float(disp_px.mean()), "max_displacement_px": float(disp_px.max())}
