"""Detection: the shared tools of detectors and the metrics they are scored with.

Detectors (:class:`~benchmark.api.SampleDetector`, :class:`~benchmark.api.ModelDetector`)
use :func:`image_embeddings` and :func:`neighbour_distances`; the engine scores their output
against the ground truth with :func:`detection_metrics`:

- **sample detection**: the positives are the pairs the poison manifest lists as poisoned
  (``indices``; WaNet's noise-mode ``cross_indices`` keep their captions and count as clean);
  every other pair of the training set is a negative;
- **model detection**: the positives are backdoored models, the negatives clean ones
  (:func:`model_detection_metrics`, over every seed's models).

Metrics (scikit-learn's): **AUROC** (``roc_auc_score``; 0.5 is chance, ties count half),
**AUPRC** (``average_precision_score``, the step-wise area; chance is the prevalence,
recorded beside it), **TPR at 1% FPR** (the highest true-positive rate of any threshold
whose false-positive rate is at most 1%, read off ``roc_curve``), each with a seeded
**bootstrap** percentile interval: pairs are resampled with replacement *within* each class
(stratified, so every resample has both classes and the prevalence stays fixed).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .data.dataset import TensorPairs
from .models import ClipModel

#: the false-positive rate at which the TPR is read (TPR@1%FPR)
DEFAULT_FPR = 0.01
#: points kept of a ROC curve in a result file (enough to draw it, small enough to commit)
ROC_POINTS = 101


@torch.no_grad()
def image_embeddings(model: ClipModel, data: TensorPairs | torch.Tensor, batch_size: int = 512,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """L2-normalised image embeddings (N, D), float32 on the CPU, of a set's uint8 images (or a
    uint8 image tensor), in eval mode and in order."""
    images = data.images if isinstance(data, TensorPairs) else data
    device = torch.device(device) if device is not None else model.logit_scale.device
    was_training = model.training
    model.eval()
    out = [model.encode_image(images[i:i + batch_size].to(device).float().div_(255)).float().cpu()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def neighbour_distances(embeddings: np.ndarray | torch.Tensor, k: int, reference: np.ndarray | torch.Tensor | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances (N, k) to the ``k`` nearest neighbours of every row, ascending, and
    their indices (N, k) into ``reference`` (default: the rows themselves, each row's own
    entry excluded). scikit-learn's ``NearestNeighbors`` (exact)."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(embeddings, dtype=np.float64)
    ref = x if reference is None else np.asarray(reference, dtype=np.float64)
    self_ref = reference is None
    if k < 1 or k + int(self_ref) > len(ref):
        raise ValueError(f"k={k} neighbours need at least {k + int(self_ref)} reference points, got {len(ref)}; "
                         "lower k")
    nn = NearestNeighbors(n_neighbors=k + int(self_ref)).fit(ref)
    dist, idx = nn.kneighbors(x)
    if not self_ref:
        return dist, idx
    # drop each row's own entry (normally the first; with exact duplicates it may be any of the ties)
    rows = np.arange(len(x))[:, None]
    own = idx == rows
    missing = ~own.any(axis=1)
    own[missing, -1] = True  # a duplicate took the own slot: drop the farthest instead
    keep = ~own
    return dist[keep].reshape(len(x), k), idx[keep].reshape(len(x), k)


def lid_mle(distances: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Local intrinsic dimensionality, maximum-likelihood estimate (Levina & Bickel; Amsaleg et al.
    2015) from each row's ascending neighbour distances d_1..d_k:
    ``LID = -1 / mean_i log(d_i / d_k)``. Rows whose k distances are all equal get ``inf``
    (no spread), returned as a large finite number."""
    d = np.maximum(np.asarray(distances, dtype=np.float64), eps)
    logs = np.log(d / d[:, -1:]).mean(axis=1)
    with np.errstate(divide="ignore"):
        lid = -1.0 / logs
    return np.nan_to_num(lid, nan=1e6, posinf=1e6, neginf=1e6)


# ------------------------------------------------------------------------------ metrics
def _check_scores(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores for {len(y)} labels; score every sample once")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite; a detector returns finite scores")
    if y.all() or not y.any():
        raise ValueError(f"detection metrics need both classes: {int(y.sum())} positives, {int((~y).sum())} negatives")
    return s, y


def tpr_at_fpr(scores: Any, labels: Any, fpr: float = DEFAULT_FPR) -> float:
    """The highest TPR over thresholds whose FPR is at most ``fpr`` (scikit-learn's ``roc_curve``)."""
    from sklearn.metrics import roc_curve

    s, y = _check_scores(scores, labels)
    f, t, _ = roc_curve(y, s, drop_intermediate=False)
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


def _point_metrics(s: np.ndarray, y: np.ndarray, fpr: float) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s)),
            "tpr_at_fpr": tpr_at_fpr(s, y, fpr)}


