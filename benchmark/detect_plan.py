"""The detection half of the plan: one :class:`DetectionCell` per (attack, detector, seed) and its
``detect`` stages (see :mod:`benchmark.plan`, which calls :func:`detection_cell`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import config_hash, to_dict
from .results import detection_identity, detection_path, variant_name, variant_settings

if TYPE_CHECKING:
    from .api import Attack
    from .plan import Plan
    from .registry import Registry
    from .suite import SuiteConfig


@dataclass
class DetectionCell:
    """One detection result: a detector on one attack's run of one seed.

    A sample detector's ``detect_keys`` is ``{"poisoned": <detect node>}`` (its scores of every
    pair of the poisoned set, with the backdoored model); a model detector's holds one detect
    node per model it scores: ``backdoored`` (the attack's poisoned model), ``clean`` (the clean
    start model) and ``clean_finetuned`` (the clean model trained under the same schedule on
    the clean training split), so that AUROC over models compares like with like."""

    attack: str
    detector: str
    seed: int
    kind: str  # a DetectorKind value: "sample" | "model"
    result_path: Path
    cell_key: str
    detect_keys: dict[str, str]
    stage_keys: dict[str, str]  # pretrain, poison, poison_train (and clean_train for model detectors)
    attack_config: dict[str, Any]
    detector_config: dict[str, Any]
    attack_source: str
    detector_source: str
    attack_family: str = "other"
    attack_clean_label: bool = False
    variant: str = ""
    variant_settings: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict, repr=False)
    attack_paper: str = ""
    detector_paper: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        """The nodes this result is assembled from: its detect nodes and the undefended evaluation."""
        return (*self.detect_keys.values(), self.stage_keys["baseline_eval"])



def detection_cell(plan: Plan, suite: SuiteConfig, data_id: dict[str, Any], results_dir: Path, attack_name: str,
                    attack: Attack, attack_spec: dict[str, Any], attack_registry: Registry, detector_name: str,
                    detector_registry: Registry, seed: int, keys: dict[str, str], own_dict: dict[str, Any],
                    suite_dict: dict[str, Any], own_attack: dict[str, Any], own_detector: dict[str, Any]) -> DetectionCell:
    """The detect nodes and the result of one (attack, detector, seed)."""
    detector = detector_registry.build(detector_name, suite.detector_overrides(detector_name), seed)
    kind = detector.kind.value
    detector_spec = {"name": detector_name, "version": getattr(detector, "version", "1"),
                     "config": to_dict(detector.config), "seed": seed, "kind": kind}
    detector_spec.update(detector_registry.identity(detector_name))
    # what a detector may read besides its inputs: the clean defense split (DECREE's shadow images)
    # and the poisoned-training schedule (training-based detectors)
    context = {"data": data_id, "schedule": to_dict(suite.poison_train)}
    stage_keys = dict(keys)
    if kind == "sample":
        detect_keys = {"poisoned": plan.add(
            "detect", f"detect {attack_name} with {detector_name} seed={seed}",
            (keys["pretrain"], keys["poison"], keys["poison_train"]), {"detector": detector_spec, **context})}
    else:
        clean_train = stage_keys["clean_train"] = plan.add(
            "train", f"train clean seed={seed}", (keys["pretrain"],),
            {"train": to_dict(suite.poison_train), "objective": None, "seed": seed, "clean": True, "data": data_id})
        detect_keys = {}
        for role, model_key, label in (("backdoored", keys["poison_train"], f"{attack_name} model"),
                                       ("clean", keys["pretrain"], "clean model"),
                                       ("clean_finetuned", clean_train, "clean fine-tuned model")):
            detect_keys[role] = plan.add("detect", f"detect {label} with {detector_name} seed={seed}", (model_key,),
                                         {"detector": detector_spec, **context})
    own_identity = detection_identity(own_dict, attack_name, own_attack, detector_name, own_detector)
    settings = variant_settings(own_identity, detection_identity(suite_dict, attack_name, to_dict(attack.config),
                                                                 detector_name, to_dict(detector.config)))
    folder = variant_name(suite.name, settings)
    return DetectionCell(
        attack=attack_name, detector=detector_name, seed=seed, kind=kind,
        result_path=detection_path(results_dir, folder, attack_name, detector_name, seed),
        cell_key=config_hash({"detect": detect_keys, "attack": attack_spec}), detect_keys=detect_keys,
        stage_keys=stage_keys, attack_config=to_dict(attack.config), detector_config=to_dict(detector.config),
        attack_source=attack_registry.entry(attack_name).source, detector_source=detector_registry.entry(detector_name).source,
        attack_family=getattr(attack, "family", "other"), attack_clean_label=bool(getattr(attack, "clean_label", False)),
        variant=folder, variant_settings=settings, identity=own_identity,
        attack_paper=str(getattr(attack, "paper", "") or ""), detector_paper=str(getattr(detector, "paper", "") or ""))
