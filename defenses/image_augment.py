"""Image augmentations of the defenses, batched and seeded (a helper, not a method).

- :func:`autoaugment`: torchvision's AutoAugment with the ImageNet policy (CleanCLIP,
  Bansal et al., ICCV 2023, augments its in-modal image view with it), drawn *per
  sample* exactly as ``torchvision.transforms.AutoAugment`` draws it (one of the 25
  sub-policies, each op applied with its probability and a random sign), but executed
  once per group of samples that drew the same op, so a batch costs a few dozen
  tensor calls instead of two per image. The ops are torchvision's own
  (``torchvision.transforms.autoaugment._apply_op``), on uint8 images, nearest
  interpolation, fill 0 (the Fashion-MNIST background).
- :func:`simclr_augment`: RoCLIP's (Yang et al., NeurIPS 2023) SimCLR-style view:
  horizontal flip p=0.5, RandomResizedCrop (scale (0.08, 1), ratio (3/4, 4/3)),
  ColorJitter(0.5, 0.5, 0.5, 0.1) with p=0.8, grayscale p=0.2 and Gaussian blur p=0.5
  with a kernel of about 10% of the image side (23 px at 224 px, 3 px at 28 px) and
  sigma in [0.1, 2] px at 224 px, scaled with the side like the kernel ([0.0125, 0.25]
  px at 28 px; ``blur_sigma`` overrides). On grey images saturation, hue and grayscale do nothing, as in
  torchvision. Crops and flips are one ``grid_sample`` call per batch.

All randomness comes from the ``torch.Generator`` passed in (the trainer's seeded
per-step generator), never from global state. Both take ``differentiable=True`` for
adaptive attacks (``Defense.image_views``): the same draws and forward values, with a
gradient with respect to the input images (AutoAugment's uint8 ops through a
straight-through float surrogate). ``rows=(offset, total)`` (from
``StepContext.local_rows``) makes a data-parallel rank draw the parameters of the whole
``total``-sample global batch and keep its own rows, so that N processes augment every
sample exactly as one process with the same global batch does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _to_u8(images: torch.Tensor) -> torch.Tensor:
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def _soft_op(x: torch.Tensor, op_name: str, magnitude: float) -> torch.Tensor:
    """One AutoAugment op on float images, differentiable with respect to ``x`` (the surrogate
    of :func:`autoaugment`'s backward pass). Geometric ops resample like the uint8 op (nearest,
    so gradients reach the pixels that were moved); Posterize and Equalize are identities
    (their uint8 result is the forward value; the gradient passes straight through)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.autoaugment import _apply_op

    if op_name in ("Posterize", "Equalize"):
        return x
    if op_name == "Solarize":  # the uint8 threshold, in [0, 1] units
        return torch.where(x >= magnitude / 255.0, 1.0 - x, x)
    if op_name == "AutoContrast":  # torchvision's float version edits its min/max in place: not differentiable
        lo, hi = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
        flat = hi <= lo
        scale = torch.where(flat, torch.ones_like(hi), 1.0 / (hi - lo).clamp_min(1e-12))
        return ((x - torch.where(flat, torch.zeros_like(lo), lo)) * scale).clamp(0, 1)
    return _apply_op(x, op_name, magnitude, interpolation=InterpolationMode.NEAREST, fill=None)


def _rows(b: int, rows: tuple[int, int] | None) -> tuple[int, slice]:
    offset, total = rows if rows is not None else (0, b)
    if not 0 <= offset <= total - b:
        raise ValueError(f"rows={rows} does not hold a batch of {b} samples; pass ctx.local_rows(len(images))")
    return total, slice(offset, offset + b)


def autoaugment(images: torch.Tensor, generator: torch.Generator, differentiable: bool = False,
                rows: tuple[int, int] | None = None) -> torch.Tensor:
    """AutoAugment (ImageNet policy) of float images in [0, 1], fresh per sample.

    ``differentiable``: the same draws and the same forward values, with a gradient with
    respect to ``images`` (straight-through: the uint8 result plus ``soft - soft.detach()``,
    ``soft`` the float version of every op, :func:`_soft_op`), for attacks that optimise a
    trigger in expectation over CleanCLIP's views (EOT). ``rows``: ``(offset, total)`` of
    these images in the global batch (module docstring)."""
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy, InterpolationMode
    from torchvision.transforms.autoaugment import _apply_op

    aa = AutoAugment(AutoAugmentPolicy.IMAGENET)
    x = _to_u8(images.detach().cpu())
    soft = images.float() if differentiable else None
    b, _, h, w = x.shape
    space = aa._augmentation_space(10, (h, w))
    total, sl = _rows(b, rows)
    policy = torch.randint(len(aa.policies), (total,), generator=generator)[sl]
    probs = torch.rand(total, 2, generator=generator)[sl]
    signs = torch.randint(2, (total, 2), generator=generator)[sl]
    for p_idx in policy.unique().tolist():
        for j, (op_name, p, mag_id) in enumerate(aa.policies[p_idx]):
            magnitudes, signed = space[op_name]
            base = float(magnitudes[mag_id]) if mag_id is not None else 0.0
            chosen = (policy == p_idx) & (probs[:, j] <= p)
            for sign in ((0, 1) if signed else (None,)):
                sel = chosen if sign is None else chosen & (signs[:, j] == sign)
                idx = sel.nonzero().flatten()
                if len(idx) == 0:
                    continue
                mag = -base if sign == 0 else base
                x[idx] = _apply_op(x[idx], op_name, mag, interpolation=InterpolationMode.NEAREST, fill=None)
                if soft is not None:
                    where = idx.to(soft.device)
                    soft = soft.index_copy(0, where, _soft_op(soft.index_select(0, where), op_name, mag))
    hard = x.to(images.device).float().div_(255)
    if soft is None:
        return hard
    return hard + (soft - soft.detach())  # forward: exactly the uint8 result


