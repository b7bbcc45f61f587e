"""Plan the requested cells as a DAG of content-addressed stages.

Stages (``Node.kind``): ``pretrain`` (once per seed, shared by every cell), ``poison``
(the attack's poisoned training set), ``train`` (poisoned training with the plain CLIP
loss, or with a training-stage defense's objective), ``defend`` (a post-training defense
fine-tunes the backdoored model) and ``evaluate``. A node's key hashes its kind, its
resolved config and its inputs' keys, so a backdoored model is trained once and reused
by every post-training defense, and changing any trigger parameter changes every key
downstream of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import Attack, Defense, Stage
from .config import config_hash, from_dict, to_dict
from .data.sources import DataBundle
from .registry import Registry
from .results import cell_path
from .suite import SuiteConfig

STAGE_VERSION = 1  # bump when a stage's computation changes, to invalidate caches


@dataclass
class Node:
    key: str
    kind: str
    label: str
    deps: tuple[str, ...]
    spec: dict[str, Any]


@dataclass
class Cell:
    attack: str
    defense: str
    seed: int
    stage: str  # the defense's Stage value
    result_path: Path
    cell_key: str
    eval_key: str
    baseline_key: str
    clean_key: str
    stage_keys: dict[str, str]
    attack_config: dict[str, Any]
    defense_config: dict[str, Any]
    attack_source: str
    defense_source: str


@dataclass
class Plan:
    suite: SuiteConfig
    nodes: dict[str, Node] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)

    def add(self, kind: str, label: str, deps: tuple[str, ...], spec: dict[str, Any]) -> str:
        key = config_hash({"v": STAGE_VERSION, "kind": kind, "deps": deps, "spec": spec})
        if key not in self.nodes:
            self.nodes[key] = Node(key, kind, label, deps, spec)
        return key

    def needed(self, keys: set[str]) -> list[Node]:
        """Nodes (topologically ordered) that ``keys`` depend on, themselves included."""
        wanted: set[str] = set()
        stack = list(keys)
        while stack:
            k = stack.pop()
            if k not in wanted:
                wanted.add(k)
                stack.extend(self.nodes[k].deps)
        return [n for k, n in self.nodes.items() if k in wanted]


def make_method(registry: Registry, name: str, overrides: dict[str, Any], seed: int, **kwargs) -> Any:
    cls = registry.get(name)
    config = from_dict(cls.Config, overrides, prefix=f"{registry.kind}s.{name}.")
    return cls(config, seed=seed, **kwargs)


def make_plan(suite: SuiteConfig, data: DataBundle, attacks: list[str], defenses: list[str], seeds: list[int],
              attack_registry: Registry, defense_registry: Registry, results_dir: Path) -> Plan:
    plan = Plan(suite)
    model = to_dict(suite.model)
    data_id = data.identity()
    for seed in seeds:
        pre = plan.add("pretrain", f"pretrain seed={seed}", (), {
            "model": model, "data": data_id, "train": to_dict(suite.pretrain), "seed": seed})
        for attack_name in attacks:
            attack: Attack = make_method(attack_registry, attack_name, suite.attack_overrides(attack_name), seed,
                                         image_shape=data.image_shape)
            target = data.target_index(attack.config.target)
            attack_spec = {"name": attack_name, "version": getattr(attack, "version", "1"),
                           "config": to_dict(attack.config), "seed": seed}
            if attack.identity():  # e.g. a pattern file's digest: editing the file changes the keys
                attack_spec["identity"] = attack.identity()
            attack_spec.update(attack_registry.identity(attack_name))  # plugins: their code's origin; {} for built-ins
            poison = plan.add("poison", f"poison {attack_name} seed={seed}",
                              (pre,) if attack.needs_reference_model else (), {
                                  "attack": attack_spec, "data": data_id, "target": target,
                                  "image_shape": list(data.image_shape), "model": model if attack.needs_reference_model else None})
            eval_spec = {"attack": attack_spec, "target": target, "eval": to_dict(suite.eval), "data": data_id}
            plain = plan.add("train", f"train {attack_name} seed={seed}", (pre, poison), {
                "train": to_dict(suite.poison_train), "objective": None, "seed": seed})
            baseline_eval = plan.add("evaluate", f"evaluate {attack_name}/none seed={seed}", (plain,), eval_spec)
            clean_eval = plan.add("evaluate", f"evaluate clean-model {attack_name} seed={seed}", (pre,), eval_spec)
            for defense_name in defenses:
                defense: Defense = make_method(defense_registry, defense_name, suite.defense_overrides(defense_name), seed)
                defense_spec = {"name": defense_name, "version": getattr(defense, "version", "1"),
                                "config": to_dict(defense.config), "seed": seed}
                defense_spec.update(defense_registry.identity(defense_name))  # plugins only; {} for built-ins
                keys = {"pretrain": pre, "poison": poison, "poison_train": plain}
                if defense.stage is Stage.NONE:
                    final = plain
                elif defense.stage is Stage.TRAINING:
                    final = keys["poison_train"] = plan.add(
                        "train", f"train {attack_name} with {defense_name} seed={seed}", (pre, poison),
                        {"train": to_dict(suite.poison_train), "objective": defense_spec, "seed": seed})
                else:
                    final = keys["defense"] = plan.add(
                        "defend", f"defend {attack_name} with {defense_name} seed={seed}", (plain,), {"defense": defense_spec})
                final_eval = baseline_eval if final == plain else plan.add(
                    "evaluate", f"evaluate {attack_name}/{defense_name} seed={seed}", (final,), eval_spec)
                plan.cells.append(Cell(
                    attack=attack_name, defense=defense_name, seed=seed, stage=defense.stage.value,
                    result_path=cell_path(results_dir, suite.name, attack_name, defense_name, seed),
                    cell_key=config_hash({"final": final_eval, "baseline": baseline_eval, "clean": clean_eval}),
                    eval_key=final_eval, baseline_key=baseline_eval, clean_key=clean_eval, stage_keys=keys,
                    attack_config=to_dict(attack.config), defense_config=to_dict(defense.config),
                    attack_source=attack_registry.entry(attack_name).source,
                    defense_source=defense_registry.entry(defense_name).source))
    return plan


# ------------------------------------------------------------------------------ costs
#: Training throughput (samples/s) of the shipped tiny configs on 2 CPU cores, used
#: until a run has measured the real one (every cached model's meta records it).
DEFAULT_TRAIN_SAMPLES_PER_S = {"clipbench-tiny-rn": 1500.0, "clipbench-micro-rn": 6000.0}


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
        elif node.kind == "poison":
            est = getattr(cost_cfg, "poison_seconds", None) or (2.0 if not node.deps else None)
        seconds[node.key] = est
        source[node.key] = ("suite" if cost_cfg is not None and getattr(cost_cfg, "train_samples_per_s", None)
                            else "model") if est is not None else "unknown"
    device = getattr(cost_cfg, "device", None) or suite.device
    return PlanCost(seconds, source, device)
