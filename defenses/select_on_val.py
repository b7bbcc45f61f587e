"""Choose a defense's one configuration on the VAL split (never on test ASR).

The procedure behind the defense settings of ``benchmark/suites/embedded.yaml``::

    python -m defenses.select_on_val --defense cleanclip --attack badnet,blended \\
        --grid train.lr=1e-4,3e-4,1e-3 --seeds 0 --out /tmp/select-cleanclip.json

For every candidate setting it takes the cached backdoored model of each attack (built
like ``clipbench run`` builds it: same suite, same cache), applies the defense
(post-training: fine-tunes on the defense split; training-stage: re-trains on the
poisoned set from the clean model) and evaluates zero-shot on the 1,000-image **val**
split with the attack's trigger: val CA, val ASR. The rule (documented, applied to every
defense): among the candidates whose mean val CA drop w.r.t. the undefended model is at
most ``--max-ca-drop`` points (default 2), take the lowest mean val ASR over the given
attacks and seeds (if none is within it, the one with the smallest CA drop); ties go to
the earlier candidate (the paper default first). One configuration
per defense, for all attacks; the test split is never read.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any, Sequence


def _grid(items: Sequence[str]) -> list[dict[str, Any]]:
    from benchmark.config import merge, parse_set

    axes = []
    for item in items:
        key, _, values = item.partition("=")
        axes.append([f"{key}={v}" for v in values.split(",")])
    out = []
    for combo in itertools.product(*axes) if axes else [()]:
        cfg: dict[str, Any] = {}
        for setting in combo:
            cfg = merge(cfg, parse_set([setting]))
        out.append(cfg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from benchmark.cache import Cache
    from benchmark.config import from_dict, merge, parse_set
    from benchmark.data.sources import open_data
    from benchmark.evaluate import EvalConfig, evaluate
    from benchmark.api import DefenseContext, Stage
    from benchmark.plan import make_method, make_plan
    from benchmark.registry import registries
    from benchmark.stages import StageExecutor, pick_device
    from benchmark.suite import load_suite
    from benchmark.train import TrainConfig, train

    p = argparse.ArgumentParser(prog="python -m defenses.select_on_val", description=__doc__.split("\n\n")[0])
    p.add_argument("--defense", required=True)
    p.add_argument("--attack", default="badnet", help="comma-separated attacks (mean over them)")
    p.add_argument("--grid", nargs="*", default=[], help="key=v1,v2 settings of the defense's config")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (mean over attacks x seeds)")
    p.add_argument("--suite", default="embedded")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--max-ca-drop", type=float, default=2.0)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    suite = load_suite(args.suite, parse_set(args.overrides))
    attacks_reg, defenses_reg = registries(())
    data = open_data(suite.data, suite.model)
    executor = StageExecutor(Cache(None), data, attacks_reg, defenses_reg, pick_device(suite.device))
    attacks = attacks_reg.resolve(args.attack)
    seeds = [int(x) for x in args.seeds.split(",")]
    plan = make_plan(suite, data, attacks, ["none"], seeds, attacks_reg, defenses_reg, Path("/nonexistent"))
    cells = {(c.attack, c.seed): c for c in plan.cells}
    runs = list(cells)
    for node in plan.needed({c.stage_keys["poison_train"] for c in plan.cells}):
        if not executor.done(node):
            print(f"running {node.label}", flush=True)
            executor.run(node)
    val = executor.split("val")
    rows = []
    base: dict[str, dict] = {}
    for attack_name, seed in runs:
        cell = cells[attack_name, seed]
        attack = make_method(attacks_reg, attack_name, suite.attack_overrides(attack_name), seed, image_shape=data.image_shape)
        target = data.target_index(attack.config.target)
        m = evaluate(executor.load_model(cell.stage_keys["poison_train"]), val, data.class_names, data.templates, attack,
                     target, from_dict(EvalConfig, {**vars(suite.eval)}))
        base[f"{attack_name}/{seed}"] = {"ca": m.clean_accuracy, "asr": m.asr}
        print(f"{attack_name} seed {seed}: undefended val CA {m.clean_accuracy:.3f} ASR {m.asr:.3f}", flush=True)
    for candidate in _grid(args.grid):
        overrides = merge(suite.defense_overrides(args.defense), candidate)
        res = {}
        for attack_name, seed in runs:
            cell = cells[attack_name, seed]
            defense = make_method(defenses_reg, args.defense, overrides, seed)
            attack = make_method(attacks_reg, attack_name, suite.attack_overrides(attack_name), seed,
                                 image_shape=data.image_shape)
            target = data.target_index(attack.config.target)
            if defense.stage is Stage.TRAINING:
                model = executor.load_model(cell.stage_keys["pretrain"])
                poisoned = executor.load_poisoned(cell.stage_keys["poison"]).data
                obj = defense.objective(DefenseContext(data.class_names, seed, train_data=poisoned))
                train(model, poisoned, obj, suite.poison_train, seed=seed, device=executor.device)
            else:
                model = executor.load_model(cell.stage_keys["poison_train"])
                defense.defend(model, DefenseContext(data.class_names, seed, clean_data=executor.split("defense"),
                                                     val_data=val, device=executor.device))
            m = evaluate(model, val, data.class_names, data.templates, attack, target, from_dict(EvalConfig, {**vars(suite.eval)}))
            key = f"{attack_name}/{seed}"
            res[key] = {"ca": m.clean_accuracy, "asr": m.asr, "ca_drop": base[key]["ca"] - m.clean_accuracy}
            print(f"{json.dumps(candidate)} {key}: val CA {m.clean_accuracy:.3f} ASR {m.asr:.3f}", flush=True)
        n = len(runs)
        rows.append({"candidate": candidate, "per_attack": res,
                     "mean_ca_drop": sum(r["ca_drop"] for r in res.values()) / n,
                     "mean_asr": sum(r["asr"] for r in res.values()) / n})
    ok = [r for r in rows if r["mean_ca_drop"] * 100 <= args.max_ca_drop]
    # none within the CA budget: the candidate that costs the least CA
    best = min(ok, key=lambda r: r["mean_asr"]) if ok else min(rows, key=lambda r: r["mean_ca_drop"])
    print("chosen:", json.dumps(best["candidate"]), f"mean val ASR {best['mean_asr']:.3f}, CA drop {best['mean_ca_drop']:.3f}")
    if args.out:
        args.out.write_text(json.dumps({"defense": args.defense, "attacks": attacks, "seeds": seeds, "split": "val",
                                        "undefended": base, "candidates": rows, "chosen": best["candidate"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
