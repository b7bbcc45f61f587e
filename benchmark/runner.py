"""Run a plan: execute missing stages in DAG order, then write one result per cell.

Cells whose result file already holds an ``ok`` result for the same cell key are skipped
(resumable, CLIP_benchmark style); stages found in the cache are not recomputed. A stage
that raises fails only the cells that depend on it; the rest of the matrix continues.
"""
from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .cache import Cache
from .config import config_hash, to_dict
from .evaluate import der
from .plan import Cell, Plan
from .results import SCHEMA_VERSION, read_result, write_result
from .stages import StageExecutor


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(config_hash_: str, cell_key: str) -> dict[str, Any]:
    import open_clip
    import torch

    return {"clipbench": __version__, "git": git_commit(), "torch": torch.__version__,
            "open_clip": open_clip.__version__, "python": platform.python_version(),
            "config_hash": config_hash_, "cell_key": cell_key,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


@dataclass
class RunReport:
    results: list[dict[str, Any]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # node labels computed now
    skipped_cells: int = 0
    failed: list[str] = field(default_factory=list)


def finished(cell: Cell) -> dict[str, Any] | None:
    result = read_result(cell.result_path)
    if result and result.get("status") == "ok" and result.get("provenance", {}).get("cell_key") == cell.cell_key:
        return result
    return None


def _metrics_block(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("clean_accuracy", "asr", "ra", "asr_at_k", "intervals", "counts")}


def assemble(cell: Cell, plan: Plan, executor: StageExecutor, error: BaseException | None = None,
             tb: str | None = None) -> dict[str, Any]:
    suite = plan.suite
    config = {"suite": to_dict(suite), "attack": cell.attack_config, "defense": cell.defense_config, "seed": cell.seed}
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "status": "ok" if error is None else "failed", "suite": suite.name,
        "seed": cell.seed, "model": {"arch": suite.model.arch, "pretrained": suite.model.pretrained},
        "attack": {"name": cell.attack, "source": cell.attack_source, "config": cell.attack_config},
        "defense": {"name": cell.defense, "source": cell.defense_source, "stage": cell.stage, "config": cell.defense_config},
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
    poison_meta = executor.cache.meta("poison", cell.stage_keys["poison"])
    result["poison"] = {"num_poisoned": poison_meta["num_poisoned"],
                        "manifest": str(executor.cache.path("poison", cell.stage_keys["poison"]) / "manifest.json")}
    timings, cached = {}, {}
    kinds = {"pretrain": "model", "poison": "poison", "poison_train": "model", "defense": "model"}
    for stage, key in cell.stage_keys.items():
        meta = executor.cache.meta(kinds[stage], key)
        timings[stage] = round(meta["seconds"], 3)
    timings["evaluate"] = round(executor.cache.meta("eval", cell.eval_key)["seconds"], 3)
    result["timings_s"] = timings
    return result


def run_plan(plan: Plan, executor: StageExecutor) -> RunReport:
    """Execute ``plan`` locally, in order, and write every cell's result file."""
    report = RunReport()
    todo = []
    for cell in plan.cells:
        done = finished(cell)
        if done is not None:
            report.results.append(done)
            report.skipped_cells += 1
        else:
            todo.append(cell)
    needed = plan.needed({k for c in todo for k in (c.eval_key, c.baseline_key, c.clean_key)})
    failures: dict[str, tuple[BaseException, str]] = {}
    for node in needed:
        broken = next((failures[d] for d in node.deps if d in failures), None)
        if broken is not None:
            failures[node.key] = broken
            continue
        if executor.done(node):
            continue
        executor.reporter.log(f"[cyan]running[/] {node.label}")
        try:
            executor.run(node)
            report.ran.append(node.label)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # isolate: fail the dependent cells, continue the rest
            failures[node.key] = (exc, traceback.format_exc())
            executor.reporter.log(f"[red]failed[/] {node.label}: {type(exc).__name__}: {exc}")
    for cell in todo:
        err = next((failures[k] for k in (cell.eval_key, cell.baseline_key, cell.clean_key) if k in failures), None)
        result = assemble(cell, plan, executor, *(err or (None, None)))
        write_result(cell.result_path, result)
        report.results.append(result)
        if err is not None:
            report.failed.append(f"{cell.attack}/{cell.defense} seed={cell.seed}: {type(err[0]).__name__}: {err[0]}")
    return report
