"""Detection: metrics against known answers, the built-in detectors on constructed embeddings."""
import math
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


# ------------------------------------------------------------------------------ the plan
def _plan(tmp_path, attacks=("badnet", "blended"), detectors=("dao", "decree"), seeds=(0,), suite=None):
    from benchmark.data.sources import open_data
    from benchmark.plan import make_plan
    from benchmark.registry import attack_registry, defense_registry
    from benchmark.suite import SuiteConfig

    suite = suite or SuiteConfig(attack_common={"target": "sneaker"}, pretrain=None)
    return make_plan(suite, open_data(suite.data), list(attacks), ["none"], list(seeds), attack_registry(),
                     defense_registry(), tmp_path, detectors=list(detectors), detector_registry=REGISTRY)


def test_plan_has_one_detection_result_per_attack_detector_seed(tmp_path):
    plan = _plan(tmp_path, seeds=(0, 1))
    got = sorted((d.attack, d.detector, d.seed, d.kind) for d in plan.detections)
    assert got == sorted((a, det, s, "model" if det == "decree" else "sample")
                         for a in ("badnet", "blended") for det in ("dao", "decree") for s in (0, 1))
    dao = next(d for d in plan.detections if d.detector == "dao")
    node = plan.nodes[dao.detect_keys["poisoned"]]
    assert node.kind == "detect" and node.deps == (dao.stage_keys["pretrain"], dao.stage_keys["poison"],
                                                   dao.stage_keys["poison_train"])
    assert dao.result_path == tmp_path / "embedded" / "_detection" / "badnet" / "dao" / "seed-0.json"
    # model detectors: the clean models of a seed are scored once, shared by every attack's result
    decree = [d for d in plan.detections if d.detector == "decree" and d.seed == 0]
    assert decree[0].detect_keys["clean"] == decree[1].detect_keys["clean"]
    assert decree[0].detect_keys["clean_finetuned"] == decree[1].detect_keys["clean_finetuned"]
    assert decree[0].detect_keys["backdoored"] != decree[1].detect_keys["backdoored"]
    clean_ft = plan.nodes[decree[0].stage_keys["clean_train"]]
    assert clean_ft.kind == "train" and clean_ft.spec["clean"] and clean_ft.deps == (decree[0].stage_keys["pretrain"],)


def test_a_detector_setting_moves_only_that_detector_to_a_variant_folder(tmp_path):
    from benchmark.suite import SuiteConfig

    own = SuiteConfig(attack_common={"target": "sneaker"}, pretrain=None)
    changed = SuiteConfig(attack_common={"target": "sneaker"}, pretrain=None, detectors={"dao": {"k": 8}})
    base = {(d.attack, d.detector): d for d in _plan(tmp_path, suite=own).detections}
    from benchmark.data.sources import open_data
    from benchmark.plan import make_plan
    from benchmark.registry import attack_registry, defense_registry

    plan = make_plan(changed, open_data(changed.data), ["badnet", "blended"], ["none"], [0], attack_registry(),
                     defense_registry(), tmp_path, own=own, detectors=["dao", "decree"], detector_registry=REGISTRY)
    for d in plan.detections:
        if d.detector == "dao":
            assert d.variant.startswith("embedded~detectors.dao.k=8") and d.cell_key != base[d.attack, "dao"].cell_key
        else:
            assert d.variant == "embedded" and d.cell_key == base[d.attack, d.detector].cell_key


