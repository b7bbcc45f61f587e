"""The cell result schema (a documented JSON contract), atomic IO and aggregation.

One JSON file per cell: ``<results_dir>/<suite>/<attack>/<defense>/seed-<k>.json``.
The leaderboard reads only these files. Fractions are numbers in [0, 1]; percent only on
display. Schema (version 1)::

    schema_version, status ("ok" | "failed"), suite, seed,
    model {arch, pretrained},
    attack {name, source, config, family, paper},
    defense {name, source, stage, config, paper,
             schedule (null for none-stage defenses, or {source, train, method_default,
                       overridden {field: [method default, used]}}),
             training (absent for none-stage defenses: {stage, steps, loss_per_epoch,
                       parts {name: [per-epoch mean of LossOutput.parts[name]]}})},
    metrics {clean_accuracy, asr, ra, asr_at_k{k: frac}, intervals{name: [lo, hi]}, counts},
    baseline  (the undefended model on the same poisoned set: same metric keys),
    clean_model {clean_accuracy, asr, ...}  (the clean pre-trained model, trigger applied),
    der, implanted (the undefended ASR reached IMPLANTED_ASR: the backdoor was implanted;
    the leaderboard leaves attacks that were not out of defense means),
    poison {num_poisoned, manifest (path; the manifest holds poison_rate_actual)},
    timings_s {pretrain, poison, poison_train, defense (post-training defenses only), evaluate},
    provenance {clipbench, git, torch, open_clip, python, config_hash, cell_key, created},
    error (null, or {type, message, traceback})
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from .cache import atomic_write_text

SCHEMA_VERSION = 1
#: undefended ASR from which a backdoor counts as implanted (below it there is nothing for a
#: defense to remove, so a defense's ASR on that attack says nothing about the defense)
IMPLANTED_ASR = 0.5


def cell_path(results_dir: Path, suite: str, attack: str, defense: str, seed: int) -> Path:
    return Path(results_dir) / suite / attack / defense / f"seed-{seed}.json"


def write_result(path: Path, result: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(result, indent=1, sort_keys=True) + "\n")


def read_result(path: Path) -> dict[str, Any] | None:
    """A cell result, or None when missing, unreadable or of another schema."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        return None
    return data


def iter_results(results_dir: Path) -> Iterable[dict[str, Any]]:
    for path in sorted(Path(results_dir).rglob("seed-*.json")):
        data = read_result(path)
        if data is not None:
            yield data


def to_frame(results: Iterable[dict[str, Any]]):
    """One row per cell: suite, attack, defense, seed, status and the headline metrics."""
    import pandas as pd

    rows = []
    for r in results:
        m = r.get("metrics") or {}
        b = r.get("baseline") or {}
        rows.append({
            "suite": r.get("suite"), "attack": r["attack"]["name"], "defense": r["defense"]["name"],
            "seed": r.get("seed"), "status": r.get("status"),
            "ca": m.get("clean_accuracy"), "asr": m.get("asr"), "ra": m.get("ra"),
            "baseline_ca": b.get("clean_accuracy"), "baseline_asr": b.get("asr"),
            "clean_model_asr": (r.get("clean_model") or {}).get("asr"), "der": r.get("der"),
        })
    return pd.DataFrame(rows)


def aggregate_seeds(frame, metrics: tuple[str, ...] = ("ca", "asr", "ra", "der"), confidence: float = 0.95):
    """Across seeds, per (suite, attack, defense): ``n``, and per metric mean, sample std
    (ddof=1) and a Student-t ``confidence`` interval of the mean, clipped to [0, 1] (NaN
    with one seed).

    Only ``ok`` cells count. ``frame`` is :func:`to_frame`'s output.
    """
    import numpy as np
    import pandas as pd
    from scipy import stats

    ok = frame[frame.status == "ok"]
    rows = []
    for (suite, attack, defense), g in ok.groupby(["suite", "attack", "defense"], sort=False, dropna=False):
        row: dict[str, Any] = {"suite": suite, "attack": attack, "defense": defense, "n": int(g.seed.nunique())}
        for m in metrics:
            v = g[m].dropna().astype(float).to_numpy()
            mean = float(v.mean()) if len(v) else float("nan")
            std = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * std / np.sqrt(len(v))) if len(v) > 1 else float("nan")
            lo, hi = max(0.0, mean - half), min(1.0, mean + half)  # rates and DER live in [0, 1]
            row.update({f"{m}_mean": mean, f"{m}_std": std, f"{m}_ci_low": lo, f"{m}_ci_high": hi})
        rows.append(row)
    return pd.DataFrame(rows)
