"""Contrastive losses and the pluggable training objective.

Notation of benchmark/METHODS.md: z^I, z^T are L2-normalised embeddings, s = exp(logit_scale).
``info_nce(A, B)`` is the cross-entropy of ``s * A @ B.T`` against the matching rows;
the CLIP loss is ``(info_nce(I, T) + info_nce(T, I)) / 2``.

Duplicate captions. Template captions repeat within a batch ("a product photo of a
tee." may occur several times), and plain InfoNCE would push true matches apart. By
default targets are *soft multi-positive*: pairs with identical captions are positives
and share the target mass equally (row-normalised equality mask). With real, unique web
captions this reduces to the usual one-hot diagonal. ``duplicate_positives=False``
restores the papers' one-hot targets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .data.dataset import Batch
    from .clip_model import ClipModel


def caption_targets(captions: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """Row-normalised (B, B) matrix with 1 where captions are identical."""
    ids: dict[str, int] = {}
    codes = torch.tensor([ids.setdefault(c, len(ids)) for c in captions], device=device)
    eq = (codes[:, None] == codes[None, :]).float()
    return eq / eq.sum(dim=1, keepdim=True)


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of ``scale * a @ b.T``; ``targets`` soft (B, B) or the diagonal."""
    logits = scale * a @ b.T
    if targets is None:
        return F.cross_entropy(logits, torch.arange(len(a), device=a.device))
    return F.cross_entropy(logits, targets)


def clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric CLIP loss; ``targets`` must be symmetric when given."""
    return 0.5 * (info_nce(img, txt, scale, targets) + info_nce(txt, img, scale, targets))


@dataclass
class StepContext:
    """What an objective may know about the current step."""

    epoch: int  # 1-indexed
    step: int  # global, 0-indexed
    total_steps: int
    generator: torch.Generator  # seeded, for per-step randomness (augmentations)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """The rows of ``x`` from every data-parallel rank, with gradient (identity on one process).

        Contrastive objectives gather their features before the loss so that a torchrun
        job computes the global-batch loss (see :mod:`benchmark.distributed`).
        """
        from .distributed import gather_with_grad

        return gather_with_grad(x)

    def all_captions(self, captions: Sequence[Any]) -> list[Any]:
        """The captions (or any picklable per-sample items, e.g. sample ids) of the global
        batch, in the order of :meth:`all_gather`."""
        from .distributed import gather_list

        return gather_list(captions)

    def local_rows(self, n: int) -> tuple[int, int]:
        """``(offset, total)``: where this rank's ``n`` rows sit in :meth:`all_gather`'s output
        of the ``total``-row global batch (``(0, n)`` on one process).

        Per-sample randomness must be drawn for the global batch and sliced with it (see
        ``defenses.image_augment``), and an objective that picks rows of the gathered
        features (TA-Cleaner) must offset its local row numbers by ``offset``.
        """
        from .distributed import local_rows

        return local_rows(n)


@dataclass
class LossOutput:
    """What an objective returns for one batch: the ``loss`` to minimise and its named ``parts``.

    ``parts`` (name -> float, e.g. ``{"clip": 2.1, "l2_anchor": 0.003}``) are recorded: the
    trainer keeps their per-epoch means (``TrainStats.parts``), and a cell's result file
    holds them under ``defense.training.parts`` (shown on the leaderboard's cell page), so a
    reader can see that a term was active and how large it was.
    """

    loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


class Objective:
    """A training objective. Subclass and override ``__call__`` (and the hooks).

    The trainer owns the loop, optimiser, schedule, precision and logging; an objective
    only turns a batch into a loss, so defenses replace or add terms without copying
    the loop. Hooks, called by :func:`benchmark.train.train` in this order (all optional,
    default no-ops; :func:`benchmark.testing.check_defense` checks that they are called):

    - :meth:`on_train_start` once, before the first step and before the optimiser is built
      (capture starting weights; set ``requires_grad`` to freeze part of a tower);
    - :meth:`on_epoch_start` before each epoch (1-indexed);
    - :meth:`on_step_end` after each optimiser step (weights updated, logit scale clamped).
    """

    duplicate_positives: bool = True

    def targets(self, captions: Sequence[str], device: torch.device) -> torch.Tensor | None:
        return caption_targets(captions, device) if self.duplicate_positives else None

    def on_train_start(self, model: "ClipModel", ctx: StepContext) -> None:
        """Called once before the first step: ``model`` is on ``ctx.device`` in train mode,
        ``ctx.total_steps`` is known, the optimiser is not built yet (parameters whose
        ``requires_grad`` is turned off here are not optimised)."""

    def on_epoch_start(self, model: "ClipModel", epoch: int, ctx: StepContext) -> None:
        """Called before each (1-indexed) epoch."""

    def on_step_end(self, model: "ClipModel", out: LossOutput, ctx: StepContext) -> None:
        """Called after each optimiser step with that step's :class:`LossOutput`; ``ctx.step``
        is the (0-indexed) step just taken."""

    def texts(self, dataset, epoch: int) -> Sequence[str]:
        """The texts this objective will encode in ``epoch`` beyond the dataset's captions,
        where they are known before the epoch starts (called after :meth:`on_epoch_start`):
        EDA rewrites drawn once per caption, TA-Cleaner's sub-captions of the epoch's selected
        samples. With a frozen text body (:mod:`benchmark.text_features`) the trainer encodes
        them in one call up front; a text encoded per batch instead costs a whole fixed-shape
        chunk per caption length, about ten times as much. The features, and so the results,
        are the same either way; ``()`` (the default) when nothing is known ahead."""
        return ()

    def diagnostics(self) -> dict:
        """Measurements of the mechanism the objective relies on (JSON-able), recorded with
        the trained model and in the cell's result; ``{}`` when there is nothing to report."""
        return {}

    def __call__(self, model: "ClipModel", batch: "Batch", ctx: StepContext) -> LossOutput:
        raise NotImplementedError


class ClipObjective(Objective):
    """The plain CLIP loss (clean pre-training, poisoned training, clean fine-tuning)."""

    def __init__(self, duplicate_positives: bool = True):
        self.duplicate_positives = duplicate_positives

    def __call__(self, model: "ClipModel", batch: "Batch", ctx: StepContext) -> LossOutput:
        img, txt = model(batch.images, batch.captions)
        img, txt, captions = ctx.all_gather(img), ctx.all_gather(txt), ctx.all_captions(batch.captions)
        loss = clip_loss(img, txt, model.logit_scale.exp(), self.targets(captions, img.device))
        return LossOutput(loss, {"clip": float(loss.detach())})
