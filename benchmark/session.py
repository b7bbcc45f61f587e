"""One composition root: a :class:`Session` holds everything a run is made of.

The CLI, the VAL tuning tool (:mod:`benchmark.tune`), the trigger previews and the
executors' workers all open one; so can a notebook (lm-evaluation-harness's
``simple_evaluate`` is the model: one library entry)::

    from benchmark.session import Session

    s = Session.open("embedded", {"data": {"fraction": 0.1}}, cache_dir="/tmp/cache")
    plan = s.plan("badnet", "none,cleanclip", seeds=[0], results_dir="results")
    print(s.status(plan).to_run)
    report = s.run(plan)            # executor "auto" (see benchmark.executors)

A session is the suite (with its overrides), the attack and defense registries (built-ins,
installed plugins and ``plugins``), the data the suite names, the content-addressed cache
and the :class:`~benchmark.stages.StageExecutor` that computes stages into it.
:meth:`Session.method` builds a configured attack or defense the way the plan does
(the method's paper defaults < the suite's sections < ``overrides``; an optimised trigger
loaded from its cached ``trigger`` stage), and
:func:`~benchmark.stages.apply_defense` (behind :meth:`Session.apply_defense`) is the one
place that decides what a defense does with a model by when it acts (:class:`DefenseStage`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .api import Attack, Defense, DefenseStage
from .cache import Cache
from .config import ConfigError, from_dict, merge, parse_set, to_dict
from .data.dataset import TensorPairs
from .data.sources import DataBundle, open_data
from .clip_model import ClipModel
from .plan import Plan, make_plan
from .progress import Reporter
from .registry import Registry, all_registries
from .stages import StageExecutor, apply_defense, pick_device
from .suite import SuiteConfig, load_suite
from .train import TrainConfig, TrainStats


@dataclass
class Session:
    """Suite, registries, data, cache and stage executor of one run (see the module docstring)."""

    suite: SuiteConfig
    attacks: Registry
    defenses: Registry
    data: DataBundle
    stages: StageExecutor
    plugins: tuple[str, ...] = ()
    own_suite: SuiteConfig | None = None  # the suite without overrides: results of other configurations go to variant folders
    detectors: Registry | None = None  # the detector registry (built-ins, installed plugins and ``plugins``)

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, suite: str | SuiteConfig = "embedded", overrides: dict[str, Any] | Sequence[str] | None = None,
             plugins: Iterable[str] = (), cache_dir: str | Path | None = None, *, reporter: Reporter | None = None,
             distributed: bool = False, device: str | None = None) -> "Session":
        """Load ``suite`` (a name, a YAML path or a :class:`SuiteConfig`) with ``overrides``
        (a nested dict or ``--set`` strings), the registries with ``plugins`` (``--plugin``
        specs), open its data and the cache at ``cache_dir`` (default ``$CLIPBENCH_CACHE`` or
        ``~/.cache/clipbench``). ``distributed``: join the torchrun job this process was
        launched in, if any (data-parallel training, rank 0 writes; its device wins);
        ``device`` overrides the suite's."""
        if overrides is not None and not isinstance(overrides, dict):
            overrides = parse_set(list(overrides))
        if isinstance(suite, SuiteConfig):
            own = suite
            suite = from_dict(SuiteConfig, merge(to_dict(suite), overrides)) if overrides else suite
        else:
            name = suite
            suite = load_suite(name, overrides)
            own = load_suite(name) if overrides else suite
        plugins = tuple(plugins)
        attacks, defenses, detectors = all_registries(plugins)
        check_method_sections(suite, attacks, defenses, detectors)
        data = open_data(suite.data, suite.model)
        dist = None
        if distributed:
            from .distributed import init_from_env

            dist = init_from_env(suite.device)
        reporter = reporter or Reporter(enabled=False)
        if dist is not None and not dist.is_main:
            reporter.enabled = False
        torch_device = dist.device if dist is not None else pick_device(device or suite.device)
        stages = StageExecutor(Cache(cache_dir), data, attacks, defenses, torch_device, reporter, dist=dist,
                               detectors=detectors)
        return cls(suite, attacks, defenses, data, stages, plugins, own, detectors)

    @property
    def cache(self) -> Cache:
        return self.stages.cache

    @property
    def device(self):
        return self.stages.device

    @property
    def is_main(self) -> bool:
        """False on the other ranks of a torchrun job (rank 0 writes and reports)."""
        return self.stages.dist is None or self.stages.dist.is_main

    @property
    def reporter(self) -> Reporter:
        return self.stages.reporter

    def split(self, role: str) -> TensorPairs:
        """A data split by role (pretrain, train, defense, val, test), decoded once per session."""
        return self.stages.split(role)

    def load_model(self, key: str) -> ClipModel:
        """A model artifact of the cache (a ``pretrain``, ``train`` or ``defend`` stage's key)."""
        return self.stages.load_model(key)

    # ---------------------------------------------------------------- methods
    def method(self, kind: str, name: str, seed: int, overrides: dict[str, Any] | None = None) -> Attack | Defense:
        """The attack or defense ``name`` (``kind``: "attack" | "defense") as the plan builds it:
        paper defaults < ``attack_common``/``defense_common`` < ``attacks.<name>``/``defenses.<name>``
        < ``overrides`` (e.g. a tuning candidate). An attack with an optimised trigger (BadCLIP) comes
        with it loaded (:meth:`prepare_trigger`)."""
        if kind == "attack":
            attack = self.attacks.build(name, merge(self.suite.attack_overrides(name), overrides or {}), seed,
                                        image_shape=self.data.image_shape)
            return self.prepare_trigger(name, attack, seed)
        if kind == "defense":
            return self.defenses.build(name, merge(self.suite.defense_overrides(name), overrides or {}), seed)
        raise ValueError(f"kind must be 'attack' or 'defense', got {kind!r}")

    def prepare_trigger(self, name: str, attack: Attack, seed: int) -> Attack:
        """``attack`` with its optimised trigger loaded (BadCLIP; others are returned as they are):
        the plan's ``trigger`` stage, computed into the cache if missing (with the clean model's
        ``pretrain`` stage), so previews and tuning use the trigger a run uses."""
        if not getattr(attack, "optimised_trigger", False):
            return attack
        from .plan import Plan, pretrain_stage, trigger_stage

        plan = Plan(self.suite)
        key = trigger_stage(plan, self.suite, self.data, name, attack, seed, pretrain_stage(plan, self.suite, self.data, seed),
                            self.attacks)
        for node in plan.needed({key}):
            if not self.stages.done(node):
                self.stages.run(node)
        return self.stages.load_trigger(attack, key)

    def target(self, attack: Attack) -> int:
        """The index of the attack's target class in this session's data."""
        return self.data.target_index(attack.config.target)

    def apply_defense(self, defense: Defense, model: ClipModel, seed: int, *, poisoned: TensorPairs | None = None,
                      schedule: TrainConfig | None = None, stage_name: str = "defense") -> TrainStats | None:
        """Apply ``defense`` to ``model`` in place with this session's data (see
        :func:`benchmark.stages.apply_defense`): a training-stage defense re-trains ``model``
        (the clean pre-trained one) on ``poisoned`` under ``schedule`` (default: the suite's
        ``poison_train``); a post-training one fine-tunes it (the backdoored one) on the
        defense split, with the val split at hand."""
        return apply_defense(defense, model, seed, class_names=self.data.class_names, poisoned=poisoned,
                             clean=self.split("defense"), val=self.split("val"),
                             schedule=schedule if schedule is not None else self.suite.poison_train,
                             device=self.device, reporter=self.reporter, stage_name=stage_name)

    def defend(self, defense: Defense, cell: Any) -> ClipModel:
        """``defense`` applied, in memory, to the run of a planned ``cell`` (its cached stages):
        a training-stage defense re-trains the clean pre-trained model on the cell's poisoned
        set, any other fine-tunes the cell's backdoored model. Nothing is cached (the VAL
        tuning tool tries candidates this way)."""
        keys = cell.stage_keys
        training = defense.stage is DefenseStage.TRAINING
        model = self.load_model(keys["pretrain"] if training else keys["poison_train"])
        poisoned = self.stages.load_poisoned(keys["poison"]).data if training else None
        self.apply_defense(defense, model, cell.seed, poisoned=poisoned)
        return model

    # ------------------------------------------------------------------- runs
    def plan(self, attacks: str | Sequence[str] = "all", defenses: str | Sequence[str] = "none",
             seeds: Sequence[int] = (0,), results_dir: str | Path = "results",
             detectors: str | Sequence[str] | None = None) -> Plan:
        """The DAG of stages for attacks x defenses x seeds (names, comma lists or ``all``), and
        attacks x ``detectors`` x seeds (one detection result each). A cell whose configuration
        differs from the suite's own (``--set``) gets its own results folder
        (:func:`benchmark.results.variant_name`). ``defenses`` may be empty (``[]``) when only
        detectors are asked for."""
        chosen = self.defenses.resolve(defenses) if defenses else []
        found = self.detectors.resolve(detectors) if detectors else []
        return make_plan(self.suite, self.data, self.attacks.resolve(attacks), chosen,
                         list(seeds), self.attacks, self.defenses, Path(results_dir), own=self.own_suite,
                         detectors=found, detector_registry=self.detectors)

    def status(self, plan: Plan):
        """What a run of ``plan`` would do now (:class:`~benchmark.run_status.PlanStatus`)."""
        from .run_status import plan_status

        return plan_status(plan, self.stages)

    def costs(self, plan: Plan, nodes: list | None = None, from_data: bool = False):
        """Estimated seconds of ``nodes`` (default: the stages to run), :class:`~benchmark.cost.PlanCost`.
        Split sizes come from the configuration; ``from_data`` counts the decoded splits instead
        (embedded data only: exact, and cheap once decoded)."""
        from .cost import estimate_cost, split_size

        nodes = nodes if nodes is not None else self.status(plan).to_run
        size = (lambda role: len(self.split(role))) if from_data else (lambda role: split_size(self.suite, role))
        return estimate_cost(plan, nodes, self.cache.root, size)

    def worker_spec(self):
        """What a worker process needs to open the same session (picklable)."""
        from .tasks import WorkerSpec

        return WorkerSpec(str(self.cache.root), self.suite, self.suite.device, self.plugins)

    def run(self, plan: Plan, executor: Any = "auto", status: Any = None):
        """Run ``plan`` (:func:`benchmark.runner.run_plan`) and return its :class:`~benchmark.runner.RunReport`.

        ``executor``: ``"auto" | "local" | "process" | "ray"``, an
        :class:`~benchmark.executors.ExecutorChoice`, or a built executor."""
        from .executors import ExecutorChoice, make_executor
        from .runner import run_plan

        status = status if status is not None else self.status(plan)
        choice = ExecutorChoice(executor) if isinstance(executor, str) else executor
        if isinstance(choice, ExecutorChoice):
            if self.stages.dist is not None:
                if choice.kind not in ("auto", "local"):
                    raise ConfigError(f"--executor {choice.kind} cannot be combined with torchrun; "
                                      "torchrun runs every stage itself")
                choice = ExecutorChoice("local", choice.jobs, choice.address, choice.gpus_per_task)
            pool = make_executor(choice, self.stages, status.width, self.device.type == "cuda")
        else:
            pool = choice
        return run_plan(plan, self.stages, pool, self.worker_spec(), self.costs(plan, status.to_run).seconds,
                        status=status)


def check_method_sections(suite: SuiteConfig, attacks: Registry, defenses: Registry,
                          detectors: Registry | None = None) -> None:
    """``attacks.<name>`` / ``defenses.<name>`` / ``detectors.<name>`` settings must name known methods."""
    import difflib

    sections = [("attacks", attacks), ("defenses", defenses)] + ([("detectors", detectors)] if detectors else [])
    for section, reg in sections:
        for name in getattr(suite, section) or {}:
            if name not in reg:
                close = difflib.get_close_matches(name, reg.names(), n=1, cutoff=0.5)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(f"{section}.{name}: no {reg.kind} is called {name!r}; {hint}"
                                  f"choose from {', '.join(reg.names())} (or load it with --plugin)")
