"""Detection: metrics against known answers, the built-in detectors on constructed embeddings."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark import DetectionContext, TensorPairs, detection_metrics, lid_mle, neighbour_distances, top_fraction
from benchmark.detection import roc_points, tpr_at_fpr
from benchmark.registry import RegistryError, detector_registry

REGISTRY = detector_registry()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads; on a loaded 2-core box OpenMP spinning makes them crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ metrics
def test_hand_computed_tiny_example():
    # scores 0.1, 0.4 (negatives), 0.35, 0.8 (positives): of the 4 (pos, neg) pairs, 3 are ordered
    # right -> AUROC 3/4. Ranked: 0.8 (pos, P=1), 0.4 (neg), 0.35 (pos, P=2/3), 0.1 -> AP = (1 + 2/3)/2.
    # At FPR 0 the threshold 0.8 catches one of two positives -> TPR@1%FPR = 0.5.
    m = detection_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], bootstrap=0)
    assert m["auroc"] == pytest.approx(0.75)
    assert m["auprc"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["tpr_at_fpr"] == pytest.approx(0.5)
    assert m["counts"] == {"positives": 2, "negatives": 2} and m["prevalence"] == 0.5
    assert m["intervals"] == {}
    # a tie between a positive and a negative counts half
    assert detection_metrics([0.5, 0.5], [0, 1], bootstrap=0)["auroc"] == pytest.approx(0.5)


def test_trivially_separable_scores_get_auroc_one():
    rng = np.random.default_rng(0)
    labels = np.zeros(2000, dtype=bool)
    labels[rng.choice(2000, 20, replace=False)] = True
    scores = rng.normal(size=2000) + 10 * labels  # every poisoned pair far above every clean one
    m = detection_metrics(scores, labels, bootstrap=200, seed=0)
    assert m["auroc"] == 1.0 and m["auprc"] == 1.0 and m["tpr_at_fpr"] == 1.0
    assert m["intervals"]["auroc"] == pytest.approx([1.0, 1.0])
    inverted = detection_metrics(-scores, labels, bootstrap=0)  # the wrong sign: the worst detector
    assert inverted["auroc"] == 0.0 and inverted["tpr_at_fpr"] == 0.0


def test_random_scorer_is_near_chance():
    rng = np.random.default_rng(1)
    labels = rng.random(20000) < 0.05
    m = detection_metrics(rng.random(20000), labels, bootstrap=100, seed=3)
    assert abs(m["auroc"] - 0.5) < 0.03
    assert abs(m["auprc"] - labels.mean()) < 0.02  # AUPRC's chance level is the prevalence
    assert m["tpr_at_fpr"] < 0.05
    lo, hi = m["intervals"]["auroc"]
    assert lo < 0.5 < hi and hi - lo < 0.06


def test_bootstrap_is_seeded_and_stratified():
    rng = np.random.default_rng(2)
    labels = rng.random(500) < 0.1
    scores = rng.normal(size=500) + labels
    a = detection_metrics(scores, labels, bootstrap=300, seed=5)
    b = detection_metrics(scores, labels, bootstrap=300, seed=5)
    c = detection_metrics(scores, labels, bootstrap=300, seed=6)
    assert a["intervals"] == b["intervals"] and a["intervals"] != c["intervals"]
    for key in ("auroc", "auprc", "tpr_at_fpr"):
        lo, hi = a["intervals"][key]
        assert lo <= a[key] <= hi and lo < hi
    assert a["bootstrap"] == {"resamples": 300, "seed": 5, "confidence": 0.95, "stratified": True}


def test_tpr_at_fpr_reads_the_strict_operating_point():
    # 100 negatives 0..99, positives at 99.5 (above all) and 97.5 (above 97 negatives)
    scores = np.r_[np.arange(100.0), 99.5, 97.5]
    labels = np.r_[np.zeros(100), 1, 1]
    assert tpr_at_fpr(scores, labels, 0.01) == 0.5  # 97.5 costs 2 false positives = 2% FPR
    assert tpr_at_fpr(scores, labels, 0.02) == 1.0


def test_roc_points_are_thinned_and_keep_both_ends():
    rng = np.random.default_rng(4)
    labels = rng.random(5000) < 0.3
    roc = roc_points(rng.normal(size=5000) + labels, labels, points=50)
    assert len(roc["fpr"]) <= 50 and roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert all(a <= b for a, b in zip(roc["fpr"], roc["fpr"][1:]))


@pytest.mark.parametrize("scores,labels,match", [
    ([0.1, 0.2], [1, 1], "both classes"),
    ([0.1, float("nan")], [0, 1], "NaN or infinite"),
    ([0.1, 0.2, 0.3], [0, 1], "3 scores for 2 labels"),
])
def test_bad_input_is_named(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        detection_metrics(scores, labels)


def test_top_fraction():
    assert top_fraction([0.1, 0.9, 0.5, 0.7], 0.5).tolist() == [1, 3]
    assert top_fraction([0.1, 0.9, 0.5, 0.7], 0.0).tolist() == []
    assert top_fraction(np.zeros(10), 0.25).tolist() == [0, 1, 2]  # ceil(2.5); ties by index


def test_neighbour_distances_and_lid_against_hand_values():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    d, idx = neighbour_distances(x, 2)
    assert d.tolist() == [[1, 3], [1, 2], [2, 3], [4, 6]]
    assert idx[0].tolist() == [1, 2]
    # LID MLE: -1 / mean(log(d_i / d_k)): point 0: -1 / (log(1/3) / 2)
    assert lid_mle(d)[0] == pytest.approx(-1 / (np.log(1 / 3) / 2))
    # points uniform in a d-dimensional ball around the origin: the MLE recovers about d
    rng = np.random.default_rng(0)
    for dim in (2, 8):
        pts = rng.normal(size=(4000, dim))
        pts = pts / np.linalg.norm(pts, axis=1, keepdims=True) * rng.random((4000, 1)) ** (1 / dim)
        dist, _ = neighbour_distances(pts[:200], 20, reference=pts[200:])
        assert np.median(lid_mle(dist)) == pytest.approx(dim, rel=0.25)


# ----------------------------------------------------------------- constructed embeddings
class TableModel(nn.Module):
    """A stand-in for a ClipModel whose image embedding is looked up from a table by the index
    written into each image's first two pixels (so that detectors see chosen embeddings)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = F.normalize(table.float(), dim=1)
        self.logit_scale = nn.Parameter(torch.zeros(()))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        px = (x * 255).round().long().flatten(1)
        return self.table[px[:, 0] * 256 + px[:, 1]]