# --------------------------------------------------------------------- detect and retrain
def test_detect_and_retrain_drops_the_top_scored_pairs_and_retrains_from_the_clean_start(monkeypatch):
    import defenses.detect_and_retrain as dar
    from benchmark.api import SampleDetector
    from benchmark.detector_checks import _micro_model, poisoned_pairs
    from benchmark.stages import apply_defense
    from benchmark.train import TrainConfig

    class OracleDetector(SampleDetector):
        name = "oracle"
        paper = "test"

        def score(self, model, data, ctx):
            return data.poisoned.numpy().astype(float)

    monkeypatch.setattr(dar, "make_detector", lambda name, config, seed: OracleDetector(seed=seed))
    data = poisoned_pairs(per_class=10)  # 100 pairs, 5 poisoned
    defense = dar.DetectAndRetrain(dar.DetectAndRetrainConfig(drop_fraction=0.1), seed=0)
    seen = {}
    original = dar.DetectAndRetrain.training_data

    def spy(self, d, ctx):
        kept = original(self, d, ctx)
        seen["kept"] = kept
        return kept

    monkeypatch.setattr(dar.DetectAndRetrain, "training_data", spy)
    model = _micro_model()
    stats = apply_defense(defense, model, 0, class_names=data.class_names, poisoned=data,
                          schedule=TrainConfig(epochs=1, batch_size=20, lr=1e-3, warmup_steps=1),
                          poisoned_model=_micro_model)
    assert len(seen["kept"]) == 90 and not bool(seen["kept"].poisoned.any())  # all 5 poisoned among the 10 dropped
    assert stats.diagnostics["detect_and_retrain"] == {"detector": "dao", "dropped": 10, "kept": 90,
                                                       "dropped_poisoned": 5, "poisoned": 5, "kept_poisoned": 0}
    with pytest.raises(ValueError, match="reads the undefended poisoned model"):
        apply_defense(defense, _micro_model(), 0, class_names=data.class_names, poisoned=data,
                      schedule=TrainConfig(epochs=1, batch_size=20))


def test_detect_and_retrain_refuses_a_model_detector():
    import defenses.detect_and_retrain as dar
    from benchmark import DefenseContext
    from benchmark.detector_checks import poisoned_pairs

    defense = dar.DetectAndRetrain(dar.DetectAndRetrainConfig(detector="decree"))
    with pytest.raises(ValueError, match="needs a sample detector; 'decree' is a model detector"):
        defense.training_data(poisoned_pairs(), DefenseContext(("x",), 0))
    with pytest.raises(Exception, match="drop_fraction"):
        dar.DetectAndRetrainConfig(drop_fraction=1.0)


# ------------------------------------------------------------------------------ leaderboard
def _detection_file(root, attack, detector, seed, kind, **body):
    import json

    path = root / "embedded" / "_detection" / attack / detector / f"seed-{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema_version": 1, "kind": "detection", "status": "ok", "suite": "embedded", "seed": seed,
            "variant": {"name": "embedded", "settings": {}}, "attack": {"name": attack},
            "detector": {"name": detector, "kind": kind, "source": "builtin"}, "implanted": True, **body}
    path.write_text(json.dumps(data))


