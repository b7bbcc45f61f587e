"""A realistic synthetic results tree for the leaderboard tests (no training involved).

4 attacks x 5 defenses x 3
seeds, in the documented schema-1 layout, with: a plugin-sourced defense that misses an
attack entirely and whose every seed of another attack failed, one failed seed in an
otherwise finished cell, and a training-stage defense. Metrics are drawn from a seeded
generator, so the tree is the same on every call.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

ATTACKS = {  # name -> (family written into results or None, undefended ASR, clean-model ASR)
    "badnet": ("patch", 0.96, 0.004),
    "blended": ("blend", 0.99, 0.001),
    "wanet": ("warp", 0.72, 0.010),
    "label_consistent": ("clean_label", 0.62, 0.003),
}
PLUGIN = "tidy_plugin"
DEFENSES = {  # name -> (stage, source, ASR multiplier, CA change)
    "none": ("none", "builtin", 1.0, 0.0),
    "finetune": ("post_training", "builtin", 0.85, -0.004),
    "cleanclip": ("post_training", "builtin", 0.06, -0.021),
    "roclip": ("training", "builtin", 0.30, -0.045),
    PLUGIN: ("post_training", "plugin clipbench-tidy 0.1.0", 0.15, -0.012),
}
SEEDS = (0, 1, 2)
MISSING = {("wanet", PLUGIN)}  # never run
ALL_FAILED = {("label_consistent", PLUGIN)}  # every seed failed
ONE_FAILED = {("blended", "roclip", 1)}  # one seed failed, others fine
N_CLEAN, N_TRIGGERED = 5000, 4500


def wilson(p: float, n: int, z: float = 1.959964) -> list[float]:
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _block(rng: random.Random, ca: float, asr: float, ra: float) -> dict[str, Any]:
    ca = round(min(1.0, max(0.0, ca)) * N_CLEAN) / N_CLEAN
    asr = round(min(1.0, max(0.0, asr)) * N_TRIGGERED) / N_TRIGGERED
    ra = round(min(1.0 - asr, max(0.0, ra)) * N_TRIGGERED) / N_TRIGGERED
    return {"clean_accuracy": ca, "asr": asr, "ra": ra,
            "asr_at_k": {"1": asr, "5": min(1.0, asr + 0.2 * (1 - asr) + rng.random() * 0.01)},
            "intervals": {"clean_accuracy": wilson(ca, N_CLEAN), "asr": wilson(asr, N_TRIGGERED),
                          "ra": wilson(ra, N_TRIGGERED)},
            "counts": {"clean": N_CLEAN, "triggered": N_TRIGGERED}}


def der(asr_bd: float, asr_def: float, ca_bd: float, ca_def: float) -> float:
    return (max(0.0, asr_bd - asr_def) - max(0.0, ca_bd - ca_def) + 1) / 2


def cell(attack: str, defense: str, seed: int, *, failed: bool = False, defense_name: str | None = None,
         suite: str = "embedded") -> dict[str, Any]:
    """One cell's result dict (the schema of benchmark/results.py)."""
    family, base_asr, floor = ATTACKS[attack]
    stage, source, mult, dca = DEFENSES[defense]
    rng = random.Random(f"{suite}/{attack}/{defense}/{seed}")
    attack_block: dict[str, Any] = {"name": attack, "source": "builtin",
                                    "config": {"poison_rate": 0.01, "target": "sneaker", "seed_note": seed}}
    if family is not None:
        attack_block["family"] = family
    result: dict[str, Any] = {
        "schema_version": 1, "status": "failed" if failed else "ok", "suite": suite, "seed": seed,
        "model": {"arch": "clipbench-tiny-rn", "pretrained": None},
        "attack": attack_block,
        "defense": {"name": defense_name or defense, "source": source, "stage": stage,
                    "config": {} if stage == "none" else {"train": {"epochs": 10, "lr": 5e-4}, "<b>note</b>": "x"}},
        "config": {"seed": seed},
        "provenance": {"clipbench": "0.1.0", "git": "abc1234", "torch": "2.14.1", "open_clip": "3.3.0",
                       "python": "3.11.7", "config_hash": f"sha256:{seed:064d}", "cell_key": f"sha256:{seed:064x}",
                       "created": f"2026-11-2{seed}T10:00:00+00:00"},
        "error": None,
    }
    if failed:
        result["error"] = {"type": "RuntimeError", "message": f"synthetic failure of {defense} seed {seed}",
                           "traceback": "Traceback (most recent call last):\n  ...\nRuntimeError"}
        return result
    base_rng = random.Random(f"{suite}/{attack}/base/{seed}")
    b_ca = 0.862 + base_rng.gauss(0, 0.004)
    b_asr = base_asr + base_rng.gauss(0, 0.01)
    baseline = _block(base_rng, b_ca, b_asr, 0.86 * (1 - b_asr))
    clean_model = _block(base_rng, 0.884 + base_rng.gauss(0, 0.002), floor, 0.86)
    if stage == "none":
        metrics = json.loads(json.dumps(baseline))
    else:
        m_asr = b_asr * mult + rng.gauss(0, 0.01)
        metrics = _block(rng, b_ca + dca + rng.gauss(0, 0.003), m_asr, 0.85 * (1 - max(0.0, m_asr)))
    timings = {"pretrain": 89.4, "poison": 0.05, "poison_train": 33.2 + (40.0 if stage == "training" else 0.0),
               "evaluate": 2.3}
    if stage == "post_training":
        timings["defense"] = round(30.0 + 10 * mult + seed, 3)
    result.update({
        "metrics": metrics, "baseline": baseline, "clean_model": clean_model,
        "der": der(baseline["asr"], metrics["asr"], baseline["clean_accuracy"], metrics["clean_accuracy"]),
        "poison": {"num_poisoned": 80, "manifest": f"/cache/poison/{attack}-{seed}/manifest.json"},
        "timings_s": timings,
    })
    return result


def write_tree(root: Path, *, suite: str = "embedded") -> Path:
    """Write the synthetic matrix under ``root`` (a results directory); returns ``root``."""
    for attack in ATTACKS:
        for defense in DEFENSES:
            if (attack, defense) in MISSING:
                continue
            for seed in SEEDS:
                failed = (attack, defense) in ALL_FAILED or (attack, defense, seed) in ONE_FAILED
                path = Path(root) / suite / attack / defense / f"seed-{seed}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(cell(attack, defense, seed, failed=failed), indent=1, sort_keys=True))
    return Path(root)


if __name__ == "__main__":  # python tests/leaderboard_data.py DIR: a tree to look at
    import sys

    print(write_tree(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/leaderboard/results")))
