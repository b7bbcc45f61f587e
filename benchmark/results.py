"""The cell result schema (a documented JSON contract), atomic IO and aggregation.

One JSON file per cell: ``<results_dir>/<folder>/<attack>/<defense>/seed-<k>.json``, where
``<folder>`` is the suite's name for the suite's own configuration and a *variant* name
for any other (:func:`variant_name`: ``embedded~attacks.badnet.pattern=noise-3f2a1c``), so a
result of one configuration never replaces or averages with another's. The leaderboard
reads only these files. Fractions are numbers in [0, 1]; percent only on
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
    variant {name (the folder), settings {dotted key: value}: where the cell's configuration
             differs from the suite's own; {} for the suite's own configuration},
    error (null, or {type, message, traceback})

Detection results (one per attack x detector x seed) are their own files,
``<results_dir>/<folder>/_detection/<attack>/<detector>/seed-<k>.json`` (``_detection`` can be
no attack's name), ``"kind": "detection"``, same schema version; :func:`iter_results` and the
leaderboard's cell reader skip them (see :mod:`benchmark.detect_results` for their schema).

``poison.manifest`` is relative to the stage cache: ``cache:poison/<key>/manifest.json``
(:func:`benchmark.cache.resolve_ref` turns it into a path under a cache root).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from .cache import atomic_write_text

SCHEMA_VERSION = 1
#: undefended ASR from which a backdoor counts as implanted (below it there is nothing for a
#: defense to remove, so a defense's ASR on that attack says nothing about the defense)
IMPLANTED_ASR = 0.5
RESULTS_ENV = "CLIPBENCH_RESULTS"
#: suite sections that change every cell's result (attacks.*/defenses.* enter through the
#: cell's resolved method configs; cost, description and device change no number)
IDENTITY_SECTIONS = ("model", "data", "pretrain", "poison_train", "eval")
VARIANT_SEP = "~"
_MAX_READABLE = 72


def default_results_dir() -> Path:
    """Where ``clipbench run`` writes when ``--results-dir`` is not given: ``$CLIPBENCH_RESULTS``,
    else ``$XDG_DATA_HOME/clipbench/results`` (``~/.local/share/clipbench/results``). The
    repository's committed ``results/`` is written only when asked (``--results-dir results``)."""
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "clipbench" / "results"


DETECTION_DIR = "_detection"


def detection_path(results_dir: Path, folder: str, attack: str, detector: str, seed: int) -> Path:
    """``<results_dir>/<folder>/_detection/<attack>/<detector>/seed-<k>.json``: one detection result."""
    return Path(results_dir) / folder / DETECTION_DIR / attack / detector / f"seed-{seed}.json"


def is_detection(result: dict[str, Any]) -> bool:
    """Whether a result file's content is a detection result (not an attack x defense cell)."""
    return result.get("kind") == "detection"


def detection_identity(suite: dict[str, Any], attack: str, attack_config: dict[str, Any], detector: str,
                       detector_config: dict[str, Any]) -> dict[str, Any]:
    """:func:`cell_identity` of a detection result: the suite's sections, the attack's and the
    detector's resolved configs (``detectors.<name>.<key>``)."""
    return _identity(suite, attack, attack_config, f"detectors.{detector}", detector_config)


def cell_path(results_dir: Path, folder: str, attack: str, defense: str, seed: int) -> Path:
    """``<results_dir>/<folder>/<attack>/<defense>/seed-<k>.json``; ``folder``: the suite's name or a variant name."""
    return Path(results_dir) / folder / attack / defense / f"seed-{seed}.json"


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k in sorted(value):
            _flatten(value[k], f"{prefix}.{k}", out)
    else:
        out[prefix] = value


def cell_identity(suite: dict[str, Any], attack: str, attack_config: dict[str, Any], defense: str,
                  defense_config: dict[str, Any]) -> dict[str, Any]:
    """Every setting that can change one cell's numbers, flat (``"attacks.badnet.pattern": "noise"``):
    the suite's :data:`IDENTITY_SECTIONS` and the cell's resolved attack and defense configs.
    ``suite`` is a suite as a plain mapping (``to_dict(suite)``, or a result's ``config.suite``)."""
    return _identity(suite, attack, attack_config, f"defenses.{defense}", defense_config)


def _identity(suite: dict[str, Any], attack: str, attack_config: dict[str, Any], method_prefix: str,
              method_config: dict[str, Any]) -> dict[str, Any]:
    """The suite's :data:`IDENTITY_SECTIONS`, the attack's config and one method's config, flat."""
    flat: dict[str, Any] = {}
    for section in IDENTITY_SECTIONS:
        _flatten(suite.get(section), section, flat)
    _flatten(attack_config or {}, f"attacks.{attack}", flat)
    _flatten(method_config or {}, method_prefix, flat)
    return flat


