"""The validation pass of ``clipbench run``: every input is checked before any work.

:func:`check_run` takes the parsed ``run`` arguments and returns every problem it finds,
one line each, naming the problem and the fix. The CLI prints them all and exits 2
before any stage ran and before any result, lock or cache file was written. Checked:

- list options: ``--attack``, ``--defense``, ``--detector`` (no empty items, no name twice, ``all`` alone,
  known names) and ``--seed`` / ``--seeds`` (non-negative integers, each once);
- ``--jobs``, ``--gpus-per-task``, ``--executor`` under torchrun, ``--results-dir`` and
  ``--cache-dir`` (writable; probed without creating them);
- the suite file (found, valid YAML, known keys, typed values) and every ``--set`` value on
  its own, so that several bad values are reported together (messages name the full key,
  ``pretrain.epochs``);
- every ``--plugin`` (imports, defines a method) and every selected method (imports, no
  name conflict, its resolved config is valid, its target is a class of the data);
- the model: a known architecture, a pretrained tag of it (cached when the hub is
  offline), or a checkpoint file that exists, loads safely and matches the architecture;
- every external data source: it exists, has its columns, and its first rows' images
  decode (:func:`benchmark.data.external.probe_source`).

The checks live by what they check: options in :mod:`benchmark.validate_options` (with
:class:`Findings` and :class:`InvalidInput`), the suite and the methods in
:mod:`benchmark.validate_methods`, the model and the data in
:mod:`benchmark.validate_sources`; their names are importable from here as before.

Data and weights are not needed to plan: with ``--dry-run`` their problems are returned
as notes (``Findings.notes``), not as problems. A problem that only shows mid-run (a
corrupt image deep in a shard) fails its cell with the file and row named (exit 1).
"""
from __future__ import annotations

import os
from typing import Any

from .validate_methods import (load_checked_suite, method_problems, registries_with_plugins, section_problems,
                               selected_methods)
from .validate_options import Findings, InvalidInput, parse_seeds, split_names, writable_problem  # noqa: F401
from .validate_sources import checkpoint_problem, data_problems, model_problems  # noqa: F401


def check_run(args: Any) -> Findings:
    """Every problem of a ``clipbench run`` invocation (``args`` as the CLI parses it), found
    without running anything or writing any file."""
    from .config import ConfigError

    findings = Findings()
    seeds = parse_seeds(args.seed, args.seeds, findings)
    attack_names = split_names(args.attack, "--attack", "attack", findings)
    defense_names = split_names(args.defense, "--defense", "defense", findings)
    detector_names = (split_names(args.detector, "--detector", "detector", findings)
                      if getattr(args, "detector", None) is not None else [])
    if args.jobs is not None and args.jobs < 1:
        findings.add(f"--jobs {args.jobs} must be at least 1")
    if args.gpus_per_task is not None and args.gpus_per_task < 0:
        findings.add(f"--gpus-per-task {args.gpus_per_task} is negative; give 0 or more GPUs per stage")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.executor not in ("auto", "local"):
        findings.add(f"--executor {args.executor} cannot be combined with torchrun; torchrun runs every stage itself")
    problem = writable_problem(args.results_dir, "--results-dir")
    if problem:
        findings.add(problem)
    if not args.dry_run:  # a dry run only reads the cache
        from .cache import default_root

        problem = writable_problem(args.cache_dir or default_root(), "--cache-dir")
        if problem:
            findings.add(problem)

    suite = load_checked_suite(args.suite, list(args.overrides), findings)
    from .registry import detector_registry

    detectors_reg = detector_registry()
    attacks_reg, defenses_reg = registries_with_plugins(list(args.plugins), findings, detectors_reg)
    attacks = selected_methods(attacks_reg, attack_names, findings)
    defenses = selected_methods(defenses_reg, defense_names, findings)
    detectors = selected_methods(detectors_reg, detector_names, findings)
    if suite is None:
        return findings
    section_problems(suite, attacks_reg, defenses_reg, findings, detectors_reg)

    needs_data: list[str] = []
    model_bad, weights = model_problems(suite.model)
    for p in model_bad:
        findings.add(p)
    needs_data += weights
    bundle, image_shape = None, None
    if not model_bad or suite.data.source == "embedded":  # external data is sized by the model
        from .data.sources import open_data

        try:
            bundle = open_data(suite.data, suite.model)
            image_shape = bundle.image_shape
        except ConfigError as exc:  # e.g. classes: folder and the test folder cannot be read: planning needs it
            findings.add(str(exc))
            if suite.data.source == "external":
                from .models import input_spec

                size = suite.data.image_size or input_spec(suite.model)["image_size"]
                image_shape = (3, size, size)
    # the test split's problem is already filed when the bundle (its class names) could not be opened
    needs_data += [p for p in data_problems(suite.data) if bundle is not None or not p.startswith("data.test ")]
    if image_shape is not None:  # an unknown architecture has no input size to check triggers against
        method_problems(suite, attacks_reg, "attacks", attacks, seeds, image_shape, bundle, findings)
    method_problems(suite, defenses_reg, "defenses", defenses, seeds, image_shape, bundle, findings)
    method_problems(suite, detectors_reg, "detectors", detectors, seeds, image_shape, bundle, findings)
    for p in needs_data:
        if args.dry_run:
            line = " ".join(p.split())
            if line not in findings.notes:
                findings.notes.append(line)
        else:
            findings.add(p)
    return findings