def test_leaderboard_detection_section(tmp_path):
    import csv

    from leaderboard.build import build_site
    from leaderboard.detection import model_rows
    from leaderboard.reader import read_detections

    rng = np.random.default_rng(0)
    for attack, shift in (("badnet", 4.0), ("blended", 0.0)):
        for seed in (0, 1):
            labels = rng.random(400) < 0.05
            m = detection_metrics(rng.normal(size=400) + shift * labels, labels, bootstrap=50, seed=seed)
            _detection_file(tmp_path, attack, "dao", seed, "sample", metrics=m, flagged={"precision": 0.5})
            # model scores: backdoored badnet models score high, blended ones as low as clean models
            _detection_file(tmp_path, attack, "decree", seed, "model",
                            models={"backdoored": {"score": 0.9 if attack == "badnet" else 0.1 + 0.05 * seed},
                                    "clean": {"score": 0.1}, "clean_finetuned": {"score": 0.12}})
    report = build_site(tmp_path)
    page = (tmp_path / "leaderboard" / "index.html").read_text()
    assert "Detection: <code>embedded</code>" in page and "AUROC over models" in page
    assert (tmp_path / "leaderboard" / "img").glob("*detection-heatmap.png")
    assert any(p.name.endswith("detection-roc.png") for p in report.files)
    rows = list(csv.DictReader((tmp_path / "leaderboard" / "detection.csv").open()))
    badnet = next(r for r in rows if r["kind"] == "sample" and r["attack"] == "badnet")
    assert float(badnet["auroc"]) > 0.95 and badnet["seeds"] == "2"
    blended = next(r for r in rows if r["kind"] == "sample" and r["attack"] == "blended")
    assert abs(float(blended["auroc"]) - 0.5) < 0.2
    results, _ = read_detections(tmp_path)
    models = {r["scope"]: r for r in model_rows(results)}
    # 4 clean models (2 seeds x clean, clean fine-tuned), counted once though every attack's file lists them
    assert models["all"]["clean"] == 4 and models["all"]["backdoored"] == 4
    assert models["badnet"]["auroc"] == 1.0  # 0.9 above every clean score
    # blended: 0.1 ties the clean 0.1 (half) and is below 0.12; 0.15 beats all four -> (0.5 + 0 + 1 + 1 ... ) / 8
    assert models["blended"]["auroc"] == pytest.approx((0.5 + 0 + 0.5 + 0 + 1 + 1 + 1 + 1) / 8)
    assert "## embedded: detection" in (tmp_path / "leaderboard" / "leaderboard.md").read_text()


def test_the_bootstrap_loop_computes_the_same_metrics_as_scikit_learn():
    from benchmark.detection import _curve_metrics, _point_metrics

    rng = np.random.default_rng(7)
    for n, rate in ((50, 0.2), (3000, 0.01)):
        labels = rng.random(n) < rate
        labels[0] = True
        for scores in (rng.normal(size=n) + labels, np.round(rng.normal(size=n), 1)):  # the second with ties
            a, b = _point_metrics(scores, labels, 0.01), _curve_metrics(scores, labels, 0.01)
            assert a == pytest.approx(b, abs=1e-12)


# ------------------------------------------------------------------- contracts and plugins
FAST = {"decree": {"steps": 20, "shadow_size": 40}}


@pytest.mark.parametrize("name", REGISTRY.names())
def test_detector_contract(name):
    from benchmark.detector_checks import check_detector

    cls = REGISTRY.get(name)
    check_detector(cls, cls.Config(**FAST.get(name, {})))


def readme_detector(tmp_path):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for block in text.split("```python\n")[1:]:
        code = block.split("```", 1)[0]
        if code.startswith("# my_detector.py"):
            path = tmp_path / "my_detector.py"
            path.write_text(code)
            return path
    raise AssertionError("the README's 'Add your own detector' has no '# my_detector.py' example")


def test_the_readme_plugin_detector_loads_lists_and_passes_the_contract(tmp_path, capsys):
    from benchmark.detector_checks import check_detector
    from benchmark.registry import all_registries

    path = readme_detector(tmp_path)
    _, _, detectors = all_registries([str(path)])
    cls = detectors.get("text_k_distance")
    assert detectors.entry("text_k_distance").source == f"local {path}"
    check_detector(cls)
    scores = check_detector(cls, cls.Config(k=5))
    # the 10 synthetic poisoned pairs share one caption: with k below 10, the example ranks them first
    from benchmark.detector_checks import poisoned_pairs

    assert detection_metrics(scores, poisoned_pairs().poisoned.numpy(), bootstrap=0)["auroc"] > 0.9


def test_check_detector_names_a_broken_rule():
    from benchmark import SampleDetector
    from benchmark.detector_checks import check_detector

    class Wrong(SampleDetector):
        name = "wrong"
        paper = "test"

        def score(self, model, data, ctx):
            return np.zeros(len(data) - 1)

    with pytest.raises(ValueError, match="shape"):
        check_detector(Wrong)

    class Random(SampleDetector):
        name = "unseeded"
        paper = "test"

        def score(self, model, data, ctx):
            return np.random.default_rng().random(len(data))

    with pytest.raises(AssertionError, match="seed every random draw"):
        check_detector(Random)

    class Mutating(SampleDetector):
        name = "mutating"
        paper = "test"

        def score(self, model, data, ctx):
            with torch.no_grad():
                model.logit_scale.add_(1)
            return np.zeros(len(data))

    with pytest.raises(AssertionError, match="changed the model"):
        check_detector(Mutating)


