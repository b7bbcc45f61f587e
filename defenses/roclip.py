"""RoCLIP (Yang, Gao, Mirzasoleiman; NeurIPS 2023): a training-time defense.

"Robust Contrastive Language-Image Pretraining against Data Poisoning and Backdoor
Attacks." RoCLIP replaces the objective of the (poisoned) training itself; it needs no
clean set. The runner trains it on the same poisoned set, under the same schedule
(``suite.poison_train``), as the plain-CLIP baseline it is compared with.

benchmark/METHODS.md (roclip), as implemented here:

- Epochs are 1-indexed; epoch ``e`` is a *matching epoch* iff ``e % K == 0``
  (``match_every`` = K = 2, the paper's default; K = 1 for strong attacks). Other epochs
  use the plain CLIP loss.
- Pool: a FIFO of detached caption embeddings (with their captions and dataset
  indices). In a matching epoch, every image takes its cosine-nearest pool caption,
  *then* the batch's captions are enqueued, so an image never matches a caption of its
  own batch (pool entries of the batch's own samples, possible only in a pre-filled
  pool, are excluded from retrieval). The pool is read and written only in matching epochs.
- Matching loss: the symmetric InfoNCE between the images and their retrieved caption
  embeddings, which carry no gradient: the text tower is idle in matching epochs (its
  embeddings are computed under ``no_grad``). Images that retrieved the same caption
  string are positives of each other (the engine's duplicate-caption convention).
- Pool size: ``max(round(pool_fraction * N), pool_min_batches * batch)`` with
  ``pool_fraction = 0.05`` and ``pool_min_batches = 10`` (>> a batch, << the data; the
  reference code's 21,845 is about 43 batches and 2% of 1M pairs). Documented
  deviation: at the first matching epoch the pool is pre-filled with the embeddings of
  the captions of a seeded random sample of the training set (instead of random
  vectors), so that retrieval is meaningful from the first step at small scale; a batch
  arriving at an empty pool (no training set given) uses the CLIP loss.
- Augmentation every epoch: images get the SimCLR-style view (flip, RandomResizedCrop,
  ColorJitter(0.5, 0.5, 0.5, 0.1) p=0.8, grayscale p=0.2, Gaussian blur with a kernel
  of ~10% of the side and, documented scaling, SimCLR's sigma range (0.1, 2) px at 224
  px scaled to the side like the kernel (``blur_scaled``);
  :func:`defenses.image_augment.simclr_augment`),
  captions EDA (alpha 0.1, drawn once per caption, as the reference code does at load
  time; :mod:`defenses.text_augment`).
- Embedded suite: the image view is switched off and EDA kept (``image_aug``/``text_aug``),
  chosen on the val split within the issue's 3-point CA budget: the SimCLR view is what
  removes the backdoor there (val ASR < 1%) but costs 15-21 points of clean accuracy on the
  28 px data; matching + EDA keeps CA (-1.7) and lowers BadNet's ASR only partly (numbers
  in ``benchmark/suites/embedded.yaml``). The class defaults stay the paper's.
- Schedule: the paper trains 24 epochs at batch 512, lr 5e-5, 10K warm-up steps; here the
  suite's ``poison_train`` schedule applies, identical to the plain-training baseline, so
  that the comparison isolates the objective (``train`` of this config is unused).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from benchmark import Defense, DefenseConfig, DefenseContext, LossOutput, Objective, StepContext, DefenseStage
from benchmark import caption_targets, check, clip_loss


@dataclass
class RoCLIPConfig(DefenseConfig):
    """RoCLIP's matching schedule, pool and augmentations (paper defaults, pool scaled)."""

    match_every: int = 2  # K: epoch e (1-indexed) is a matching epoch iff e % K == 0
    pool_fraction: float = 0.05
    pool_min_batches: int = 10
    prefill: bool = True
    image_aug: bool = True
    text_aug: bool = True
    crop_scale_min: float = 0.08  # RandomResizedCrop's default scale (0.08, 1)
    blur_scaled: bool = True  # Gaussian-blur sigma (0.1, 2) px at 224 px scaled to the image side
    eda_alpha: float = 0.1
    wordnet: Literal["auto", "subset", "full"] = "auto"

    def __post_init__(self) -> None:
        check(self.match_every >= 1, "match_every", self.match_every, "use K >= 1 (K=1 matches every epoch)")
        check(0 < self.pool_fraction < 1, "pool_fraction", self.pool_fraction, "use a fraction of the data, e.g. 0.05")
        check(self.pool_min_batches >= 1, "pool_min_batches", self.pool_min_batches, "use at least one batch")
        check(0 < self.crop_scale_min <= 1, "crop_scale_min", self.crop_scale_min, "use a scale in (0, 1]")