def constructed(n_clean=1500, n_poison=15, dim=16, seed=0):
    """Clean pairs: dense clusters on a 2-d sheet of a 16-d sphere; poisoned pairs: scattered
    (sparse local neighbourhoods), as Huang et al. describe backdoored CLIPs' embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim))
    basis = rng.normal(size=(10, 2, dim))
    lab = rng.integers(0, 10, n_clean)
    clean = centres[lab] + 0.15 * np.einsum("nk,nkd->nd", rng.normal(size=(n_clean, 2)), basis[lab])
    poison = rng.normal(size=(n_poison, dim))
    table = torch.tensor(np.concatenate([clean, poison]))
    n = len(table)
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) // 256
    images[:, 0, 0, 1] = torch.arange(n) % 256
    poisoned = torch.zeros(n, dtype=torch.bool)
    poisoned[n_clean:] = True
    data = TensorPairs(images, [f"c{i}" for i in range(n)], torch.zeros(n, dtype=torch.long), ("x",), poisoned)
    return TableModel(table), data


@pytest.mark.parametrize("name", ["k_distance", "dao", "isolation_forest", "lid"])
def test_density_detectors_find_scattered_pairs_among_dense_clusters(name):
    model, data = constructed()
    det = REGISTRY.build(name, {}, seed=0)
    scores = det.score(model, data, DetectionContext(("x",), 0))
    m = detection_metrics(scores, data.poisoned.numpy(), bootstrap=0)
    assert m["auroc"] > 0.95, m
    # the same detector on unlabelled noise ranks the "poisoned" at chance
    shuffled = data.poisoned[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))]
    assert abs(detection_metrics(scores, shuffled.numpy(), bootstrap=0)["auroc"] - 0.5) < 0.2


def test_dao_corrects_for_local_dimensionality():
    """A point just outside a dense cluster: k-distance ranks it below the sparse cluster's own
    members, DAO's density ratio ranks it first."""
    from defenses.detectors.dao import dao_scores

    rng = np.random.default_rng(0)
    dense = rng.normal(scale=0.01, size=(300, 2))
    sparse = rng.normal(scale=1.0, size=(300, 2)) + 10
    outlier = np.array([[0.15, 0.0]])
    x = np.concatenate([dense, sparse, outlier])
    dao = dao_scores(x, 16)
    kdist = neighbour_distances(x, 16)[0][:, -1]
    assert dao.argmax() == len(x) - 1
    assert (kdist[300:600] > kdist[-1]).mean() > 0.5


def test_registry_lists_detectors_with_kinds_and_suggests_names():
    assert set(REGISTRY.names()) >= {"k_distance", "lid", "dao", "isolation_forest", "abl_loss", "decree"}
    assert REGISTRY.get("decree").kind.value == "model" and REGISTRY.get("dao").kind.value == "sample"
    with pytest.raises(RegistryError, match="did you mean 'decree'"):
        REGISTRY.get("decre")
    with pytest.raises(Exception, match="detectors.dao.k"):
        REGISTRY.build("dao", {"k": 0})
