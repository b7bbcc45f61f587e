"""What the command line prints: the CA/ASR matrix of a run and the plan of a dry run."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def format_matrix(results: list[dict], console: Console) -> None:
    """Print attacks x defenses as 'CA / ASR' (mean +/- std over seeds)."""
    import pandas as pd

    from .results import to_frame

    df = to_frame(results)
    if df.empty:
        console.print("no results")
        return
    ok = df[df.status == "ok"]
    attacks = list(dict.fromkeys(df.attack))
    defenses = list(dict.fromkeys(df.defense))
    nseeds = df.seed.nunique()
    table = Table(title=f"clean accuracy / attack success rate (%), {nseeds} seed(s)" + (", mean ± std" if nseeds > 1 else ""))
    table.add_column("attack")
    table.add_column("clean model ASR", justify="right")
    for d in defenses:
        table.add_column(d, justify="right")

    def fmt(values: pd.Series) -> str:
        values = values.dropna() * 100
        if values.empty:
            return "–"
        return f"{values.mean():.1f}" + (f"±{values.std(ddof=1):.1f}" if len(values) > 1 else "")

    for a in attacks:
        row = [a, fmt(ok[ok.attack == a].drop_duplicates("seed").clean_model_asr)]
        for d in defenses:
            cell = ok[(ok.attack == a) & (ok.defense == d)]
            failed = df[(df.attack == a) & (df.defense == d) & (df.status != "ok")]
            if cell.empty:
                row.append("[red]failed[/]" if not failed.empty else "–")
            else:
                row.append(f"{fmt(cell.ca)} / {fmt(cell.asr)}")
        table.add_row(*row)
    console.print(table)
    if nseeds > 1:
        from .results import aggregate_seeds

        agg = aggregate_seeds(df)
        seeds_table = Table(title="across seeds: mean ± std [95% t-interval of the mean] (%)")
        for col in ("attack", "defense", "seeds", "CA", "ASR"):
            seeds_table.add_column(col, justify="left" if col in ("attack", "defense") else "right")

        def span(r, m: str) -> str:
            if r[f"{m}_std"] != r[f"{m}_std"]:  # NaN: one seed
                return f"{100 * r[f'{m}_mean']:.1f}"
            return (f"{100 * r[f'{m}_mean']:.1f} ± {100 * r[f'{m}_std']:.1f} "
                    f"[{100 * r[f'{m}_ci_low']:.1f}, {100 * r[f'{m}_ci_high']:.1f}]")

        for _, r in agg.iterrows():
            seeds_table.add_row(r.attack, r.defense, str(r.n), span(r, "ca"), span(r, "asr"))
        console.print(seeds_table)


def format_detection(results: list[dict], console: Console) -> None:
    """Print the detection results of a run: per attack x sample detector, AUROC and TPR at 1% FPR
    (one seed: [95% bootstrap interval]; several: mean ± std over seeds), then each model
    detector's AUROC over every model it scored."""
    import statistics

    from .detect_results import model_detection_summary

    ok = [r for r in results if r.get("status") == "ok"]
    failed = [r for r in results if r.get("status") != "ok"]
    sample = [r for r in ok if r["detector"]["kind"] == "sample"]
    if sample:
        attacks = list(dict.fromkeys(r["attack"]["name"] for r in sample))
        detectors = list(dict.fromkeys(r["detector"]["name"] for r in sample))
        nseeds = len({r["seed"] for r in sample})
        table = Table(title=f"sample detection: AUROC / TPR@1%FPR, {nseeds} seed(s)"
                      + (", mean ± std" if nseeds > 1 else ", [95% bootstrap]"))
        table.add_column("attack")
        for d in detectors:
            table.add_column(d, justify="right")

        def show(runs: list[dict], key: str) -> str:
            values = [float(r["metrics"][key]) for r in runs]
            if len(values) == 1:
                lo, hi = runs[0]["metrics"]["intervals"].get(key, [None, None])
                return f"{values[0]:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None else "")
            return f"{statistics.fmean(values):.3f}±{statistics.stdev(values):.3f}"

        for a in attacks:
            row = [a]
            for d in detectors:
                runs = [r for r in sample if r["attack"]["name"] == a and r["detector"]["name"] == d]
                row.append(f"{show(runs, 'auroc')} / {show(runs, 'tpr_at_fpr')}" if runs else "–")
            table.add_row(*row)
        console.print(table)
    model = [r for r in ok if r["detector"]["kind"] == "model"]
    for d in dict.fromkeys(r["detector"]["name"] for r in model):
        summary = model_detection_summary([r for r in model if r["detector"]["name"] == d])
        if summary is None:
            continue
        table = Table(title=f"model detection ({d}): AUROC over models, backdoored vs clean and clean fine-tuned")
        for col in ("backdoored models of", "models (backdoored / clean)", "AUROC [95% bootstrap]"):
            table.add_column(col, justify="left" if col.startswith("back") else "right")
        for scope, m in [("every attack", summary["all"]), *summary["per_attack"].items()]:
            lo, hi = m["intervals"]["auroc"]
            table.add_row(scope, f"{m['counts']['positives']} / {m['counts']['negatives']}",
                          f"{m['auroc']:.3f} [{lo:.2f}, {hi:.2f}]")
        console.print(table)
    for r in failed:
        console.print(f"[red]detection failed[/] {r['attack']['name']}/{r['detector']['name']} seed={r['seed']}: "
                      f"{(r.get('error') or {}).get('message', '')}", highlight=False)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_plan(session: Any, plan: Any, console: Console) -> Any:
    """``clipbench run --dry-run``: stages to run, cache hits and the estimated cost; returns the
    :class:`~benchmark.run_status.PlanStatus`."""
    from .executors import available_cores

    status = session.status(plan)
    for found in status.found:
        session.reporter.warn(found.message(done=False))
    embedded = getattr(session.data.config, "source", None) == "embedded"
    # embedded: the decoded splits' sizes; external: from the configured limits, no data access
    costs = session.costs(plan, status.to_run, from_data=embedded)
    detections = getattr(plan, "detections", [])
    table = Table(title=f"plan: {len(plan.cells)} cell(s), {len(status.finished_cells)} already finished"
                  + (f"; {len(detections)} detection result(s), {len(status.detections_finished)} already finished"
                     if detections else ""))
    for col, just in (("stage", "left"), ("status", "left"), ("estimated", "right"), ("from", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for node in status.cached:
        table.add_row(node.label, "[green]cached[/]", "", "")
    for node in status.to_run:
        s = costs.seconds.get(node.key)
        table.add_row(node.label, "[yellow]to run[/]", _duration(s) if s is not None else "?", costs.source[node.key])
    console.print(table)
    folders = dict.fromkeys(str(c.result_path.parents[2]) for c in plan.cells)
    console.print("results go to " + ", ".join(f"{f}/" for f in folders) + (
        "" if all(not c.variant_settings for c in plan.cells) else
        " (a cell whose configuration differs from the suite's own has a folder of its own, named by what differs)"),
        highlight=False, soft_wrap=True)
    total = costs.total()
    unknown = f" (+{costs.unknown()} stage(s) of unknown cost)" if costs.unknown() else ""
    path = _duration(costs.critical_path(plan))
    if str(costs.device).startswith("cuda"):
        console.print(f"{len(status.to_run)} stage(s) to run, {len(status.cached)} cached; estimated {total / 3600:.2f} "
                      f"GPU hours{unknown}: the stages one after another on one GPU; critical path {path} (the "
                      "shortest wall time, with one GPU per stage that can run at once)", highlight=False)
    else:
        console.print(f"{len(status.to_run)} stage(s) to run, {len(status.cached)} cached; estimated {_duration(total)} "
                      f"wall time{unknown} running one stage at a time on this machine ({available_cores()} CPU cores); "
                      f"critical path {path} (the shortest wall time, with a worker for every stage that can run at "
                      "once)", highlight=False)
    return status
