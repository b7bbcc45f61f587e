"""Zero-shot evaluation: CA, ASR, RA, ASR@k, with 95% Wilson intervals.

Definitions (benchmark/METHODS.md, metrics; also printed on the leaderboard page):

- **CA**: zero-shot top-1 accuracy on the whole clean test set.
- **ASR**: among test images whose TRUE class is not the target, with the trigger
  applied, the fraction classified as the target. Target-class images are excluded.
- **ASR@k**: same set, the target among the top-k predictions.
- **RA**: same triggered set, the fraction classified as the true class.

The classifier is CLIP's prompt ensemble: a class's weight is the mean of its
L2-normalised template embeddings, re-normalised. Triggered test images go through the
same uint8 quantisation as poisoned training images, so train- and test-time triggers
are bit-identical.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from scipy.stats import binomtest

from .data.dataset import TensorPairs, to_uint8
from .clip_model import ClipModel


@dataclass
class EvalConfig:
    """Zero-shot evaluation settings."""

    batch_size: int = 1000
    asr_topk: tuple[int, ...] = (1, 5)
    confidence: float = 0.95

    def __post_init__(self) -> None:
        from .config import check

        check(self.batch_size >= 1, "eval.batch_size", self.batch_size, "use a batch of at least 1 image, e.g. 500")
        check(len(self.asr_topk) > 0 and all(k >= 1 for k in self.asr_topk), "eval.asr_topk", list(self.asr_topk),
              "use positive ranks, e.g. [1, 5]")
        check(0 < self.confidence < 1, "eval.confidence", self.confidence, "use a level in (0, 1), e.g. 0.95")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy)."""
    if n == 0:
        return (0.0, 1.0)
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


