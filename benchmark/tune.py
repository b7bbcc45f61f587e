"""Choose a defense's one configuration on the VAL split (never on test ASR).

The procedure behind the defense settings of ``benchmark/suites/embedded.yaml``::

    python -m benchmark.tune --defense cleanclip --attack badnet,blended \\
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
    from .config import merge, parse_set

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
    from .evaluate import evaluate
    from .session import Session

    p = argparse.ArgumentParser(prog="python -m benchmark.tune", description=__doc__.split("\n\n")[0])
    p.add_argument("--defense", required=True)
    p.add_argument("--attack", default="badnet", help="comma-separated attacks (mean over them)")
    p.add_argument("--grid", nargs="*", default=[], help="key=v1,v2 settings of the defense's config")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (mean over attacks x seeds)")
    p.add_argument("--suite", default="embedded")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--max-ca-drop", type=float, default=2.0)
    p.add_argument("--out", type=Path)
    p.add_argument("--cache-dir", type=Path, default=None, help="stage cache (default $CLIPBENCH_CACHE or ~/.cache/clipbench)")
    args = p.parse_args(argv)

    session = Session.open(args.suite, args.overrides, cache_dir=args.cache_dir)
    suite, data = session.suite, session.data
    attacks = session.attacks.resolve(args.attack)
    seeds = [int(x) for x in args.seeds.split(",")]
    plan = session.plan(attacks, "none", seeds, Path("/nonexistent"))
    cells = {(c.attack, c.seed): c for c in plan.cells}
    runs = list(cells)
    for node in plan.needed({c.stage_keys["poison_train"] for c in plan.cells}):
        if not session.stages.done(node):
            print(f"running {node.label}", flush=True)
            session.stages.run(node)
    val = session.split("val")

    def val_metrics(model, attack):
        return evaluate(model, val, data.class_names, data.templates, attack, session.target(attack), suite.eval)

    rows = []
    base: dict[str, dict] = {}
    for attack_name, seed in runs:
        cell = cells[attack_name, seed]
        m = val_metrics(session.load_model(cell.stage_keys["poison_train"]), session.method("attack", attack_name, seed))
        base[f"{attack_name}/{seed}"] = {"ca": m.clean_accuracy, "asr": m.asr}
        print(f"{attack_name} seed {seed}: undefended val CA {m.clean_accuracy:.3f} ASR {m.asr:.3f}", flush=True)
    for candidate in _grid(args.grid):
        res = {}
        for attack_name, seed in runs:
            cell = cells[attack_name, seed]
            model = session.defend(session.method("defense", args.defense, seed, candidate), cell)
            m = val_metrics(model, session.method("attack", attack_name, seed))
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