def _curve_metrics(s: np.ndarray, y: np.ndarray, fpr: float) -> dict[str, float]:
    """The three metrics from one ``roc_curve`` (every threshold): AUROC as its trapezoidal area
    (``roc_auc_score``'s), AUPRC as ``sum (R_i - R_{i-1}) P_i`` over the thresholds
    (``average_precision_score``'s definition), the TPR at ``fpr``. Equal to
    :func:`_point_metrics` (tested), at a third of its cost: the bootstrap's inner loop."""
    from sklearn.metrics import auc, roc_curve

    f, t, _ = roc_curve(y, s, drop_intermediate=False)
    pos, neg = int(y.sum()), int((~y).sum())
    tps, fps = t * pos, f * neg
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 1.0)
    ap = float(np.sum(np.diff(t) * precision[1:]))
    ok = f <= fpr + 1e-12
    return {"auroc": float(auc(f, t)), "auprc": ap, "tpr_at_fpr": float(t[ok].max()) if ok.any() else 0.0}


def roc_points(scores: Any, labels: Any, points: int = ROC_POINTS) -> dict[str, list[float]]:
    """A ROC curve thinned to at most ``points`` (FPR, TPR) points (both ends kept), for plots."""
    from sklearn.metrics import roc_curve

    s, y = _check_scores(scores, labels)
    f, t, _ = roc_curve(y, s)
    if len(f) > points:
        keep = np.unique(np.round(np.linspace(0, len(f) - 1, points)).astype(int))
        f, t = f[keep], t[keep]
    return {"fpr": [round(float(v), 6) for v in f], "tpr": [round(float(v), 6) for v in t]}


def detection_metrics(scores: Any, labels: Any, *, fpr: float = DEFAULT_FPR, bootstrap: int = 1000, seed: int = 0,
                      confidence: float = 0.95, curve: bool = True) -> dict[str, Any]:
    """AUROC, AUPRC and TPR at ``fpr`` of ``scores`` (higher = predicted positive) against boolean
    ``labels``, each with a seeded, class-stratified bootstrap percentile interval.

    Returns ``{"auroc", "auprc", "tpr_at_fpr", "fpr": fpr, "intervals": {name: [lo, hi]},
    "counts": {"positives", "negatives"}, "prevalence", "bootstrap": {"resamples", "seed",
    "confidence"}, "roc": {"fpr": [...], "tpr": [...]}}`` (``roc`` only with ``curve``)."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr={fpr} must be in (0, 1), e.g. 0.01")
    if bootstrap < 0:
        raise ValueError(f"bootstrap={bootstrap} resamples must be 0 (no intervals) or more")
    s, y = _check_scores(scores, labels)
    out: dict[str, Any] = dict(_point_metrics(s, y, fpr))
    out["fpr"] = fpr
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    out["counts"] = {"positives": int(len(pos)), "negatives": int(len(neg))}
    out["prevalence"] = len(pos) / len(y)
    intervals: dict[str, list[float]] = {}
    if bootstrap:
        rng = np.random.default_rng([seed, 0xB007])
        draws = {k: np.empty(bootstrap) for k in ("auroc", "auprc", "tpr_at_fpr")}
        for b in range(bootstrap):
            idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
            for k, v in _curve_metrics(s[idx], y[idx], fpr).items():
                draws[k][b] = v
        alpha = (1 - confidence) / 2
        intervals = {k: [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))] for k, v in draws.items()}
    out["intervals"] = intervals
    out["bootstrap"] = {"resamples": int(bootstrap), "seed": int(seed), "confidence": confidence, "stratified": True}
    if curve:
        out["roc"] = roc_points(s, y)
    return out


def model_detection_metrics(scores: Sequence[float], backdoored: Sequence[bool], **kwargs: Any) -> dict[str, Any]:
    """:func:`detection_metrics` over models: ``scores`` of clean and backdoored models
    (``backdoored``: the labels). With few models the intervals are wide, as they should be."""
    return detection_metrics(scores, backdoored, **kwargs)


def top_fraction(scores: Any, fraction: float) -> np.ndarray:
    """Indices of the ``ceil(fraction * N)`` highest scores (ties broken by index, stable), sorted."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction={fraction} must be in [0, 1)")
    count = int(math.ceil(fraction * len(s) - 1e-9))
    order = np.argsort(-s, kind="stable")
    return np.sort(order[:count])


def check_sample_scores(name: str, scores: Any, n: int) -> np.ndarray:
    """A sample detector's output as a float64 array of ``n`` finite values, or a clear error."""
    s = np.asarray(scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"detector {name!r} returned scores of shape {tuple(s.shape)} for {n} pairs; return one "
                         "score per pair, shape (N,)")
    if not np.isfinite(s).all():
        raise ValueError(f"detector {name!r} returned {int((~np.isfinite(s)).sum())} non-finite scores; return finite "
                         "floats (higher = more suspicious)")
    return s


def check_model_score(name: str, score: Any) -> float:
    """A model detector's output as a finite float, or a clear error."""
    try:
        value = float(score)
    except (TypeError, ValueError):
        raise ValueError(f"detector {name!r} returned {score!r}; return one float (higher = more likely backdoored)") from None
    if not math.isfinite(value):
        raise ValueError(f"detector {name!r} returned a non-finite score {value}; return a finite float")
    return value


def make_detector(name: str, config: dict[str, Any] | None = None, seed: int = 0):
    """The detector ``name`` (a built-in or an installed plugin) with ``config`` overrides of its
    paper defaults: for methods that use a detector (``detect_and_retrain``)."""
    from .registry import detector_registry

    return detector_registry().build(name, config or {}, seed)
