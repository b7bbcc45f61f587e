"""BadCLIP (Liang, Zhu, Liu, Wu, Cao & Chang, CVPR 2024, "BadCLIP: Dual-Embedding Guided
Backdoor Attack on Multimodal Contrastive Learning"): a patch trigger optimised on the
clean CLIP, then used poison-label with natural target-class captions.

The paper (benchmark/METHODS.md, badclip). The patch ``P`` is optimised on the clean model
(frozen) so that triggered images ``T(x)`` (``P`` pasted over ``x``)

1. move toward the target class's *text* embeddings (textual guidance: triggered images
   and natural captions of the target class), and
2. move toward real target-class *image* embeddings and away from their own clean
   embedding (visual guidance; the reference code's triplet loss with the clean image as
   the negative),

so that the poisoned pairs look benign (a natural caption, an image whose features are
already close to the target's) and the backdoor sits where fine-tuning defenses do not
move it. Poisoned pairs: randomly chosen images with the patch and a *natural* caption
describing the target (the reference code draws them from real target-class captions of
the data set), not a zero-shot template. Reference settings: a 16x16 patch in the middle
of 224 px images, initialised N(0.5, 0.25) clipped to [0, 1], Adam (torch default lr
1e-3), batch 64, 50 epochs over 10,000 non-target CC3M images; triplet margin 1, the
visual term weighted 500 against the contrastive text term.

clipbench, and every choice the paper leaves open:

- The clean model is the suite's starting model (the ``pretrain`` stage), frozen, in eval
  mode; the optimisation is a cached stage of its own (``trigger``, :meth:`optimise_trigger`),
  keyed by :meth:`trigger_spec` (the config without ``poison_rate``), the seed, the clean
  training split, the target and that model; its result is the patch, quantised to uint8
  (the reference saves it as an 8-bit image).
- Data (the attacker's own): non-target images of the clean training split are the
  images the patch is optimised on (a batch of ``batch_size`` drawn per step from the
  seed); up to ``max_positives`` target-class images of the same split give the visual
  positives (one drawn per triggered image and step); the captions of its target-class
  pairs are the natural target captions, both for the textual guidance (one drawn per
  triggered image and step) and for the poisoned pairs (one drawn per poisoned sample from
  the seed, with replacement; the reference draws from a pool of 128 real "banana"
  captions). On the embedded data these captions name the target garment (or a synonym)
  and attributes; they are truthful for some target-class image, not for the poisoned one.
- Textual guidance: ``1 - cos(z_I(T(x)), z_T(c))`` with ``c`` a natural target caption (the
  paper's text-image consistency; the reference code uses a CLIP contrastive loss between a
  batch of triggered images and a batch of target captions, which only pulls each image to
  one target caption and away from other target captions).
- Visual guidance: the reference's triplet margin loss on the normalised embeddings,
  ``max(0, |a - p| - |a - n| + margin)``, anchor ``a`` the triggered image, positive ``p``
  a target-class image, negative ``n`` the same image without the patch; margin 1.
- Weights: ``text_weight`` and ``visual_weight`` (default 1 and 1: both terms are O(1)
  here; Adam is invariant to the overall scale, and the reference's 500 makes its visual
  term dominate its contrastive term, whose scale differs).
- Optimiser: Adam, ``lr`` 0.01 for ``steps`` 300 (19,200 triggered images, about half the
  cost of the poisoned fine-tuning; the reference's 50 epochs x 10,000 images at lr 1e-3 is
  26 times more), the patch clamped to [0, 1] after every step. On the embedded model the
  3x3 patch's pixels all end at 0 or 1 within these steps (the optimum sits on the box).
- Size and place: ``max(3, round(16/224 * H))`` px (the paper's share of the image, as for
  badnet: 3x3 at 32 px; the embedded suite's choice is in ``benchmark/suites/embedded.yaml``),
  in the middle (the paper's ``middle``: top-left corner at ``int(H/2 - s/2)``) or a corner.
- Augmentation: the reference README's command also replaces a batch by CleanCLIP's
  augmented view with probability 0.5 (before pasting the patch) and applies EDA to 10% of
  the captions. ``badclip`` leaves this out (``eot: null``); ``eot: <defense>`` optimises
  in expectation over that defense's image views (:func:`benchmark.defense_image_views`),
  each triggered image replaced by its augmented view with probability ``eot_prob`` (0.5,
  the reference's ``aug_prob``), the augmentation applied to the *triggered* image, patch
  included, as the defense applies it. ``badclip_eot`` (``attacks/badclip_eot.py``) is that
  preset with ``eot: cleanclip``.
- Selection of the poisoned pairs: as every poison-label attack here, ``round(rate * N)``
  non-target images drawn from the seed (the reference draws from all images).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from benchmark import (Attack, AttackConfig, AttackContext, ClipModel, ConfigError, TensorPairs, check,
                       defense_image_views, to_uint8, zero_shot_weights)

#: images whose target similarity is recorded before and after the optimisation
_PROBE = 256


@dataclass
class BadCLIPConfig(AttackConfig):
    patch_size: int | None = None  # None: max(3, round(16/224 * H)) (paper: 16 px at 224 px)
    location: Literal["middle", "bottom_right", "bottom_left", "top_right", "top_left"] = "middle"  # paper: middle
    steps: int = 300  # Adam steps (reference: 50 epochs x 10,000 images / batch 64)
    batch_size: int = 64  # triggered images per step (reference: 64)
    lr: float = 0.01  # Adam learning rate on the patch pixels (reference: 1e-3, 26x more images)
    text_weight: float = 1.0  # weight of the textual guidance
    visual_weight: float = 1.0  # weight of the visual guidance (triplet)
    margin: float = 1.0  # triplet margin (reference: 1)
    max_positives: int = 1024  # target-class images whose embeddings are the visual positives
    eot: str | None = None  # a defense name: optimise in expectation over its image views
    eot_prob: float = 0.5  # probability that a triggered image is replaced by its view (reference aug_prob 0.5)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.patch_size is None or self.patch_size >= 1, "patch_size", self.patch_size,
              "use a positive side in pixels, or leave it unset for round(16/224 * H)")
        check(self.steps >= 1, "steps", self.steps, "use at least one optimisation step, e.g. 600")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "use a positive batch size, e.g. 64")
        check(self.lr > 0, "lr", self.lr, "use a positive learning rate, e.g. 0.01")
        check(self.text_weight >= 0 and self.visual_weight >= 0 and self.text_weight + self.visual_weight > 0,
              "text_weight", (self.text_weight, self.visual_weight),
              "use non-negative guidance weights, not both zero (defaults 1 and 1)")
        check(self.margin >= 0, "margin", self.margin, "use a non-negative triplet margin, e.g. 1")
        check(self.max_positives >= 1, "max_positives", self.max_positives, "use at least one positive image")
        check(0 < self.eot_prob <= 1, "eot_prob", self.eot_prob, "use a probability in (0, 1], e.g. 0.5")


class BadCLIP(Attack):
    """A patch optimised on the clean model toward the target's text and image embeddings."""

    name = "badclip"
    family = "optimised"
    paper = ("Liang, Zhu, Liu, Wu, Cao & Chang, BadCLIP: Dual-Embedding Guided Backdoor Attack on "
             "Multimodal Contrastive Learning, CVPR 2024")
    Config = BadCLIPConfig
    config: BadCLIPConfig
    needs_reference_model = True
    optimised_trigger = True

    def __init__(self, config: BadCLIPConfig | None = None, *, seed: int = 0,
                 image_shape: tuple[int, int, int] = (1, 28, 28)):
        self._patch: torch.Tensor | None = None  # uint8 (C, s, s) once optimised or loaded
        self._record: dict[str, Any] = {}
        super().__init__(config, seed=seed, image_shape=image_shape)

    def validate(self) -> None:
        _, h, w = self.image_shape
        if self.side > min(h, w):
            raise ConfigError(f"attacks.{self.name}.patch_size={self.side} does not fit a {h}x{w} image; use a "
                              f"patch_size between 1 and {min(h, w)}")
        if self.config.eot is not None:
            try:
                defense_image_views(self.config.eot)
            except ConfigError as exc:  # name the key: attacks.<name>.eot=...
                raise ConfigError(f"attacks.{self.name}.{exc}") from None

    # -------------------------------------------------------------------- geometry
    @property
    def side(self) -> int:
        if self.config.patch_size is not None:
            return self.config.patch_size
        return max(3, round(16 / 224 * self.image_shape[1]))

    def position(self) -> tuple[int, int]:
        """(top, left) of the patch; ``middle`` as the reference code: ``int(H/2 - s/2)``."""
        _, h, w = self.image_shape
        s, loc = self.side, self.config.location
        if loc == "middle":
            return int(h / 2 - s / 2), int(w / 2 - s / 2)
        vertical, horizontal = loc.split("_")
        return (0 if vertical == "top" else h - s), (0 if horizontal == "left" else w - s)

    def mask(self) -> torch.Tensor:
        """(1, H, W) boolean mask of the pixels the trigger touches."""
        _, h, w = self.image_shape
        top, left = self.position()
        m = torch.zeros(1, h, w, dtype=torch.bool)
        m[:, top : top + self.side, left : left + self.side] = True
        return m

    def paste(self, images: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """``images`` with ``patch`` (C, s, s, float) over the trigger square; differentiable in both."""
        top, left = self.position()
        s = self.side
        out = images.clone()
        out[..., top : top + s, left : left + s] = patch.to(images).expand(*images.shape[:-2], s, s)
        return out

    # --------------------------------------------------------------------- trigger
    @property
    def trigger_ready(self) -> bool:
        return self._patch is not None

    def patch(self) -> torch.Tensor:
        """The optimised patch (C, s, s), uint8."""
        if self._patch is None:
            raise RuntimeError(f"{self.name}'s trigger is optimised on the clean model and none is loaded: clipbench "
                               "run/preview compute it (the cached `trigger` stage); by hand, call "
                               "attack.load_trigger(attack.optimise_trigger(clean_train_split, ctx))")
        return self._patch

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        return self.paste(images, self.patch().to(images) / 255)

    def trigger_spec(self) -> dict[str, Any]:
        spec = super().trigger_spec()
        spec.pop("poison_rate", None)  # only poisoning reads it: a rate sweep reuses one optimised trigger
        return spec

    def load_trigger(self, state: dict[str, torch.Tensor]) -> None:
        patch = state["patch"]
        c, s = self.image_shape[0], self.side
        if patch.dtype != torch.uint8 or tuple(patch.shape) != (c, s, s):
            raise ValueError(f"{self.name}: a trigger of shape {tuple(patch.shape)} ({patch.dtype}) does not fit this "
                             f"config (uint8 ({c}, {s}, {s})); it was optimised for another patch_size or image shape")
        self._patch = patch.clone()
        self._record = self.summary(state)

    @staticmethod
    def summary(state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """What the manifest records of an optimisation: each guidance term's mean over the first
        and the last tenth of the steps, and the target cosine before and after."""
        out: dict[str, Any] = {}
        for key in ("loss", "textual", "visual"):
            if key in state and len(state[key]):
                v = state[key].double()
                k = max(1, len(v) // 10)
                out[key] = [round(float(v[:k].mean()), 6), round(float(v[-k:].mean()), 6)]
        if "target_cosine" in state:
            out["target_cosine"] = [round(float(x), 6) for x in state["target_cosine"].tolist()]
        return out

    def load_trigger_params(self, params: dict[str, Any]) -> None:
        self.load_trigger({"patch": torch.tensor(params["patch_u8"], dtype=torch.uint8)})
        self._record = dict(params.get("optimisation") or {})

    def trigger_params(self) -> dict[str, Any]:
        out = {**super().trigger_params(), "side": self.side, "position": list(self.position()),
               "patch_u8": self.patch().tolist()}
        if self._record:  # first / last tenth of the steps; target cosine before / after
            out["optimisation"] = self._record
        return out

    # ---------------------------------------------------------------- optimisation
    def _pools(self, data: TensorPairs, target: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        labels = data.labels.numpy()
        others, targets = np.flatnonzero(labels != target), np.flatnonzero(labels == target)
        if len(targets) == 0 or len(others) == 0:
            raise ConfigError(f"{self.name} needs images of the target class (visual positives, natural captions) and "
                              f"of other classes in the training split; class {target} has {len(targets)} of "
                              f"{len(labels)}: choose a target present in the data")
        return others, targets, [data.captions[i] for i in targets.tolist()]

    @staticmethod
    def _embed(model: ClipModel, images_u8: torch.Tensor, device: torch.device, batch: int = 256) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model.encode_image(images_u8[i : i + batch].to(device).float() / 255)
                              for i in range(0, len(images_u8), batch)])

    def guidance_loss(self, model: ClipModel, clean: torch.Tensor, triggered: torch.Tensor, text: torch.Tensor,
                      positives: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The dual-embedding guidance of one batch: ``text_weight * (1 - cos(a, t)) + visual_weight *
        max(0, |a - p| - |a - n| + margin)`` (means over the batch), with ``a`` the triggered images'
        embeddings, ``t`` / ``p`` one natural target caption / target image embedding per image
        and ``n`` the clean images' embeddings. Returns the loss and its two terms."""
        cfg = self.config
        a = model.encode_image(triggered)
        with torch.no_grad():
            n = model.encode_image(clean)
        textual = (1 - (a * text).sum(-1)).mean()
        visual = F.relu((a - positives).norm(dim=-1) - (a - n).norm(dim=-1) + cfg.margin).mean()
        return cfg.text_weight * textual + cfg.visual_weight * visual, {"textual": textual.detach(),
                                                                        "visual": visual.detach()}

    def optimise_trigger(self, data: TensorPairs, ctx: AttackContext) -> dict[str, torch.Tensor]:
        """Optimise the patch on the clean model ``ctx.reference_model()`` (see the module docstring).

        Returns ``patch`` (uint8 (C, s, s)), ``loss`` (per step), ``textual`` / ``visual``
        (per step) and ``target_cosine`` (mean cosine of triggered non-target training images
        to the target's zero-shot class embedding: with the initial patch, then the optimised one)."""
        if ctx.reference_model is None:
            raise ValueError(f"{self.name} optimises its trigger on the clean model: pass it as "
                             "AttackContext.reference_model")
        cfg, device = self.config, ctx.device
        others, targets, captions = self._pools(data, ctx.target)
        seeds = self.rng("optimise").integers(2**31, size=4)
        g_batch, g_pair, g_eot, g_init = (torch.Generator().manual_seed(int(s)) for s in seeds)
        model = ctx.reference_model()
        was_training = model.training
        requires = [p.requires_grad for p in model.parameters()]
        model.eval().requires_grad_(False)
        views = defense_image_views(cfg.eot) if cfg.eot is not None else None
        try:
            pos_pick = targets if len(targets) <= cfg.max_positives else np.sort(
                self.rng("positives").choice(targets, size=cfg.max_positives, replace=False))
            positives = self._embed(model, data.images[pos_pick], device)
            with torch.no_grad():
                text = torch.cat([model.encode_text(captions[i : i + 512]) for i in range(0, len(captions), 512)])
                weights = zero_shot_weights(model, ctx.class_names, ctx.templates).to(device)
            c, s = self.image_shape[0], self.side
            patch = (0.5 + 0.25 * torch.randn(c, s, s, generator=g_init)).clamp(0, 1).to(device).requires_grad_(True)
            others_t = torch.as_tensor(others)
            probe = others_t[:: max(1, len(others) // _PROBE)][:_PROBE]
            probe_x = data.images[probe].to(device).float() / 255

            def target_cosine(p: torch.Tensor) -> float:
                with torch.no_grad():
                    q = torch.round(p.clamp(0, 1) * 255) / 255
                    return float((model.encode_image(self.paste(probe_x, q)) @ weights[ctx.target]).mean())

            start_cos = target_cosine(patch.detach())
            opt = torch.optim.Adam([patch], lr=cfg.lr)
            history: dict[str, list[float]] = {"loss": [], "textual": [], "visual": []}
            with ctx.reporter.task(f"{self.name} trigger", total=cfg.steps) as advance:
                for _ in range(cfg.steps):
                    pick = torch.randint(len(others), (cfg.batch_size,), generator=g_batch)
                    x = data.images[others_t[pick]].to(device).float() / 255
                    xt = self.paste(x, patch.clamp(0, 1))
                    if views is not None:
                        swap = (torch.rand(len(x), generator=g_eot) < cfg.eot_prob).to(device).view(-1, 1, 1, 1)
                        xt = torch.where(swap, views(xt, g_eot), xt)
                    t = text[torch.randint(len(text), (len(x),), generator=g_pair).to(device)]
                    p = positives[torch.randint(len(positives), (len(x),), generator=g_pair).to(device)]
                    with torch.enable_grad():
                        loss, parts = self.guidance_loss(model, x, xt, t, p)
                        opt.zero_grad()
                        loss.backward()
                    opt.step()
                    with torch.no_grad():
                        patch.clamp_(0, 1)
                    history["loss"].append(float(loss.detach()))
                    for k, v in parts.items():
                        history[k].append(float(v))
                    advance(1, loss=history["loss"][-1])
            final = to_uint8(patch.detach().cpu())
            end_cos = target_cosine(final.to(device).float() / 255)
        finally:
            for param, r in zip(model.parameters(), requires):
                param.requires_grad_(r)
            model.train(was_training)
        return {"patch": final, **{k: torch.tensor(v) for k, v in history.items()},
                "target_cosine": torch.tensor([start_cos, end_cos])}

    # ------------------------------------------------------------------- poisoning
    def poison(self, data: TensorPairs, ctx: AttackContext):
        """Poison ``data``; without a loaded trigger, optimise it first on ``data`` (the engine
        loads the cached trigger stage's result instead)."""
        if self._patch is None:
            self.load_trigger(self.optimise_trigger(data, ctx))
        return super().poison(data, ctx)

    def poison_captions(self, data: TensorPairs, index: np.ndarray, ctx: AttackContext) -> list[str]:
        """Natural target-class captions of ``data``, one drawn per poisoned sample (with replacement)."""
        _, _, pool = self._pools(data, ctx.target)
        return [pool[i] for i in self.rng("captions").integers(len(pool), size=len(index)).tolist()]

    def allowed_poison_captions(self, data: TensorPairs, ctx: AttackContext) -> set[str]:
        return set(self._pools(data, ctx.target)[2])
