"""Detection results: one JSON file per (attack, detector, seed), assembled from cached detect stages.

``<results_dir>/<folder>/_detection/<attack>/<detector>/seed-<k>.json`` (see
:func:`benchmark.results.detection_path`), schema version 1 like the cells, ``"kind":
"detection"``::

    schema_version, kind ("detection"), status ("ok" | "failed"), suite, seed,
    variant {name, settings}, model {arch, pretrained},
    attack {name, source, config, family, paper, clean_label},
    detector {name, source, kind ("sample" | "model"), config, paper},
    baseline {clean_accuracy, asr}   (the undefended backdoored model; implanted: asr >= 0.5),
    implanted,
    sample detectors:
      metrics {auroc, auprc, tpr_at_fpr, fpr, intervals {name: [lo, hi]}, counts {positives,
               negatives}, prevalence, bootstrap {resamples, seed, confidence, stratified},
               roc {fpr: [...], tpr: [...]}}   (against the poison manifest's indices),
      flagged {fraction: 0.01, count, poisoned, precision, recall}   (the top-scored 1%),
      score_means {poisoned, clean},
      diagnostics (what the detector recorded),
    model detectors:
      models {backdoored | clean | clean_finetuned: {score, diagnostics}}
      (AUROC over models is computed over every such file of a folder and detector: the
      leaderboard's detection section and ``clipbench run``'s table),
    poison {num_poisoned, manifest}, timings_s {detect}, provenance {...}, error.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .results import IMPLANTED_ASR, SCHEMA_VERSION

#: the top-scored fraction whose precision and recall each sample-detection result records
FLAG_FRACTION = 0.01
BOOTSTRAP = 1000


def ground_truth(manifest: dict[str, Any]) -> np.ndarray:
    """Boolean (N,) labels of a poison manifest: the poisoned pairs (``indices``). WaNet's
    noise-mode pairs (``cross_indices``) keep their captions and count as clean."""
    labels = np.zeros(int(manifest["num_samples"]), dtype=bool)
    labels[np.asarray(manifest["indices"], dtype=np.int64)] = True
    return labels


def sample_block(scores: np.ndarray, labels: np.ndarray, seed: int, bootstrap: int = BOOTSTRAP) -> dict[str, Any]:
    """The metrics, the flagged top 1% and the score means of one sample detector's scores."""
    from .detection import detection_metrics, top_fraction

    flagged = top_fraction(scores, FLAG_FRACTION)
    hits = int(labels[flagged].sum())
    return {
        "metrics": detection_metrics(scores, labels, bootstrap=bootstrap, seed=seed),
        "flagged": {"fraction": FLAG_FRACTION, "count": int(len(flagged)), "poisoned": hits,
                    "precision": hits / len(flagged) if len(flagged) else None,
                    "recall": hits / int(labels.sum()) if labels.any() else None},
        "score_means": {"poisoned": float(scores[labels].mean()), "clean": float(scores[~labels].mean())},
    }


def assemble_detection(cell, plan, executor, error: BaseException | None = None, tb: str | None = None) -> dict[str, Any]:
    """The result record of a :class:`~benchmark.plan.DetectionCell` (see the module docstring)."""
    from .config import config_hash, to_dict

    suite = plan.suite
    config = {"suite": to_dict(suite), "attack": cell.attack_config, "detector": cell.detector_config, "seed": cell.seed}
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "kind": "detection", "status": "ok" if error is None else "failed",
        "suite": suite.name, "variant": {"name": cell.variant or suite.name, "settings": cell.variant_settings},
        "seed": cell.seed, "model": {"arch": suite.model.arch, "pretrained": suite.model.pretrained},
        "attack": {"name": cell.attack, "source": cell.attack_source, "config": cell.attack_config,
                   "family": cell.attack_family, "paper": cell.attack_paper, "clean_label": cell.attack_clean_label},
        "detector": {"name": cell.detector, "source": cell.detector_source, "kind": cell.kind,
                     "config": cell.detector_config, "paper": cell.detector_paper},
        "config": config, "provenance": _provenance(config_hash(config), cell.cell_key), "error": None,
    }
    if error is not None:
        result["error"] = {"type": type(error).__name__, "message": str(error), "traceback": tb}
        return result
    baseline_key = cell.stage_keys.get("baseline_eval")
    if baseline_key and executor.cache.has("eval", baseline_key):
        b = executor.metrics(baseline_key)
        result["baseline"] = {"clean_accuracy": b["clean_accuracy"], "asr": b["asr"]}
        result["implanted"] = bool(b["asr"] >= IMPLANTED_ASR)
    poison_key = cell.stage_keys["poison"]
    manifest = executor.cache.json("poison", poison_key, "manifest.json")
    result["poison"] = {"num_poisoned": manifest["num_poisoned"],
                        "manifest": executor.cache.ref("poison", poison_key, "manifest.json")}
    outputs = {role: executor.detect_output(key) for role, key in cell.detect_keys.items()}
    if cell.kind == "sample":
        out = outputs["poisoned"]
        result.update(sample_block(out["scores"], ground_truth(manifest), cell.seed))
        result["diagnostics"] = out["diagnostics"]
    else:
        result["models"] = {role: {"score": out["score"], "diagnostics": out["diagnostics"]}
                            for role, out in outputs.items()}
    result["timings_s"] = {"detect": {role: round(out["seconds"], 3) if out.get("seconds") is not None else None
                                      for role, out in outputs.items()}}
    return result


def _provenance(config_hash_: str, cell_key: str) -> dict[str, Any]:
    from .runner import provenance

    return provenance(config_hash_, cell_key)


def model_scores(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct models that ``ok`` model-detection results of one detector scored:
    ``{"seed", "role", "attack" (None for clean models), "score", "backdoored"}``; a seed's clean
    models appear in every attack's file and are counted once."""
    seen: dict[tuple, dict[str, Any]] = {}
    for r in results:
        if r.get("status") != "ok" or not isinstance(r.get("models"), dict):
            continue
        for role, entry in r["models"].items():
            attack = r["attack"]["name"] if role == "backdoored" else None
            seen.setdefault((r.get("seed"), role, attack), {
                "seed": r.get("seed"), "role": role, "attack": attack, "score": float(entry["score"]),
                "backdoored": role == "backdoored"})
    return sorted(seen.values(), key=lambda m: (str(m["attack"]), m["role"], m["seed"]))


def model_detection_summary(results: list[dict[str, Any]], seed: int = 0) -> dict[str, Any] | None:
    """AUROC (with bootstrap intervals) over every model one detector scored, all attacks together
    and per attack (that attack's backdoored models against every clean one); None without both kinds."""
    from .detection import detection_metrics

    models = model_scores(results)
    labels = np.array([m["backdoored"] for m in models], dtype=bool)
    if not labels.any() or labels.all():
        return None
    scores = np.array([m["score"] for m in models])
    out = {"all": detection_metrics(scores, labels, bootstrap=BOOTSTRAP, seed=seed), "per_attack": {}, "models": models}
    for attack in sorted({m["attack"] for m in models if m["attack"]}):
        keep = np.array([m["attack"] in (attack, None) for m in models])
        out["per_attack"][attack] = detection_metrics(scores[keep], labels[keep], bootstrap=BOOTSTRAP, seed=seed)
    return out