def variant_settings(own: dict[str, Any], this: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``this`` cell identity that differ from the suite's ``own`` (absent: None)."""
    keys = sorted(set(own) | set(this))
    return {k: this.get(k) for k in keys if _canon(own.get(k)) != _canon(this.get(k))}


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else _canon(value)


def variant_name(suite: str, settings: dict[str, Any]) -> str:
    """The results folder of a configuration: ``suite`` itself for the suite's own (no settings
    differ), else ``<suite>~<key=value,...>-<hash>``: the differing settings, readable (characters
    other than letters, digits and ``._,=+-`` become ``_``; cut after 72 characters) and the first
    6 hex digits of the SHA-256 of all of them, which tells variants apart."""
    if not settings:
        return suite
    digest = hashlib.sha256(_canon(settings).encode()).hexdigest()[:6]
    parts = [re.sub(r"[^A-Za-z0-9._=+-]", "_", f"{k}={_show(v)}") for k, v in settings.items()]
    readable, shown = "", 0
    for part in parts:
        candidate = f"{readable},{part}" if readable else part
        if len(candidate) > _MAX_READABLE and readable:
            break
        readable, shown = candidate[:_MAX_READABLE], shown + 1
    if shown < len(parts):
        readable += f",+{len(parts) - shown}"
    return f"{suite}{VARIANT_SEP}{readable}-{digest}"


def result_identity(result: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`cell_identity` of a written result (from its recorded ``config``), or None without one."""
    config = result.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("suite"), dict):
        return None
    try:
        return cell_identity(config["suite"], result["attack"]["name"], config.get("attack") or {},
                             result["defense"]["name"], config.get("defense") or {})
    except (KeyError, TypeError):
        return None


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
    """Every attack x defense cell result under ``results_dir`` (detection results excluded)."""
    for path in sorted(Path(results_dir).rglob("seed-*.json")):
        data = read_result(path)
        if data is not None and not is_detection(data):
            yield data


def iter_detection_results(results_dir: Path) -> Iterable[dict[str, Any]]:
    """Every detection result under ``results_dir`` (``<folder>/_detection/...``)."""
    for path in sorted(Path(results_dir).glob(f"*/{DETECTION_DIR}/*/*/seed-*.json")):
        data = read_result(path)
        if data is not None and is_detection(data):
            yield data


def to_frame(results: Iterable[dict[str, Any]]):
    """One row per cell: suite, attack, defense, seed, status and the headline metrics."""
    import pandas as pd

    rows = []
    for r in results:
        m = r.get("metrics") or {}
        b = r.get("baseline") or {}
        rows.append({
            "suite": r.get("suite"), "variant": (r.get("variant") or {}).get("name") or r.get("suite"),
            "attack": r["attack"]["name"], "defense": r["defense"]["name"],
            "seed": r.get("seed"), "status": r.get("status"),
            "ca": m.get("clean_accuracy"), "asr": m.get("asr"), "ra": m.get("ra"),
            "baseline_ca": b.get("clean_accuracy"), "baseline_asr": b.get("asr"),
            "clean_model_asr": (r.get("clean_model") or {}).get("asr"), "der": r.get("der"),
        })
    return pd.DataFrame(rows)


def aggregate_seeds(frame, metrics: tuple[str, ...] = ("ca", "asr", "ra", "der"), confidence: float = 0.95):
    """Across seeds, per (suite, variant, attack, defense), so only within one configuration: ``n``, and per metric mean, sample std
    (ddof=1) and a Student-t ``confidence`` interval of the mean, clipped to [0, 1] (NaN
    with one seed).

    Only ``ok`` cells count. ``frame`` is :func:`to_frame`'s output.
    """
    import numpy as np
    import pandas as pd
    from scipy import stats

    ok = frame[frame.status == "ok"]
    if "variant" not in ok:  # a frame built without it: one configuration per suite
        ok = ok.assign(variant=ok["suite"])
    rows = []
    for (suite, variant, attack, defense), g in ok.groupby(["suite", "variant", "attack", "defense"], sort=False,
                                                            dropna=False):
        row: dict[str, Any] = {"suite": suite, "variant": variant, "attack": attack, "defense": defense,
                               "n": int(g.seed.nunique())}
        for m in metrics:
            v = g[m].dropna().astype(float).to_numpy()
            mean = float(v.mean()) if len(v) else float("nan")
            std = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * std / np.sqrt(len(v))) if len(v) > 1 else float("nan")
            lo, hi = max(0.0, mean - half), min(1.0, mean + half)  # rates and DER live in [0, 1]
            row.update({f"{m}_mean": mean, f"{m}_std": std, f"{m}_ci_low": lo, f"{m}_ci_high": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def find_cell(results_dir: Path, attack: str, defense: str, seed: int = 0, suite: str = "embedded") -> Path:
    """The result file of one cell of ``suite`` whatever its configuration folder (the suite's own
    or a variant), when there is exactly one; else ``LookupError`` naming what was found."""
    root = Path(results_dir)
    found = [p for folder in [root / suite, *sorted(root.glob(f"{suite}{VARIANT_SEP}*"))]
             if (p := folder / attack / defense / f"seed-{seed}.json").exists()]
    if len(found) != 1:
        raise LookupError(f"{len(found)} result files of {suite}/{attack}/{defense} seed {seed} under {root}: "
                          f"{[str(p) for p in found]}")
    return found[0]