@torch.no_grad()
def zero_shot_weights(model: ClipModel, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(K, D) prompt-ensemble classifier."""
    model.eval()
    weights = []
    for name in class_names:
        emb = model.encode_text([t.format(name) for t in templates])
        weights.append(F.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(weights)


@torch.no_grad()
def logits(model: ClipModel, images_u8: torch.Tensor, weights: torch.Tensor, batch_size: int,
           transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Zero-shot logits of uint8 images, optionally through ``transform`` (a trigger)."""
    model.eval()
    device = weights.device
    out = []
    for start in range(0, len(images_u8), batch_size):
        x = images_u8[start : start + batch_size].float().div_(255)
        if transform is not None:
            x = to_uint8(transform(x)).float().div_(255)
        out.append((model.encode_image(x.to(device)) @ weights.T).float().cpu())
    return torch.cat(out) if out else torch.empty(0, len(weights))


def _rate(hits: torch.Tensor, confidence: float) -> tuple[float, list[float], int, int]:
    k, n = int(hits.sum()), int(hits.numel())
    return (k / n if n else float("nan")), list(wilson_interval(k, n, confidence)), k, n


@dataclass
class Metrics:
    clean_accuracy: float
    asr: float | None = None
    ra: float | None = None
    asr_at_k: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    #: zero-shot top-1 accuracy on other labelled attributes of the clean test images
    #: (the embedded data's colour), which shows that the text side is used
    attribute_accuracy: dict[str, float] = field(default_factory=dict)
    #: the backdoor's mechanism, measured: mean cosine between the target class's text
    #: embedding and the images' embeddings, triggered (non-target images) and clean
    target_cosine: dict[str, float] = field(default_factory=dict)


def score(clean_logits: torch.Tensor, labels: torch.Tensor, triggered_logits: torch.Tensor | None = None,
          triggered_labels: torch.Tensor | None = None, target: int | None = None,
          config: EvalConfig | None = None) -> Metrics:
    """Metrics from logits. ``triggered_*`` must already exclude target-class images."""
    cfg = config or EvalConfig()
    ca, ca_ci, _, n = _rate(clean_logits.argmax(1) == labels, cfg.confidence)
    m = Metrics(clean_accuracy=ca, intervals={"clean_accuracy": ca_ci}, counts={"clean": n})
    if triggered_logits is None or target is None:
        return m
    if triggered_labels is not None and bool((triggered_labels == target).any()):
        raise ValueError("triggered images must exclude the target class (ASR is defined over non-target images)")
    pred = triggered_logits.argmax(1)
    m.asr, m.intervals["asr"], _, m.counts["triggered"] = _rate(pred == target, cfg.confidence)
    m.ra, m.intervals["ra"], _, _ = _rate(pred == triggered_labels, cfg.confidence)
    for k in cfg.asr_topk:
        topk = triggered_logits.topk(min(k, triggered_logits.shape[1]), dim=1).indices
        m.asr_at_k[str(k)] = float((topk == target).any(dim=1).float().mean()) if len(topk) else float("nan")
    return m


@dataclass(frozen=True)
class AttributeTask:
    """A second zero-shot task on a labelled attribute of the test images (e.g. colour)."""

    names: tuple[str, ...]
    templates: tuple[str, ...]


def evaluate(model: ClipModel, test: TensorPairs, class_names: Sequence[str], templates: Sequence[str],
             trigger: Callable[[torch.Tensor], torch.Tensor] | None = None, target: int | None = None,
             config: EvalConfig | None = None, attribute_tasks: dict[str, AttributeTask] | None = None) -> Metrics:
    """CA on ``test``; with ``trigger`` and ``target``, also ASR, ASR@k, RA and the target
    cosines; with ``attribute_tasks``, the zero-shot accuracy on each attribute that
    ``test.attributes`` labels."""
    cfg = config or EvalConfig()
    weights = zero_shot_weights(model, class_names, templates)
    if not isinstance(test, TensorPairs):  # external data: one streamed pass, decoding in DataLoader workers
        return _evaluate_streamed(model, test, weights, trigger, target, cfg)
    labels = test.labels
    clean_logits = logits(model, test.images, weights, cfg.batch_size)
    if trigger is None or target is None:
        m = score(clean_logits, labels, config=cfg)
    else:
        keep = labels != target  # ASR excludes images whose true class is the target
        trig_logits = logits(model, test.images[keep], weights, cfg.batch_size, trigger)
        m = score(clean_logits, labels, trig_logits, labels[keep], target, cfg)
        # these logits are cosines: image embeddings and class weights are unit vectors
        m.target_cosine = {"triggered": float(trig_logits[:, target].mean()),
                           "clean": float(clean_logits[keep][:, target].mean())}
    attributes = getattr(test, "attributes", None) or {}
    for name, task in (attribute_tasks or {}).items():
        if name not in attributes:
            continue
        task_logits = logits(model, test.images, zero_shot_weights(model, task.names, task.templates), cfg.batch_size)
        acc, ci, _, _ = _rate(task_logits.argmax(1) == attributes[name], cfg.confidence)
        m.attribute_accuracy[name] = acc
        m.intervals[f"{name}_accuracy"] = ci
    return m


@torch.no_grad()
def _evaluate_streamed(model: ClipModel, test, weights: torch.Tensor, trigger, target: int | None,
                       cfg: EvalConfig) -> Metrics:
    """:func:`evaluate` for datasets too large for memory (ImageNet val): clean and triggered
    logits from the same decoded batch, with the same uint8 quantisation of triggered images."""
    from torch.utils.data import DataLoader

    from .data.dataset import batch_collate

    model.eval()
    device = weights.device
    loader = DataLoader(test, batch_size=cfg.batch_size, shuffle=False, collate_fn=batch_collate,
                        num_workers=getattr(test, "num_workers", 0))
    clean, trig, labels, trig_labels = [], [], [], []
    for batch in loader:
        x = batch.images
        clean.append((model.encode_image(x.to(device)) @ weights.T).float().cpu())
        labels.append(batch.labels)
        if trigger is not None and target is not None:
            keep = batch.labels != target
            if bool(keep.any()):
                xt = to_uint8(trigger(x[keep])).float().div_(255)
                trig.append((model.encode_image(xt.to(device)) @ weights.T).float().cpu())
                trig_labels.append(batch.labels[keep])
    k = len(weights)
    clean_logits = torch.cat(clean) if clean else torch.empty(0, k)
    all_labels = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
    if trigger is None or target is None:
        return score(clean_logits, all_labels, config=cfg)
    return score(clean_logits, all_labels, torch.cat(trig) if trig else torch.empty(0, k),
                 torch.cat(trig_labels) if trig_labels else torch.empty(0, dtype=torch.long), target, cfg)


def der(asr_bd: float, asr_def: float, ca_bd: float, ca_def: float) -> float:
    """BackdoorBench's defense effectiveness rating, in [0, 1] (CA drop subtracted)."""
    return (max(0.0, asr_bd - asr_def) - max(0.0, ca_bd - ca_def) + 1) / 2