def simclr_augment(images: torch.Tensor, generator: torch.Generator, crop_scale: tuple[float, float] = (0.08, 1.0),
                   jitter: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.1), jitter_p: float = 0.8,
                   blur_p: float = 0.5, blur_sigma: tuple[float, float] | None = None,
                   differentiable: bool = False, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """RoCLIP's SimCLR-style augmentation of float images (B, C, H, W) in [0, 1].

    ``blur_sigma``: the Gaussian blur's sigma range in pixels; ``None`` scales SimCLR's
    (0.1, 2.0) at 224 px to the image side (x H / 224), like its kernel size.
    ``differentiable``: keep the gradient with respect to ``images`` (every op is a float
    op; the same draws and values), for attacks that optimise a trigger over these views.
    ``rows``: ``(offset, total)`` of these images in the global batch (module docstring).
    """
    g = generator
    x = (images if differentiable else images.detach()).float().cpu()
    b, c, h, w = x.shape
    total, sl = _rows(b, rows)

    def rand(n: int) -> torch.Tensor:  # n == b: one draw per sample of the global batch, this rank's rows
        return torch.rand(total, generator=g)[sl]

    def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
        return lo + (hi - lo) * rand(n)

    # RandomResizedCrop (torchvision's sampling, one try; fall back to the whole image) + flip
    area = _uniform(b, *crop_scale, g)
    log_r = _uniform(b, math.log(3 / 4), math.log(4 / 3), g)
    ratio = torch.exp(log_r)
    cw = torch.sqrt(area * ratio).clamp(max=1.0)  # fraction of the width
    ch = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - cw) * rand(b) * 2 - (1 - cw)  # centre in [-1+cw, 1-cw]
    cy = (1 - ch) * rand(b) * 2 - (1 - ch)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cw * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, (b, c, h, w), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # ColorJitter (brightness, contrast; saturation and hue are no-ops on grey images)
    bj, cj, sj, hj = jitter
    apply = (rand(b) < jitter_p).float().view(b, 1, 1, 1)
    bright = _uniform(b, max(0.0, 1 - bj), 1 + bj, g).view(b, 1, 1, 1)
    contrast = _uniform(b, max(0.0, 1 - cj), 1 + cj, g).view(b, 1, 1, 1)
    _ = _uniform(b, max(0.0, 1 - sj), 1 + sj, g), _uniform(b, -hj, hj, g)  # drawn for parity of the stream
    jittered = (x * bright).clamp(0, 1)
    mean = jittered.mean(dim=(1, 2, 3), keepdim=True)
    jittered = (contrast * jittered + (1 - contrast) * mean).clamp(0, 1)
    x = apply * jittered + (1 - apply) * x
    _ = rand(b)  # RandomGrayscale p=0.2: a no-op on grey images
    # Gaussian blur, kernel ~10% of the side (odd, >= 3)
    k = max(3, int(round(0.1 * h)) | 1)
    lo, hi = blur_sigma if blur_sigma is not None else (0.1 * h / 224, 2.0 * h / 224)
    sigma = _uniform(b, lo, hi, g)
    blur = rand(b) < blur_p
    if blur.any():
        r = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
        kern1 = torch.exp(-(r[None, :] ** 2) / (2 * sigma[blur, None] ** 2))
        kern1 = kern1 / kern1.sum(dim=1, keepdim=True)
        kern2 = (kern1[:, :, None] * kern1[:, None, :])  # (n, k, k)
        where = blur.nonzero().flatten()
        sel = x.index_select(0, where)  # (n, c, h, w)
        n = len(sel)
        weight = kern2.repeat_interleave(c, dim=0).unsqueeze(1)  # (n*c, 1, k, k)
        padded = F.pad(sel.reshape(1, n * c, h, w), (k // 2,) * 4, mode="reflect")
        x = x.index_copy(0, where, F.conv2d(padded, weight, groups=n * c).reshape(n, c, h, w))
    return x.clamp(0, 1).to(images.device)
