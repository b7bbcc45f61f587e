"""Read cell result files (the documented JSON contract of ``benchmark/results.py``).

The leaderboard depends on the result files only, never on the engine: this is its own
small reader. Files are ``<results_dir>/<folder>/<attack>/<defense>/seed-<k>.json``, where
``<folder>`` is the suite's name for its own configuration, or a variant
(``<suite>~<settings>-<hash>``) for any other; files of another schema version, or that do
not parse, are skipped and reported.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
VARIANT_SEP = "~"
#: the suite sections that change every cell's numbers (as benchmark.results.IDENTITY_SECTIONS)
IDENTITY_SECTIONS = ("model", "data", "pretrain", "poison_train", "eval")

@dataclass(frozen=True)
class CellResult:
    """One seed of one attack x defense cell, as read from its JSON file."""

    path: str  # relative to the results directory, POSIX separators
    suite: str
    attack: str
    defense: str
    seed: int
    status: str
    data: dict[str, Any] = field(repr=False, compare=False)
    variant: str = ""  # the configuration's folder: the suite's name, or <suite>~<settings>-<hash>

    @property
    def settings(self) -> dict[str, Any]:
        """Where this result's configuration differs from the suite's own ({} for the suite's own)."""
        block = self.data.get("variant")
        return dict(block.get("settings") or {}) if isinstance(block, dict) else {}

    @property
    def fingerprint(self) -> str:
        """A digest of every recorded setting that can change this cell's numbers, seed excluded:
        seeds are averaged only when it agrees."""
        config = self.data.get("config") or {}
        suite = config.get("suite") if isinstance(config.get("suite"), dict) else {}
        ident = {"suite": {k: suite.get(k) for k in IDENTITY_SECTIONS}, "attack": config.get("attack"),
                 "defense": config.get("defense")}
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def attack_family(self) -> str:
        return attack_family(self.data.get("attack") or {})

    @property
    def attack_source(self) -> str:
        return str((self.data.get("attack") or {}).get("source") or "unknown")

    @property
    def defense_source(self) -> str:
        return str((self.data.get("defense") or {}).get("source") or "unknown")

    @property
    def defense_stage(self) -> str:
        return str((self.data.get("defense") or {}).get("stage") or "unknown")

    def metric(self, block: str, name: str) -> float | None:
        """``block`` is metrics, baseline or clean_model; None when absent (failed cell)."""
        value = (self.data.get(block) or {}).get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def attack_family(attack: dict[str, Any]) -> str:
    """The result's ``attack.family`` (written from the attack class's ``family``), else ``other``."""
    family = attack.get("family") or (attack.get("config") or {}).get("family")
    return family if isinstance(family, str) and family else "other"


def origin(source: str) -> str:
    """``builtin`` for built-in methods, ``plugin`` for everything else (entry points, explicit)."""
    return "builtin" if source == "builtin" else "plugin"


@dataclass
class ReadReport:
    cells: list[CellResult]
    skipped: list[str]  # "path: reason"


def read_results(results_dir: Path) -> ReadReport:
    """All readable schema-1 cell results under ``results_dir``, in a stable order."""
    root = Path(results_dir)
    cells: list[CellResult] = []
    skipped: list[str] = []
    for path in sorted(root.rglob("seed-*.json")):
        rel = path.relative_to(root).as_posix()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            skipped.append(f"{rel}: unreadable ({exc})")
            continue
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            skipped.append(f"{rel}: not a schema-{SCHEMA_VERSION} cell result")
            continue
        if data.get("kind") == "detection":  # read by read_detections
            continue
        try:
            suite = str(data["suite"])
            recorded = data.get("variant") if isinstance(data.get("variant"), dict) else {}
            folder = rel.split("/", 1)[0]
            variant = str(recorded.get("name") or (folder if folder.startswith(suite + VARIANT_SEP) else suite))
            cells.append(CellResult(
                path=rel, suite=suite, attack=str(data["attack"]["name"]),
                defense=str(data["defense"]["name"]), seed=int(data["seed"]),
                status=str(data.get("status") or "failed"), data=data, variant=variant))
        except (KeyError, TypeError, ValueError) as exc:
            skipped.append(f"{rel}: missing field {exc}")
    cells.sort(key=lambda c: (c.suite, c.variant, c.attack, c.defense, c.seed, c.path))
    return ReadReport(cells, skipped)


@dataclass(frozen=True)
class DetectionResult:
    """One seed of one attack x detector result (``<folder>/_detection/<attack>/<detector>/seed-<k>.json``)."""

    path: str
    suite: str
    variant: str
    attack: str
    detector: str
    kind: str  # "sample" | "model"
    seed: int
    status: str
    data: dict[str, Any] = field(repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def detector_source(self) -> str:
        return str((self.data.get("detector") or {}).get("source") or "unknown")


def read_detections(results_dir: Path) -> tuple[list[DetectionResult], list[str]]:
    """All readable detection results under ``results_dir`` (stable order) and the skipped ones."""
    root = Path(results_dir)
    found: list[DetectionResult] = []
    skipped: list[str] = []
    for path in sorted(root.glob("*/_detection/*/*/seed-*.json")):
        rel = path.relative_to(root).as_posix()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION or data.get("kind") != "detection":
                skipped.append(f"{rel}: not a schema-{SCHEMA_VERSION} detection result")
                continue
            suite = str(data["suite"])
            recorded = data.get("variant") if isinstance(data.get("variant"), dict) else {}
            found.append(DetectionResult(
                path=rel, suite=suite, variant=str(recorded.get("name") or rel.split("/", 1)[0]),
                attack=str(data["attack"]["name"]), detector=str(data["detector"]["name"]),
                kind=str(data["detector"].get("kind") or "sample"), seed=int(data["seed"]),
                status=str(data.get("status") or "failed"), data=data))
        except (OSError, ValueError) as exc:
            skipped.append(f"{rel}: unreadable ({exc})")
        except (KeyError, TypeError) as exc:
            skipped.append(f"{rel}: missing field {exc}")
    found.sort(key=lambda r: (r.suite, r.variant, r.kind, r.detector, r.attack, r.seed, r.path))
    return found, skipped
