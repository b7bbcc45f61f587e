"""Plan the requested cells as a DAG of content-addressed stages.

Stages (``Node.kind``): ``pretrain`` (once per seed, shared by every cell), ``trigger``
(only for attacks whose trigger is optimised on the clean model, BadCLIP: the trigger
itself, read by the attack's poison and evaluation stages), ``poison``
(the attack's poisoned training set), ``train`` (poisoned training with the plain CLIP
loss, or with a training-stage defense's objective; with ``"clean": true``, the same
schedule on the clean training split: the clean fine-tuned model that model detectors are
scored against), ``defend`` (a post-training defense fine-tunes the backdoored model),
``evaluate`` and ``detect`` (a sample detector scores every pair of a poisoned set with its
backdoored model, or a model detector scores one model). A node's key hashes its kind, its
resolved config and its inputs' keys, so a backdoored model is trained once and reused
by every post-training defense, and changing any trigger parameter changes every key
downstream of it.

Each cell's result file sits in its configuration's folder (:func:`benchmark.results.variant_name`):
the suite's name when the cell's resolved configuration is the suite's own (``own``: the
suite without ``--set`` overrides), else a variant folder named by the settings that differ
for that cell, so ``--set attacks.badnet.pattern=noise`` moves only the badnet cells.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import Attack, Defense, DefenseStage
from .config import config_hash, to_dict
from .data.sources import DataBundle
from .registry import Registry
from .detect_plan import DetectionCell, detection_cell
from .results import cell_identity, cell_path, variant_name, variant_settings
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
    defense_stage: str  # when the defense acts (a DefenseStage value)
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
    attack_family: str = "other"  # the attack class's ``family`` (patch, blend, warp, ...), for the leaderboard
    variant: str = ""  # the results folder: the suite's name, or a variant name (see benchmark.results.variant_name)
    variant_settings: dict[str, Any] = field(default_factory=dict)  # where this cell differs from the suite's own
    identity: dict[str, Any] = field(default_factory=dict, repr=False)  # the suite's own identity of this cell
    attack_paper: str = ""  # the classes' ``paper`` citations (recorded in the result, shown escaped)
    defense_paper: str = ""
    defense_schedule: dict[str, Any] | None = None  # schedule_record(): which schedule the defense trains under


@dataclass
class Plan:
    suite: SuiteConfig
    nodes: dict[str, Node] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    detections: list[DetectionCell] = field(default_factory=list)

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


def schedule_record(suite: SuiteConfig, name: str, defense_cls: type[Defense], defense: Defense) -> dict[str, Any] | None:
    """Which training schedule ``defense`` runs under, and what of its own default it replaces.

    Post-training defenses train under their resolved ``config.train``: the method's own
    default unless the suite sets ``defense_common.train`` (then that whole schedule replaces
    the default: fields it leaves out take :class:`~benchmark.train.TrainConfig`'s defaults,
    not the method's, so every post-training defense trains under one schedule), with
    ``defenses.<name>.train`` and ``--set`` on top. Training-stage defenses train under the
    suite's ``poison_train`` (their ``train`` is unused). None for ``none``-stage defenses.

    Returns ``{"source", "train" (the schedule used), "method_default" (the class's own),
    "overridden" ({field: [method default, used]})}``.
    """
    if defense.stage is DefenseStage.NONE:
        return None
    try:
        own = to_dict(getattr(defense_cls.Config(), "train", None))
    except Exception:  # noqa: BLE001 - a Config without usable defaults: nothing to compare with
        own = None
    if defense.stage is DefenseStage.TRAINING:
        used, source = to_dict(suite.poison_train), "poison_train"
    else:
        used = to_dict(getattr(defense.config, "train", None))
        sources = [key for key, section in (("defense_common.train", suite.defense_common),
                                            (f"defenses.{name}.train", (suite.defenses or {}).get(name) or {}))
                   if isinstance(section, dict) and section.get("train")]
        source = " + ".join(sources) if sources else "method default"
    if not isinstance(used, dict):
        return None
    overridden = {k: [own.get(k), v] for k, v in used.items() if isinstance(own, dict) and own.get(k) != v}
    return {"source": source, "train": used, "method_default": own, "overridden": overridden}


def schedule_note(defense: str, record: dict[str, Any] | None) -> str | None:
    """One line saying that a method's own schedule default is overridden (None when it is not)."""
    if not record or not record["overridden"]:
        return None
    changes = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in record["overridden"].items())
    if record["source"] == "poison_train":
        return f"defense {defense} trains under the suite's poison_train, not its own train default ({changes})"
    return (f"defense {defense}: the suite's {record['source']} overrides its own TrainConfig default ({changes}); "
            "recorded as defense.schedule in each result")


def pretrain_stage(plan: Plan, suite: SuiteConfig, data: DataBundle, seed: int) -> str:
    """The ``pretrain`` node of ``seed`` (the clean model every cell of that seed starts from)."""
    return plan.add("pretrain", f"pretrain seed={seed}", (), {
        "model": to_dict(suite.model), "data": data.identity(), "train": to_dict(suite.pretrain), "seed": seed})


def trigger_stage(plan: Plan, suite: SuiteConfig, data: DataBundle, attack_name: str, attack: Attack, seed: int,
                  pre: str, attack_registry: Registry) -> str | None:
    """The ``trigger`` node of an attack whose trigger is optimised on the clean model (BadCLIP;
    ``Attack.optimised_trigger``), None for the others. Its key hashes what the optimisation
    depends on: the attack's :meth:`~benchmark.api.Attack.trigger_spec` (its config without
    what only poisoning reads), version and seed, the data, the target, the image shape and
    the clean model (``pre``); so a poison-rate sweep reuses one optimised trigger, and every
    poison and evaluation of the attack depends on it."""
    if not getattr(attack, "optimised_trigger", False):
        return None
    spec = {"name": attack_name, "version": getattr(attack, "version", "1"), "trigger": attack.trigger_spec(),
            "seed": seed}
    if attack.identity():
        spec["identity"] = attack.identity()
    spec.update(attack_registry.identity(attack_name))
    return plan.add("trigger", f"trigger {attack_name} seed={seed}", (pre,), {
        "attack": spec, "data": data.identity(), "target": data.target_index(attack.config.target),
        "image_shape": list(data.image_shape), "model": to_dict(suite.model)})


def make_plan(suite: SuiteConfig, data: DataBundle, attacks: list[str], defenses: list[str], seeds: list[int],
              attack_registry: Registry, defense_registry: Registry, results_dir: Path,
              own: SuiteConfig | None = None, detectors: list[str] = (), detector_registry: Registry | None = None) -> Plan:
    """The plan of ``attacks`` x ``defenses`` x ``seeds`` (and ``attacks`` x ``detectors`` x
    ``seeds``); ``own``: the suite's own configuration (default ``suite``), against which each
    cell's variant folder is named."""
    plan = Plan(suite)
    model = to_dict(suite.model)
    data_id = data.identity()
    own = own if own is not None else suite
    suite_dict, own_dict = to_dict(suite), to_dict(own)
    own_configs: dict[tuple[str, str], dict[str, Any]] = {}

    def own_config(kind: str, name: str, seed: int) -> dict[str, Any]:
        if (kind, name) not in own_configs:
            if kind == "attack":
                built = attack_registry.build(name, own.attack_overrides(name), seed, image_shape=data.image_shape)
            elif kind == "detector":
                built = detector_registry.build(name, own.detector_overrides(name), seed)
            else:
                built = defense_registry.build(name, own.defense_overrides(name), seed)
            own_configs[kind, name] = to_dict(built.config)
        return own_configs[kind, name]
    for seed in seeds:
        pre = pretrain_stage(plan, suite, data, seed)
        for attack_name in attacks:
            attack: Attack = attack_registry.build(attack_name, suite.attack_overrides(attack_name), seed,
                                                   image_shape=data.image_shape)
            target = data.target_index(attack.config.target)
            attack_spec = {"name": attack_name, "version": getattr(attack, "version", "1"),
                           "config": to_dict(attack.config), "seed": seed}
            if attack.identity():  # e.g. a pattern file's digest: editing the file changes the keys
                attack_spec["identity"] = attack.identity()
            attack_spec.update(attack_registry.identity(attack_name))  # plugins: their code's origin; {} for built-ins
            # an optimised trigger (BadCLIP) is a stage of its own: poisoning and every evaluation read it
            trigger = trigger_stage(plan, suite, data, attack_name, attack, seed, pre, attack_registry)
            extra: tuple[str, ...] = (trigger,) if trigger else ()
            poison_spec = {"attack": attack_spec, "data": data_id, "target": target,
                           "image_shape": list(data.image_shape), "model": model if attack.needs_reference_model else None}
            eval_spec = {"attack": attack_spec, "target": target, "eval": to_dict(suite.eval), "data": data_id}
            if trigger:
                poison_spec["trigger"] = eval_spec["trigger"] = trigger
            poison = plan.add("poison", f"poison {attack_name} seed={seed}",
                              ((pre,) if attack.needs_reference_model else ()) + extra, poison_spec)
            plain = plan.add("train", f"train {attack_name} seed={seed}", (pre, poison), {
                "train": to_dict(suite.poison_train), "objective": None, "seed": seed})
            baseline_eval = plan.add("evaluate", f"evaluate {attack_name}/none seed={seed}", (plain,) + extra, eval_spec)
            clean_eval = plan.add("evaluate", f"evaluate clean-model {attack_name} seed={seed}", (pre,) + extra, eval_spec)
            for defense_name in defenses:
                defense: Defense = defense_registry.build(defense_name, suite.defense_overrides(defense_name), seed)
                defense_spec = {"name": defense_name, "version": getattr(defense, "version", "1"),
                                "config": to_dict(defense.config), "seed": seed}
                defense_spec.update(defense_registry.identity(defense_name))  # plugins only; {} for built-ins
                keys = {"pretrain": pre, "poison": poison, "poison_train": plain}
                if defense.stage is DefenseStage.NONE:
                    final = plain
                elif defense.stage is DefenseStage.TRAINING:
                    # a defense that reads the undefended poisoned model (detect_and_retrain) gets it as a third input
                    deps = (pre, poison, plain) if getattr(defense, "needs_poisoned_model", False) else (pre, poison)
                    final = keys["poison_train"] = plan.add(
                        "train", f"train {attack_name} with {defense_name} seed={seed}", deps,
                        {"train": to_dict(suite.poison_train), "objective": defense_spec, "seed": seed})
                else:
                    final = keys["defense"] = plan.add(
                        "defend", f"defend {attack_name} with {defense_name} seed={seed}", (plain,), {"defense": defense_spec})
                final_eval = baseline_eval if final == plain else plan.add(
                    "evaluate", f"evaluate {attack_name}/{defense_name} seed={seed}", (final,) + extra, eval_spec)
                own_identity = cell_identity(own_dict, attack_name, own_config("attack", attack_name, seed),
                                             defense_name, own_config("defense", defense_name, seed))
                settings = variant_settings(own_identity, cell_identity(
                    suite_dict, attack_name, to_dict(attack.config), defense_name, to_dict(defense.config)))
                folder = variant_name(suite.name, settings)
                plan.cells.append(Cell(
                    attack=attack_name, defense=defense_name, seed=seed, defense_stage=defense.stage.value,
                    result_path=cell_path(results_dir, folder, attack_name, defense_name, seed),
                    cell_key=config_hash({"final": final_eval, "baseline": baseline_eval, "clean": clean_eval}),
                    eval_key=final_eval, baseline_key=baseline_eval, clean_key=clean_eval, stage_keys=keys,
                    attack_config=to_dict(attack.config), defense_config=to_dict(defense.config),
                    attack_source=attack_registry.entry(attack_name).source,
                    defense_source=defense_registry.entry(defense_name).source,
                    attack_family=getattr(attack, "family", "other"), variant=folder, variant_settings=settings,
                    identity=own_identity,
                    attack_paper=str(getattr(attack, "paper", "") or ""),
                    defense_paper=str(getattr(defense, "paper", "") or ""),
                    defense_schedule=schedule_record(suite, defense_name, defense_registry.get(defense_name), defense)))
            for detector_name in detectors:
                plan.detections.append(detection_cell(
                    plan, suite, data_id, results_dir, attack_name, attack, attack_spec, attack_registry, detector_name,
                    detector_registry, seed, {"pretrain": pre, "poison": poison, "poison_train": plain,
                                              "baseline_eval": baseline_eval},
                    own_dict, suite_dict, own_config("attack", attack_name, seed), own_config("detector", detector_name, seed)))
    return plan