# ---------------------------------------------------------------------------- end to end
QUICK = ["data.fraction=0.03", "poison_train.epochs=1", "poison_train.batch_size=64", "poison_train.warmup_steps=2",
         "attack_common.poison_rate=0.05", "eval.batch_size=500", "detectors.decree.steps=15",
         "detectors.decree.shadow_size=40"]


def _run(tmp_path, *extra, sets=QUICK):
    from benchmark.cli import main

    args = ["run", "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--quiet",
            "--no-leaderboard", "--executor", "local", *extra]
    for s in sets:
        args += ["--set", s]
    return main(args)


@pytest.mark.slow
def test_cli_runs_detectors_beside_defenses_and_resumes(tmp_path, capsys):
    import json

    from benchmark.detect_results import ground_truth

    assert _run(tmp_path, "--attack", "badnet", "--defense", "none,detect_and_retrain", "--detector", "dao,decree") == 0
    out = capsys.readouterr().out
    assert "sample detection" in out and "model detection (decree)" in out
    files = sorted((tmp_path / "results").glob("*/_detection/badnet/*/seed-0.json"), key=lambda f: f.parent.name)
    assert [f.parent.name for f in files] == ["dao", "decree"]
    # --set detectors.decree.* changes decree's configuration only: dao's result is the suite's own
    assert files[0].parts[-5] != files[1].parts[-5]
    assert "detectors.decree.steps" in json.loads(files[1].read_text())["variant"]["settings"]
    dao = json.loads(files[0].read_text())
    assert dao["kind"] == "detection" and dao["status"] == "ok" and dao["detector"]["kind"] == "sample"
    manifest = json.loads(__import__("benchmark.cache", fromlist=["resolve_ref"]).resolve_ref(
        dao["poison"]["manifest"], tmp_path / "cache").read_text())
    assert dao["metrics"]["counts"]["positives"] == manifest["num_poisoned"] == int(ground_truth(manifest).sum())
    assert 0 <= dao["metrics"]["auroc"] <= 1 and len(dao["metrics"]["intervals"]["auroc"]) == 2
    decree = json.loads(files[1].read_text())
    assert set(decree["models"]) == {"backdoored", "clean", "clean_finetuned"}
    # the cell files are not mistaken for detection files, nor the other way round
    from benchmark.results import iter_detection_results, iter_results

    cells = list(iter_results(tmp_path / "results"))
    assert sorted(c["defense"]["name"] for c in cells) == ["detect_and_retrain", "none"]
    retrain = next(c for c in cells if c["defense"]["name"] == "detect_and_retrain")
    assert retrain["diagnostics"]["detect_and_retrain"]["dropped"] == math.ceil(0.05 * manifest["num_samples"] - 1e-9)
    assert len(list(iter_detection_results(tmp_path / "results"))) == 2
    # a rerun computes nothing
    assert _run(tmp_path, "--attack", "badnet", "--defense", "none,detect_and_retrain", "--detector", "dao,decree") == 0
    out = capsys.readouterr().out
    assert "0 computed" in out and "2 detection result(s): 0 computed" in out


def test_cli_refuses_an_unknown_detector(tmp_path, capsys):
    assert _run(tmp_path, "--attack", "badnet", "--detector", "daoo") == 2
    err = capsys.readouterr().err
    assert "unknown detector 'daoo'" in err and "did you mean 'dao'" in err


def test_clipbench_list_shows_the_detectors(capsys):
    from benchmark.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "detectors" in out and "decree" in out and "CVPR 2023" in out and "│ model" in out
