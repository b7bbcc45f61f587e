"""An example clipbench plugin: clean fine-tuning of the image tower only.

A post-training defense in the spirit of fine-tuning defenses (Liu et al., Fine-Pruning,
2018; Bansal et al., CleanCLIP, 2023, Sec. 4 "fine-tuning with the CLIP loss"): the
backdoored model is fine-tuned with the plain CLIP loss on the clean defense split while
the text tower stays frozen, so the zero-shot class embeddings do not move and only the
image features that carry the trigger are retrained. It imports only from ``benchmark``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from benchmark import (ClipModel, ClipObjective, Defense, DefenseConfig, DefenseContext, Stage, TrainConfig, TrainStats,
                       check, train)

__version__ = "0.1.0"


@dataclass
class ExampleFinetuneConfig(DefenseConfig):
    """``train``: the fine-tuning schedule; ``freeze_text``: keep the text tower fixed."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, batch_size=64, lr=1e-4, warmup_steps=5))
    freeze_text: bool = True

    def __post_init__(self) -> None:
        check(self.train.epochs <= 100, "train.epochs", self.train.epochs, "an example needs at most 100 epochs")


class ExampleFinetune(Defense):
    """Fine-tune the image tower of the backdoored model on clean pairs."""

    name = "example_finetune"
    stage = Stage.POST_TRAINING
    paper = "example plugin (CleanCLIP-style fine-tuning, image tower only)"
    Config = ExampleFinetuneConfig
    config: ExampleFinetuneConfig

    def defend(self, model: ClipModel, ctx: DefenseContext) -> TrainStats:
        text = list(model.text_tower.parameters())  # the public tower (API 1.3)
        before = [p.requires_grad for p in text]
        if self.config.freeze_text:
            for p in text:
                p.requires_grad_(False)
        try:
            return train(model, ctx.clean_data, ClipObjective(), self.config.train, seed=self.seed,
                         device=ctx.device, stage=ctx.stage_name, reporter=ctx.reporter)
        finally:  # restore the flags (a frozen text body stays frozen)
            for p, flag in zip(text, before):
                p.requires_grad_(flag)
