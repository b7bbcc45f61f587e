"""Clean fine-tuning: the baseline of every CLIP backdoor-defense paper.

Fine-tune the backdoored model on the clean defense split with the plain CLIP loss
(benchmark/METHODS.md, finetune), under the same schedule as CleanCLIP (Bansal et al., ICCV 2023) so
that the comparison isolates the loss. Expected: the backdoor survives (ASR stays high).

``augment=True`` is the *augmentation-only control* of benchmark/METHODS.md (finetune_aug): the same
CLIP loss on AutoAugment'ed images (ImageNet policy, fresh per sample, exactly
CleanCLIP's image augmentation) without CleanCLIP's in-modal terms. It tells how much of
CleanCLIP's effect augmentation alone explains; the registered defense ``finetune_aug``
(``defenses/finetune_aug.py``) is this control, so that it appears on the leaderboard.

Schedule. The class default is CleanCLIP's paper recipe (batch 64, 10 epochs, lr 1e-5,
AdamW (0.9, 0.999), wd 0.1 except on norm/bias/logit-scale parameters, 50 warm-up steps,
cosine). The embedded suite overrides it in ``defense_common.train`` (one schedule for
every post-training defense, scaled to the 4,000-pair defense split; see
``benchmark/suites/embedded.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from benchmark import ClipObjective, Defense, DefenseConfig, DefenseContext, LossOutput, Objective, StepContext, DefenseStage, TrainConfig
from benchmark import clip_loss


def paper_schedule() -> TrainConfig:
    """CleanCLIP's fine-tuning recipe (Bansal et al. 2023, section 4 / their train.py)."""
    return TrainConfig(epochs=10, batch_size=64, lr=1e-5, weight_decay=0.1, warmup_steps=50, beta1=0.9, beta2=0.999, eps=1e-8)


@dataclass
class FinetuneConfig(DefenseConfig):
    """``augment``: AutoAugment the images (the augmentation-only control)."""

    train: TrainConfig = field(default_factory=paper_schedule)
    augment: bool = False


class AugmentedClipObjective(Objective):
    """The CLIP loss between AutoAugment'ed images (fresh per sample, seeded) and the captions."""

    def __call__(self, model, batch, ctx: StepContext) -> LossOutput:
        from defenses.image_augment import autoaugment

        images = autoaugment(batch.images, ctx.generator, rows=ctx.local_rows(len(batch)))
        img, txt = model(images, batch.captions)
        img, txt, captions = ctx.all_gather(img), ctx.all_gather(txt), ctx.all_captions(batch.captions)
        loss = clip_loss(img, txt, model.logit_scale.exp(), self.targets(captions, img.device))
        return LossOutput(loss, {"clip": float(loss.detach())})


class Finetune(Defense):
    """Clean fine-tuning with the plain CLIP loss (optionally on augmented images)."""

    name = "finetune"
    stage = DefenseStage.POST_TRAINING
    paper = "clean fine-tuning baseline (Bansal et al., CleanCLIP, ICCV 2023, section 5)"
    Config = FinetuneConfig

    def objective(self, ctx: DefenseContext) -> Objective:
        return AugmentedClipObjective() if self.config.augment else ClipObjective()

    def image_views(self):
        """With ``augment``: AutoAugment, differentiable (for EOT); else None (plain images)."""
        if not self.config.augment:
            return None
        from functools import partial

        from defenses.image_augment import autoaugment

        return partial(autoaugment, differentiable=True)
