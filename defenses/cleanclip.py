"""CleanCLIP (Bansal, Singhi, Yang, Yin, Grover, Chang; ICCV 2023).

"CleanCLIP: Mitigating Data Poisoning Attacks in Multimodal Contrastive Learning."
Post-training: fine-tune the backdoored model on clean pairs with (benchmark/METHODS.md, cleanclip)

    L = l1 * CLIP(I, T) + l2 * 1/2 [InfoNCE(I, I~) + InfoNCE(T, T~)],   l1 = l2 = 1,

- the in-modal terms run one direction, original -> augmented (rows: the original
  views, columns: the batch's augmented views; the other samples' augmented views are
  the negatives), all terms share the model's one learned scale s = exp(logit_scale);
- I~ = AutoAugment (ImageNet policy, torchvision), fresh per sample and step, seeded
  from the trainer's generator; the original view gets only the model's preprocessing;
- T~ = EDA (Wei & Zou): one of synonym replacement (WordNet), random insertion, random
  swap, random deletion, alpha = 0.1; computed once per caption (``text_aug="once"``,
  as the reference code does at load time) or afresh each step (``"per_step"``);
- originals and augmented views go through the towers in one forward pass (the reference
  code concatenates them), so batch-norm statistics cover both views.

Duplicate captions (template captions repeat): the CLIP term and the text in-modal term
use the engine's soft multi-positive targets (identical captions are positives, see
:mod:`benchmark.losses`); the image in-modal term is one-hot (every image is its own
class). ``duplicate_positives=False`` gives the paper's one-hot targets everywhere.

Schedule: the class default is the paper's (batch 64, 10 epochs, lr 1e-5, AdamW
(0.9, 0.999), wd 0.1, 50 warm-up steps, cosine); the embedded suite scales it in
``defense_common.train`` (shared with finetune and ta_cleaner; documented there) and,
chosen on the val split with ``python -m benchmark.tune`` (first the shared
learning rate at lambda2 = 1, then lambda2 in {1, 2, 4}), sets lambda2 = 2, a value of
the paper's own ablation (which found ASR falling as lambda2 grows).
WordNet: ``wordnet="auto"`` uses the shipped subset for the embedded captions' words and
full WordNet (NLTK) for any other word; see :mod:`defenses.text_augment`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from benchmark import Defense, DefenseConfig, DefenseContext, LossOutput, Objective, StepContext, DefenseStage, TrainConfig
from benchmark import caption_targets, check, clip_loss, info_nce


def paper_schedule() -> TrainConfig:
    """CleanCLIP's fine-tuning recipe (batch 64, 10 epochs, lr 1e-5, 50 warm-up steps)."""
    return TrainConfig(epochs=10, batch_size=64, lr=1e-5, weight_decay=0.1, warmup_steps=50, beta1=0.9, beta2=0.999, eps=1e-8)


@dataclass
class CleanCLIPConfig(DefenseConfig):
    """CleanCLIP's loss weights and augmentations (paper defaults)."""

    train: TrainConfig = field(default_factory=paper_schedule)
    lambda1: float = 1.0  # weight of the multimodal CLIP loss
    lambda2: float = 1.0  # weight of the in-modal (self-supervised) terms
    eda_alpha: float = 0.1
    text_aug: Literal["once", "per_step"] = "once"
    wordnet: Literal["auto", "subset", "full"] = "auto"
    duplicate_positives: bool = True

    def __post_init__(self) -> None:
        check(self.lambda1 >= 0, "lambda1", self.lambda1, "use a non-negative weight")
        check(self.lambda2 >= 0, "lambda2", self.lambda2, "use a non-negative weight")
        check(0 < self.eda_alpha < 1, "eda_alpha", self.eda_alpha, "use a fraction in (0, 1), EDA's default is 0.1")


class CleanCLIPObjective(Objective):
    """``l1 * CLIP(I, T) + l2 / 2 * [InfoNCE(I, I~) + InfoNCE(T, T~)]``."""

    def __init__(self, config: CleanCLIPConfig, seed: int):
        from defenses.text_augment import CaptionAugmenter, EDAConfig, load_lexicon

        self.config = config
        self.duplicate_positives = config.duplicate_positives
        self.text_augmenter = CaptionAugmenter(seed, load_lexicon(config.wordnet), EDAConfig(alpha=config.eda_alpha),
                                               mode=config.text_aug)

    def texts(self, dataset, epoch: int) -> list[str]:
        """The EDA rewrites of every caption, drawn at the start (as the reference code does at load time)."""
        from defenses.text_augment import rewrites_ahead

        return rewrites_ahead(self.text_augmenter, dataset, epoch)

    def augment_images(self, images: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        from defenses.image_augment import autoaugment

        return autoaugment(images, ctx.generator, rows=ctx.local_rows(len(images)))

    def embed(self, model, batch, ctx: StepContext) -> dict:
        """Original and augmented embeddings of both modalities (one forward per tower)."""
        n = len(batch)
        aug_images = self.augment_images(batch.images, ctx)
        aug_captions = self.text_augmenter(batch.captions, batch.index.tolist())
        img_all = model.encode_image(torch.cat([batch.images, aug_images]))
        txt_all = model.encode_text(list(batch.captions) + list(aug_captions))
        g = ctx.all_gather
        return {"img": g(img_all[:n]), "img_aug": g(img_all[n:]), "txt": g(txt_all[:n]), "txt_aug": g(txt_all[n:]),
                "captions": ctx.all_captions(batch.captions), "aug_captions": aug_captions,
                "offset": ctx.local_rows(n)[0]}  # where this rank's rows start in the gathered features

    def cleanclip_loss(self, model, e: dict) -> tuple[torch.Tensor, dict[str, float]]:
        scale = model.logit_scale.exp()
        targets = self.targets(e["captions"], e["img"].device)
        clip = clip_loss(e["img"], e["txt"], scale, targets)
        inmodal_img = info_nce(e["img"], e["img_aug"], scale)
        inmodal_txt = info_nce(e["txt"], e["txt_aug"], scale, targets)
        loss = self.config.lambda1 * clip + self.config.lambda2 * 0.5 * (inmodal_img + inmodal_txt)
        return loss, {"clip": float(clip.detach()), "inmodal_image": float(inmodal_img.detach()),
                      "inmodal_text": float(inmodal_txt.detach())}

    def __call__(self, model, batch, ctx: StepContext) -> LossOutput:
        loss, parts = self.cleanclip_loss(model, self.embed(model, batch, ctx))
        return LossOutput(loss, parts)


class CleanCLIP(Defense):
    """Fine-tuning with the CLIP loss plus in-modal self-supervision (Bansal et al. 2023)."""

    name = "cleanclip"
    stage = DefenseStage.POST_TRAINING
    paper = "Bansal et al., CleanCLIP, ICCV 2023"
    Config = CleanCLIPConfig

    def objective(self, ctx: DefenseContext) -> Objective:
        return CleanCLIPObjective(self.config, self.seed)

    def image_views(self):
        """CleanCLIP's in-modal image view: AutoAugment (ImageNet policy), differentiable (for EOT)."""
        from functools import partial

        from defenses.image_augment import autoaugment

        return partial(autoaugment, differentiable=True)