class CaptionPool:
    """A FIFO of detached caption embeddings, with their captions and sample indices."""

    def __init__(self, size: int):
        self.size = size
        self.emb: torch.Tensor | None = None
        self.ids = torch.full((size,), -1, dtype=torch.long)
        self.captions: list[str] = [""] * size
        self.ptr = 0  # next slot to write (the oldest entry once full)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def enqueue(self, emb: torch.Tensor, captions: list[str], ids: torch.Tensor) -> None:
        emb = emb.detach()
        if self.emb is None:
            self.emb = torch.zeros(self.size, emb.shape[1], dtype=emb.dtype, device=emb.device)
        for start in range(0, len(emb), self.size):  # a batch larger than the pool keeps its tail
            e, c, i = emb[start:start + self.size], captions[start:start + self.size], ids[start:start + self.size]
            slots = (self.ptr + torch.arange(len(e))) % self.size
            self.emb[slots.to(self.emb.device)] = e.to(self.emb.dtype)
            self.ids[slots] = i.cpu().long()
            for s, cap in zip(slots.tolist(), c):
                self.captions[s] = cap
            self.ptr = int((self.ptr + len(e)) % self.size)
            self.count = min(self.size, self.count + len(e))

    def order(self) -> torch.Tensor:
        """Slots from the oldest entry to the newest."""
        if self.count < self.size:
            return torch.arange(self.count)
        return (self.ptr + torch.arange(self.size)) % self.size

    def ordered_ids(self) -> list[int]:
        return self.ids[self.order()].tolist()

    def nearest(self, queries: torch.Tensor, exclude_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Slot of the cosine-nearest pool entry for each (normalised) query.

        Entries whose sample id is in ``exclude_ids`` (the current batch) are never
        returned: with FIFO writes this only matters for a pre-filled pool.
        """
        valid = self.order()
        if exclude_ids is not None:
            valid = valid[~torch.isin(self.ids[valid], exclude_ids.cpu())]
        if len(valid) == 0:
            raise RuntimeError("the RoCLIP pool holds only captions of the current batch; enlarge the pool")
        valid = valid.to(queries.device)
        sims = queries.detach() @ self.emb[valid].T
        return valid[sims.argmax(dim=1)]


class RoCLIPObjective(Objective):
    """Plain CLIP loss in ordinary epochs, nearest-neighbour caption matching every K-th."""

    def __init__(self, config: RoCLIPConfig, seed: int, num_samples: int | None = None, prefill_data=None,
                 train_data=None):
        from defenses.text_augment import CaptionAugmenter, EDAConfig, load_lexicon

        self.config = config
        self.seed = seed
        self.num_samples = num_samples
        self.pool: CaptionPool | None = None  # sized at the first matching batch (its batch size)
        self.prefill_data = prefill_data
        self.matching = False
        self.last_retrieved_ids: torch.Tensor | None = None  # sample ids of the captions last retrieved
        # EDA once per caption, as the reference code draws it at load time
        self.text_augmenter = (CaptionAugmenter(seed, load_lexicon(config.wordnet), EDAConfig(alpha=config.eda_alpha),
                                                mode="once") if config.text_aug else None)
        self.train_data = train_data
        #: per matching epoch, what the poisoned images retrieved (the mechanism, measured)
        self.retrieval: dict[int, dict] = {}

    def is_matching_epoch(self, epoch: int) -> bool:
        return epoch % self.config.match_every == 0

    def pool_size(self, batch_size: int) -> int:
        """``max(round(pool_fraction * N), pool_min_batches * batch)``, at most N / 2."""
        size = self.config.pool_min_batches * batch_size
        if self.num_samples:
            size = min(max(round(self.config.pool_fraction * self.num_samples), size), max(1, self.num_samples // 2))
        return size

    def on_epoch_start(self, model, epoch: int, ctx: StepContext) -> None:
        self.matching = self.is_matching_epoch(epoch)

    def texts(self, dataset, epoch: int) -> list[str]:
        """The EDA rewrites of every caption (drawn once per caption), known at the start."""
        from defenses.text_augment import rewrites_ahead

        return rewrites_ahead(self.text_augmenter, dataset, epoch)

    def _record(self, epoch: int, index: torch.Tensor, retrieved_ids: torch.Tensor) -> None:
        """Count, for the batch's poisoned images, the classes of the pairs whose captions they retrieved."""
        data = self.train_data
        if data is None or getattr(data, "poisoned", None) is None:
            return
        queries = data.poisoned[index.cpu()]
        if not bool(queries.any()):
            return
        got = retrieved_ids[queries]
        entry = self.retrieval.setdefault(epoch, {"poisoned_images": 0, "retrieved_poisoned": 0,
                                                  "retrieved_label_counts": {}})
        entry["poisoned_images"] += int(queries.sum())
        from_poison = data.poisoned[got]
        entry["retrieved_poisoned"] += int(from_poison.sum())
        counts = entry["retrieved_label_counts"]
        for label in data.labels[got[~from_poison]].tolist():
            counts[str(label)] = counts.get(str(label), 0) + 1

    def diagnostics(self) -> dict:
        """Per matching epoch: how many poisoned images retrieved a poisoned pair's caption, and
        the classes of the clean pairs whose captions the others retrieved (the runner turns
        these into the fraction that retrieved a caption naming the target class)."""
        if not self.retrieval:
            return {}
        return {"roclip_retrieval": [{"epoch": e, **v} for e, v in sorted(self.retrieval.items())]}

    @torch.no_grad()
    def _prefill(self, model) -> None:
        data = self.prefill_data
        rng = np.random.default_rng([self.seed, 0x9001])
        idx = np.sort(rng.choice(len(data), size=min(self.pool.size, len(data)), replace=False))
        captions = [data.captions[i] for i in idx.tolist()]
        was_training = model.training
        model.eval()
        embs = [model.encode_text(captions[s:s + 512]) for s in range(0, len(captions), 512)]
        model.train(was_training)
        self.pool.enqueue(torch.cat(embs), captions, torch.as_tensor(idx))

    def __call__(self, model, batch, ctx: StepContext) -> LossOutput:
        from defenses.image_augment import simclr_augment

        images = batch.images
        offset, total = ctx.local_rows(len(batch))
        if self.config.image_aug:
            images = simclr_augment(images, ctx.generator, crop_scale=(self.config.crop_scale_min, 1.0),
                                    blur_sigma=None if self.config.blur_scaled else (0.1, 2.0), rows=(offset, total))
        captions = (self.text_augmenter(batch.captions, batch.index.tolist()) if self.text_augmenter is not None
                    else list(batch.captions))
        scale = model.logit_scale.exp()
        # under torchrun every rank sees the global batch: gathered features, captions and sample
        # ids; the pool then receives the same global batches on every rank (identity on one process)
        all_captions = ctx.all_captions(captions)
        if not self.matching:
            img, txt = model(images, captions)
            img, txt = ctx.all_gather(img), ctx.all_gather(txt)
            loss = clip_loss(img, txt, scale, self.targets(all_captions, img.device))
            return LossOutput(loss, {"clip": float(loss.detach())})
        if self.pool is None:
            self.pool = CaptionPool(self.pool_size(total))
            if self.config.prefill and self.prefill_data is not None:
                self._prefill(model)
        img = ctx.all_gather(model.encode_image(images))
        with torch.no_grad():  # the text tower is idle in matching epochs
            txt = ctx.all_gather(model.encode_text(captions))
        index = torch.as_tensor(ctx.all_captions(batch.index.tolist()), dtype=torch.long)
        if len(self.pool) == 0:
            loss = clip_loss(img, txt, scale, self.targets(all_captions, img.device))
            parts = {"clip": float(loss.detach())}
        else:
            slots = self.pool.nearest(img, exclude_ids=index)
            retrieved = self.pool.emb[slots]
            retrieved_captions = [self.pool.captions[s] for s in slots.tolist()]
            self.last_retrieved_ids = self.pool.ids[slots.cpu()].clone()
            self._record(ctx.epoch, index, self.last_retrieved_ids)
            loss = clip_loss(img, retrieved, scale, self.targets(retrieved_captions, img.device))
            parts = {"match": float(loss.detach())}
        self.pool.enqueue(txt.detach(), all_captions, index)
        return LossOutput(loss, parts)


class RoCLIP(Defense):
    """Training-time defense: nearest-neighbour caption matching from a FIFO pool."""

    name = "roclip"
    stage = DefenseStage.TRAINING
    paper = "Yang, Gao, Mirzasoleiman, RoCLIP, NeurIPS 2023"
    Config = RoCLIPConfig

    def image_views(self):
        """With ``image_aug``: the SimCLR view RoCLIP trains on, differentiable (for EOT); else None."""
        if not self.config.image_aug:
            return None
        from functools import partial

        from defenses.image_augment import simclr_augment

        return partial(simclr_augment, crop_scale=(self.config.crop_scale_min, 1.0),
                       blur_sigma=None if self.config.blur_scaled else (0.1, 2.0), differentiable=True)

    def objective(self, ctx: DefenseContext) -> Objective:
        data = ctx.train_data
        return RoCLIPObjective(self.config, self.seed, len(data) if data is not None else None,
                               data if self.config.prefill else None, train_data=data)
