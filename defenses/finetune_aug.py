"""The augmentation-only control: clean fine-tuning on AutoAugment'ed images.

benchmark/METHODS.md (finetune_aug): at tiny scale augmentation alone removed a noise-pattern Blended
trigger, so a defense's effect must be read against this control. It is
:class:`defenses.finetune.Finetune` with ``augment=True``: the plain CLIP loss on
AutoAugment'ed images (CleanCLIP's image augmentation, fresh per sample), captions
unchanged, no in-modal terms, same schedule as every post-training defense.
"""
from __future__ import annotations

from dataclasses import dataclass

from defenses.finetune import Finetune, FinetuneConfig


@dataclass
class FinetuneAugConfig(FinetuneConfig):
    augment: bool = True


class FinetuneAug(Finetune):
    """Fine-tuning with the CLIP loss on augmented images (control for CleanCLIP)."""

    name = "finetune_aug"
    paper = "augmentation-only control (clipbench; benchmark/METHODS.md, finetune_aug)"
    Config = FinetuneAugConfig
