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

The attacker's own schedule is chosen the same way, with ``--defense none`` and a grid
over suite settings::

    python -m benchmark.tune --defense none --attack badnet,blended,wanet \\
        --suite-grid poison_train.epochs=5,10 poison_train.lr=1e-3,2e-3 --min-asr 0.95

takes the first candidate (cheapest first) whose every attack reaches ``--min-asr`` val
ASR within ``--max-ca-drop`` points of the clean model. ``--out`` writes the whole sweep
(every candidate's per-attack val CA and ASR) as JSON; under
``results/sweeps/<suite>/`` the leaderboard plots it.
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


def _undefended(session, plan, val_metrics) -> dict[str, dict]:
    """Train (or load) each cell's backdoored model and measure it on VAL."""
    for node in plan.needed({c.stage_keys["poison_train"] for c in plan.cells}):
        if not session.stages.done(node):
            print(f"running {node.label}", flush=True)
            session.stages.run(node)
    base: dict[str, dict] = {}
    for cell in plan.cells:
        attack_name, seed = cell.attack, cell.seed
        m = val_metrics(session.load_model(cell.stage_keys["poison_train"]), session.method("attack", attack_name, seed))
        base[f"{attack_name}/{seed}"] = {"ca": m.clean_accuracy, "asr": m.asr}
        print(f"{attack_name} seed {seed}: undefended val CA {m.clean_accuracy:.3f} ASR {m.asr:.3f}", flush=True)
    return base


def _choose(rows: list[dict], max_ca_drop: float, min_asr: float | None) -> dict:
    """The documented rule. Defenses: lowest mean val ASR within the CA budget (else the
    smallest CA drop). Attacker settings (``min_asr``): the first candidate (the cheapest,
    listed first) whose every attack reaches ``min_asr`` within the CA budget (else the one
    with the highest minimum ASR)."""
    ok = [r for r in rows if r["mean_ca_drop"] * 100 <= max_ca_drop]
    if min_asr is not None:
        strong = [r for r in ok if r["min_asr"] >= min_asr]
        return strong[0] if strong else max(rows, key=lambda r: r["min_asr"])
    return min(ok, key=lambda r: r["mean_asr"]) if ok else min(rows, key=lambda r: r["mean_ca_drop"])


def main(argv: Sequence[str] | None = None) -> int:
    from .config import merge, parse_set
    from .evaluate import evaluate
    from .session import Session

    p = argparse.ArgumentParser(prog="python -m benchmark.tune", description=__doc__.split("\n\n")[0])
    p.add_argument("--defense", required=True, help="the defense to tune ('none': tune suite settings of the attacker)")
    p.add_argument("--attack", default="badnet", help="comma-separated attacks (mean over them)")
    p.add_argument("--grid", nargs="*", default=[], help="key=v1,v2 settings of the defense's config")
    p.add_argument("--suite-grid", nargs="*", default=[],
                   help="key=v1,v2 settings of the suite (e.g. poison_train.lr=1e-3,2e-3): one session each")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (mean over attacks x seeds)")
    p.add_argument("--suite", default="embedded")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--max-ca-drop", type=float, default=2.0)
    p.add_argument("--min-asr", type=float, default=None,
                   help="attacker settings: take the first suite candidate whose every attack reaches this val ASR")
    p.add_argument("--out", type=Path)
    p.add_argument("--cache-dir", type=Path, default=None, help="stage cache (default $CLIPBENCH_CACHE or ~/.cache/clipbench)")
    args = p.parse_args(argv)

    seeds = [int(x) for x in args.seeds.split(",")]
    rows = []
    undefended: dict[str, dict] = {}
    clean_model: dict[str, float] = {}
    for suite_candidate in _grid(args.suite_grid):
        session = Session.open(args.suite, merge(parse_set(args.overrides), suite_candidate), cache_dir=args.cache_dir)
        suite, data = session.suite, session.data
        attacks = session.attacks.resolve(args.attack)
        plan = session.plan(attacks, "none", seeds, Path("/nonexistent"))
        cells = {(c.attack, c.seed): c for c in plan.cells}
        runs = list(cells)
        val = session.split("val")

        def val_metrics(model, attack):
            return evaluate(model, val, data.class_names, data.templates, attack, session.target(attack), suite.eval)

        base = _undefended(session, plan, val_metrics)
        undefended[json.dumps(suite_candidate, sort_keys=True)] = base
        if args.defense == "none":  # the attacker's settings: CA drop against the clean model
            if not clean_model:
                pre = next(c for c in plan.cells).stage_keys["pretrain"]
                m = evaluate(session.load_model(pre), val, data.class_names, data.templates, config=suite.eval)
                clean_model = {"ca": m.clean_accuracy}
                print(f"clean model val CA {m.clean_accuracy:.3f}", flush=True)
            res = {k: {**v, "ca_drop": clean_model["ca"] - v["ca"]} for k, v in base.items()}
            rows.append(_row({"suite": suite_candidate}, res))
            continue
        for candidate in _grid(args.grid):
            res = {}
            for attack_name, seed in runs:
                cell = cells[attack_name, seed]
                model = session.defend(session.method("defense", args.defense, seed, candidate), cell)
                m = val_metrics(model, session.method("attack", attack_name, seed))
                key = f"{attack_name}/{seed}"
                res[key] = {"ca": m.clean_accuracy, "asr": m.asr, "ca_drop": base[key]["ca"] - m.clean_accuracy}
                print(f"{json.dumps(candidate)} {key}: val CA {m.clean_accuracy:.3f} ASR {m.asr:.3f}", flush=True)
            rows.append(_row({"suite": suite_candidate, "defense": candidate} if suite_candidate else candidate, res))
    best = _choose(rows, args.max_ca_drop, args.min_asr)
    print("chosen:", json.dumps(best["candidate"]), f"mean val ASR {best['mean_asr']:.3f}, CA drop {best['mean_ca_drop']:.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "kind": "clipbench-sweep", "version": 1, "defense": args.defense, "attacks": args.attack.split(","),
            "seeds": seeds, "split": "val", "suite": args.suite, "overrides": args.overrides,
            "grid": args.grid, "suite_grid": args.suite_grid, "rule": {"max_ca_drop": args.max_ca_drop, "min_asr": args.min_asr},
            "clean_model": clean_model or None, "undefended": undefended, "candidates": rows,
            "chosen": best["candidate"]}, indent=1, sort_keys=True) + "\n")
    return 0


def _row(candidate: dict, res: dict[str, dict]) -> dict:
    n = len(res)
    return {"candidate": candidate, "per_attack": res,
            "mean_ca_drop": sum(r["ca_drop"] for r in res.values()) / n,
            "mean_asr": sum(r["asr"] for r in res.values()) / n,
            "min_asr": min(r["asr"] for r in res.values())}


if __name__ == "__main__":
    raise SystemExit(main())
