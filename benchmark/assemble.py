"""A cell's result record, assembled from the cache: metrics, diagnostics, training, provenance.

:func:`assemble` builds what :func:`benchmark.results.write_result` stores for one cell:
its configuration (suite, attack, defense, seed), the metrics of the defended, the
undefended (baseline) and the clean model, DER, the defense's mechanism diagnostics and
training record, the poisoned set's manifest, stage timings, and :func:`provenance`
(versions, git commit, config hash, cell key), or the error of a failed cell.
"""
from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path
from typing import Any

from . import __version__
from .config import config_hash, to_dict
from .evaluate import der
from .plan import Cell, Plan
from .results import IMPLANTED_ASR, SCHEMA_VERSION
from .stages import StageExecutor


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _open_clip_version() -> str | None:
    """open_clip's version without importing it (the import takes ~6 s: torchvision, timm)."""
    import sys
    from importlib import metadata

    if "open_clip" in sys.modules:
        return sys.modules["open_clip"].__version__
    try:
        return metadata.version("open_clip_torch")
    except metadata.PackageNotFoundError:
        return None


def provenance(config_hash_: str, cell_key: str) -> dict[str, Any]:
    import torch

    return {"clipbench": __version__, "git": git_commit(), "torch": torch.__version__,
            "open_clip": _open_clip_version(), "python": platform.python_version(),
            "config_hash": config_hash_, "cell_key": cell_key,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _metrics_block(m: dict[str, Any]) -> dict[str, Any]:
    block = {k: m[k] for k in ("clean_accuracy", "asr", "ra", "asr_at_k", "intervals", "counts")}
    for k in ("attribute_accuracy", "target_cosine"):  # absent from evaluations cached before they existed
        if m.get(k):
            block[k] = m[k]
    return block


def diagnostics(cell: Cell, plan: Plan, executor: StageExecutor, m: dict, b: dict, c: dict) -> dict[str, Any]:
    """The defense's mechanism, measured: the triggered images' cosine to the target class's
    text before (undefended) and after the defense, and what the defense's objective
    recorded (RoCLIP: per matching epoch, the poisoned images whose retrieved caption names
    the target class, i.e. comes from a poisoned pair or a clean target-class pair)."""
    out: dict[str, Any] = {}
    if m.get("target_cosine") and b.get("target_cosine"):
        out["target_cosine_triggered"] = {"clean_model": c.get("target_cosine", {}).get("triggered"),
                                          "before": b["target_cosine"]["triggered"],
                                          "after": m["target_cosine"]["triggered"]}
    key = cell.stage_keys.get("defense") or (cell.stage_keys["poison_train"] if cell.defense_stage == "training" else None)
    meta = executor.cache.meta("model", key) if key else None
    recorded = (meta or {}).get("train", {}).get("diagnostics") or {}
    target = plan.nodes[cell.eval_key].spec["target"]
    for entry in recorded.get("roclip_retrieval", []):
        n = entry["poisoned_images"]
        named = entry["retrieved_poisoned"] + entry["retrieved_label_counts"].get(str(target), 0)
        out.setdefault("roclip_retrieval", []).append({**entry, "fraction_naming_target": named / n if n else None})
    if isinstance(recorded.get("detect_and_retrain"), dict):  # what it dropped, and how much of it was poisoned
        out["detect_and_retrain"] = dict(recorded["detect_and_retrain"])
    return out


def defense_training(cell: Cell, executor: StageExecutor) -> dict[str, Any] | None:
    """What the defense's own training recorded: steps, the mean loss per epoch and the per-epoch
    means of every ``LossOutput.parts`` entry (None for ``none``-stage defenses)."""
    if cell.defense_stage == "post_training":
        key, stage = cell.stage_keys.get("defense"), "defense"
    elif cell.defense_stage == "training":
        key, stage = cell.stage_keys.get("poison_train"), "poison_train"
    else:
        return None
    meta = executor.cache.meta("model", key) if key else None
    train = (meta or {}).get("train")
    if not train:
        return None
    return {"stage": stage, "steps": train.get("steps"), "loss_per_epoch": train.get("loss_history"),
            "parts": train.get("parts") or {}}


def assemble(cell: Cell, plan: Plan, executor: StageExecutor, error: BaseException | None = None,
             tb: str | None = None) -> dict[str, Any]:
    suite = plan.suite
    config = {"suite": to_dict(suite), "attack": cell.attack_config, "defense": cell.defense_config, "seed": cell.seed}
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "status": "ok" if error is None else "failed", "suite": suite.name,
        "variant": {"name": cell.variant or suite.name, "settings": cell.variant_settings},
        "seed": cell.seed, "model": {"arch": suite.model.arch, "pretrained": suite.model.pretrained},
        "attack": {"name": cell.attack, "source": cell.attack_source, "config": cell.attack_config,
                   "family": cell.attack_family, "paper": cell.attack_paper},
        "defense": {"name": cell.defense, "source": cell.defense_source, "stage": cell.defense_stage, "config": cell.defense_config,
                    "paper": cell.defense_paper, "schedule": cell.defense_schedule},
        "config": config, "provenance": provenance(config_hash(config), cell.cell_key), "error": None,
    }
    if error is not None:
        result["error"] = {"type": type(error).__name__, "message": str(error), "traceback": tb}
        return result
    m, b, c = (executor.metrics(k) for k in (cell.eval_key, cell.baseline_key, cell.clean_key))
    result["metrics"] = _metrics_block(m)
    result["baseline"] = _metrics_block(b)
    result["clean_model"] = _metrics_block(c)
    result["der"] = der(b["asr"], m["asr"], b["clean_accuracy"], m["clean_accuracy"])
    result["implanted"] = bool(b["asr"] >= IMPLANTED_ASR)
    result["diagnostics"] = diagnostics(cell, plan, executor, m, b, c)
    training = defense_training(cell, executor)
    if training is not None:
        result["defense"]["training"] = training
    poison_meta = executor.cache.meta("poison", cell.stage_keys["poison"])
    result["poison"] = {"num_poisoned": poison_meta["num_poisoned"],
                        "manifest": executor.cache.ref("poison", cell.stage_keys["poison"], "manifest.json")}
    timings = {}
    kinds = {"pretrain": "model", "poison": "poison", "poison_train": "model", "defense": "model"}
    for stage, key in cell.stage_keys.items():
        meta = executor.cache.meta(kinds[stage], key)  # None: an upstream entry was removed (corrupt) after use
        timings[stage] = round(meta["seconds"], 3) if meta else None
    timings["evaluate"] = round(executor.cache.meta("eval", cell.eval_key)["seconds"], 3)
    result["timings_s"] = timings
    return result
