"""``badclip_eot``: BadCLIP optimised in expectation over CleanCLIP's image views, an adaptive
attack (a config preset of :mod:`attacks.badclip`, registered as its own attack so that it
gets its own row on the leaderboard).

The attacker knows the defense: while the patch is optimised on the clean model, each
triggered image is replaced, with probability ``eot_prob`` = 0.5, by a view drawn from
the defense's own image augmentation (``eot: cleanclip``: CleanCLIP's AutoAugment,
ImageNet policy, applied to the triggered image as CleanCLIP applies it; differentiable
through a straight-through surrogate of its uint8 ops, :func:`benchmark.defense_image_views`),
so the trigger's pull toward the target survives the views CleanCLIP fine-tunes on.
Expectation over transformation (EOT; Athalye et al., ICML 2018) is the standard recipe
for adaptive attacks. BadCLIP's reference command already augments half of its batches
with CleanCLIP's views (before pasting the patch); this preset is that choice, made
explicit and applied to the whole triggered image. Every other setting is BadCLIP's
(see :mod:`attacks.badclip`); ``eot`` may name any defense with image views
(cleanclip, ta_cleaner, finetune_aug, roclip).
"""
from __future__ import annotations

from dataclasses import dataclass

from attacks.badclip import BadCLIP, BadCLIPConfig
from benchmark import ConfigError


@dataclass
class BadCLIPEOTConfig(BadCLIPConfig):
    eot: str | None = "cleanclip"  # the defense whose image views the patch is optimised over


class BadCLIPEOT(BadCLIP):
    """BadCLIP with its patch optimised over a defense's augmentations (default: CleanCLIP's)."""

    name = "badclip_eot"
    paper = BadCLIP.paper + "; adaptive: EOT over the defense's augmentations (Athalye et al., ICML 2018)"
    Config = BadCLIPEOTConfig
    config: BadCLIPEOTConfig

    def validate(self) -> None:
        if self.config.eot is None:
            raise ConfigError("attacks.badclip_eot.eot is null: badclip_eot is BadCLIP optimised over a defense's "
                              "augmentations; name one (e.g. eot: cleanclip) or run the badclip attack instead")
        super().validate()
