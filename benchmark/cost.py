"""The cost model of a plan: estimated seconds per stage (``clipbench run --dry-run``, and
the runner's most-expensive-path-first order).

:func:`estimate_cost` takes, per stage, the median time measured for the same cost
signature in the cache; else a throughput model with the suite's ``cost`` section
(``train_samples_per_s``, ``eval_samples_per_s``) or the measured rate of the same
architecture; else unknown. :func:`split_size` gives split sizes without touching the
data: from the data config (``limit`` of an external split), then ``cost.split_sizes``,
then the embedded split sizes (times ``data.fraction``); ``None`` when unknown.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import config_hash

if TYPE_CHECKING:
    from .plan import Node, Plan

EMBEDDED_SIZES = {"pretrain": 14000, "poison": 8000, "defense": 4000, "val": 1000, "test": 5000}


def split_size(suite: Any, role: str) -> int | None:
    """Number of samples of ``role`` (pretrain, train, defense, val, test), or None if unknown."""
    data = suite.data
    if data.source == "embedded":
        size = EMBEDDED_SIZES.get(getattr(data, f"{role}_split", ""))
        return None if size is None else max(1, round(size * data.fraction))
    src = getattr(data, role, None)
    if src is not None and src.limit is not None:
        return src.limit
    return (getattr(suite.cost, "split_sizes", None) or {}).get(role)


#: Training throughput (samples/s) of the shipped tiny configs on 2 CPU cores, used
#: until a run has measured the real one (every cached model's meta records it).
DEFAULT_TRAIN_SAMPLES_PER_S = {"clipbench-tiny-rn": 1500.0, "clipbench-micro-rn": 6000.0,
                               "clipbench-minilm-rn": 1500.0}  # the tiny-rn image tower; frozen text costs ~0


def _strip_seeds(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_seeds(v) for k, v in obj.items() if k != "seed"}
    if isinstance(obj, list):
        return [_strip_seeds(v) for v in obj]
    return obj


def cost_signature(kind: str, spec: dict[str, Any]) -> str:
    """What a stage's cost depends on (its spec without seeds, and without the attack for
    training and defending: a backdoored model costs the same to train whatever the trigger)."""
    if kind == "train":
        part = {"train": spec.get("train"), "objective": spec.get("objective")}
    elif kind == "defend":
        part = {"defense": spec.get("defense")}
    elif kind == "evaluate":
        part = {"eval": spec.get("eval"), "data": spec.get("data")}
    else:
        part = spec
    return config_hash({"kind": kind, "spec": _strip_seeds(part)})


@dataclass
class PlanCost:
    """Estimated seconds per node to run; ``None`` where nothing is known."""

    seconds: dict[str, float | None]
    source: dict[str, str]  # node key -> "measured" | "model" | "suite" | "unknown"
    device: str = "cpu"

    def total(self) -> float:
        return sum(s for s in self.seconds.values() if s)

    def unknown(self) -> int:
        return sum(1 for s in self.seconds.values() if s is None)

    def critical_path(self, plan: "Plan") -> float:
        """Seconds of the most expensive dependency chain (the wall time with unlimited workers)."""
        longest: dict[str, float] = {}
        for key, node in plan.nodes.items():  # nodes are added after their inputs: topological
            own = self.seconds.get(key) or 0.0
            longest[key] = own + max((longest.get(d, 0.0) for d in node.deps), default=0.0)
        return max(longest.values(), default=0.0)


def measured_costs(cache_root: Path) -> dict[str, list[float]]:
    """Seconds recorded in the metas of cached stages, by cost signature (cheap: no hashing)."""
    import json

    out: dict[str, list[float]] = {}
    for meta_file in Path(cache_root).glob("*/*/meta.json"):
        try:
            meta = json.loads(meta_file.read_text())
            kind = str(meta.get("label", "")).split(" ", 1)[0]
            out.setdefault(cost_signature(kind, meta["spec"]), []).append(float(meta["seconds"]))
            rate = (meta.get("train") or {}).get("samples_per_s")
            arch = (meta.get("model") or {}).get("arch")
            if rate and arch:
                out.setdefault(f"rate:{arch}", []).append(float(rate))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _pgd_seconds(node: Node, size: Any, train_rate: float | None) -> float | None:
    """A poison stage that optimises its samples on the reference model (label-consistent's PGD):
    ``pgd_steps`` forward+backward passes per poisoned image, each costed like one training
    sample (``poison_rate`` x the train split's size images). Within 10% of the measured 6 s of
    the 28 px embedded default (80 images x 100 steps). None for attacks without ``pgd_steps``."""
    config = (node.spec.get("attack") or {}).get("config") or {}
    steps, rate, n = config.get("pgd_steps"), config.get("poison_rate"), size("train")
    if steps is None and node.spec.get("trigger"):  # an optimised trigger's poison stage: pastes the trigger
        return 2.0
    if steps is None or not rate or not n or not train_rate:
        return None
    return 1.0 + steps * max(1, round(rate * n)) / train_rate


def _trigger_seconds(node: Node, train_rate: float | None) -> float | None:
    """An optimised trigger (BadCLIP): ``steps`` x ``batch_size`` forward+backward passes, each
    costed like one training sample, plus the clean embeddings of the positives (~1 s)."""
    config = (node.spec.get("attack") or {}).get("trigger") or {}
    steps, batch = config.get("steps"), config.get("batch_size")
    if not steps or not batch or not train_rate:
        return None
    return 1.0 + steps * batch / train_rate


def estimate_cost(plan: Plan, nodes: list[Node], cache_root: Path, split_size: Any = None) -> PlanCost:
    """Per-node seconds: the median measured for the same cost signature in the cache; else
    a throughput model (samples / samples-per-second, with the suite's ``cost`` section or
    the measured rate of the same architecture); else unknown.

    ``split_size(role) -> int`` gives split sizes for the model (e.g. ``len(data.split(role))``).
    Paper suites set ``cost.train_samples_per_s`` (and ``cost.device: cuda``) to get GPU
    hours before anything was run.
    """
    import statistics

    measured = measured_costs(cache_root)
    suite = plan.suite
    cost_cfg = getattr(suite, "cost", None)
    arch = suite.model.arch
    rates = measured.get(f"rate:{arch}")
    train_rate = (getattr(cost_cfg, "train_samples_per_s", None) or (statistics.median(rates) if rates else None)
                  or DEFAULT_TRAIN_SAMPLES_PER_S.get(arch))
    eval_rate = getattr(cost_cfg, "eval_samples_per_s", None) or (3 * train_rate if train_rate else None)
    sizes: dict[str, int | None] = {}

    def size(role: str) -> int | None:
        if role not in sizes:
            try:
                sizes[role] = int(split_size(role)) if split_size else None
            except Exception:
                sizes[role] = None
        return sizes[role]

    seconds: dict[str, float | None] = {}
    source: dict[str, str] = {}
    for node in nodes:
        found = measured.get(cost_signature(node.kind, node.spec))
        if found:
            seconds[node.key], source[node.key] = statistics.median(found), "measured"
            continue
        est: float | None = None
        if node.kind in ("pretrain", "train", "defend") and train_rate:
            train_cfg = node.spec.get("train") if node.kind != "defend" else (
                (node.spec["defense"].get("config") or {}).get("train"))
            role = {"pretrain": "pretrain", "train": "train", "defend": "defense"}[node.kind]
            n = size(role)
            if node.kind == "pretrain" and train_cfg is None:
                est = 1.0
            elif train_cfg and n:
                est = train_cfg.get("epochs", 1) * n / train_rate
        elif node.kind == "evaluate" and eval_rate and size("test"):
            est = 2 * size("test") / eval_rate + 1.0
        elif node.kind == "trigger":
            est = _trigger_seconds(node, train_rate)
        elif node.kind == "poison":
            est = getattr(cost_cfg, "poison_seconds", None) or (2.0 if not node.deps else _pgd_seconds(node, size, train_rate))
        seconds[node.key] = est
        source[node.key] = ("suite" if cost_cfg is not None and getattr(cost_cfg, "train_samples_per_s", None)
                            else "model") if est is not None else "unknown"
    device = getattr(cost_cfg, "device", None) or suite.device
    return PlanCost(seconds, source, device)
