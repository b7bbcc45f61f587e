"""Detect and retrain: drop the pairs a sample detector finds most suspicious, retrain from the clean start.

The defender's use of a detection track (Huang et al., ICLR 2025, §5 "detection feeds
mitigation"; ABL's isolate-then-unlearn, Li et al. NeurIPS 2021, in its simplest form): train
on the (poisoned) set as usual, score every pair with a sample detector and that model, drop the
top-scored ``drop_fraction`` of the pairs, and train again from the clean start on what is left,
under the same schedule as the undefended model (the suite's ``poison_train``). Its row in the
mitigation matrix shows a detector's value in CA/ASR terms: a detector that flags the poisoned
pairs removes the backdoor at the cost of the clean pairs it drops with them.

A training-stage defense (``needs_poisoned_model``: the plan trains the undefended model first,
the one ``none`` evaluates, and hands it over). ``drop_fraction`` is 5%: a defender does not
know the poison rate (1% on the embedded default), and dropping a few clean pairs costs little.
The detector is any registered sample detector (``detector``, with ``detector_config`` over
its paper defaults); DAO, the ICLR 2025 paper's best, by default. The result records how many
of the dropped pairs were poisoned (from the poisoned set's ground-truth mask; the decision
itself never reads it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmark import (DefenseConfig, DefenseStage, DetectionContext, Defense, SampleDetector, check,
                       make_detector, top_fraction)


@dataclass
class DetectAndRetrainConfig(DefenseConfig):
    detector: str = "dao"
    detector_config: dict[str, Any] = field(default_factory=dict)
    drop_fraction: float = 0.05

    def __post_init__(self) -> None:
        check(0 < self.drop_fraction < 1, "drop_fraction", self.drop_fraction,
              "drop a fraction strictly between 0 and 1 of the training pairs, e.g. 0.05")
        check(bool(self.detector), "detector", self.detector, "name a sample detector, e.g. dao (clipbench list)")


class DetectAndRetrain(Defense):
    name = "detect_and_retrain"
    stage = DefenseStage.TRAINING
    needs_poisoned_model = True
    paper = ("drop the top-scored pairs of a sample detector and retrain (detection of Huang et al., ICLR 2025; "
             "isolation as in ABL, Li et al., NeurIPS 2021)")
    Config = DetectAndRetrainConfig

    def __init__(self, config=None, *, seed: int = 0):
        super().__init__(config, seed=seed)
        self._diag: dict[str, Any] = {}

    def training_data(self, data, ctx):
        detector = make_detector(self.config.detector, self.config.detector_config, self.seed)
        if not isinstance(detector, SampleDetector):
            raise ValueError(f"detect_and_retrain needs a sample detector; {self.config.detector!r} is a "
                             f"{detector.kind.value} detector (choose e.g. dao, k_distance, abl_loss)")
        if ctx.poisoned_model is None:
            raise ValueError("detect_and_retrain scores pairs with the undefended poisoned model: ctx.poisoned_model "
                             "is missing")
        dctx = DetectionContext(ctx.class_names, self.seed, ctx.device, start_model=ctx.start_model,
                                schedule=ctx.schedule, clean_data=ctx.clean_data, reporter=ctx.reporter,
                                stage_name=f"{ctx.stage_name} (detect)")
        scores = np.asarray(detector.score(ctx.poisoned_model(), data, dctx), dtype=np.float64)
        if scores.shape != (len(data),) or not np.isfinite(scores).all():
            raise ValueError(f"detector {self.config.detector!r} returned no finite score per pair")
        drop = top_fraction(scores, self.config.drop_fraction)
        keep = np.setdiff1d(np.arange(len(data)), drop)
        poisoned = data.poisoned.numpy() if data.poisoned is not None else np.zeros(len(data), dtype=bool)
        self._diag = {"detect_and_retrain": {
            "detector": self.config.detector, "dropped": int(len(drop)), "kept": int(len(keep)),
            "dropped_poisoned": int(poisoned[drop].sum()), "poisoned": int(poisoned.sum()),
            "kept_poisoned": int(poisoned[keep].sum())}}
        return data.subset(keep)

    def diagnostics(self) -> dict[str, Any]:
        return dict(self._diag)
