"""Lazy registries of attacks, defenses and detectors (name -> class -> configured instance).

A registry maps a snake_case name to an import string ``"module:Class"``; the class is
imported on first use (lm-evaluation-harness style), so ``clipbench list`` never imports
torch-heavy method code it does not need. Names come from three places, in this order:

1. the built-in table (``attacks.BUILTIN`` / ``defenses.BUILTIN`` /
   ``defenses.detectors.BUILTIN``), import-light (the
   entry points of an editable install are frozen at install time, so built-ins do not
   go through them);
2. installed plugins, through the entry-point groups ``clipbench.attacks``,
   ``clipbench.defenses`` and ``clipbench.detectors`` (skipped when ``CLIPBENCH_DISABLE_PLUGINS=1``);
3. explicit registrations: ``--plugin module:Class``, ``--plugin path/to/file.py`` (every
   Attack/Defense/Detector subclass the file defines, under its ``name``; see
   :mod:`benchmark.plugins`), or :meth:`Registry.register` from a notebook or a test.

Rules:

- A name claimed twice (by different classes) is a *conflict*: it is listed as such and
  selecting it fails with both sources named; nothing is silently shadowed.
- A plugin that fails to import (or is not a subclass of the right base, or declares
  another ``name`` than its entry point) is listed with its error and fails only when
  selected: one broken package never breaks the other methods.
- Names are lowercase snake_case and equal the class's ``name``, the entry-point name
  and the result path segment; ``all`` is reserved by the CLI.

The *source* string of an entry is part of the result-file contract (``attack.source`` /
``defense.source`` / ``detector.source``): ``"builtin"``; ``"plugin <distribution> <version>"`` for an installed
package; ``"local <path.py>"`` or ``"local <module:Class>"`` for ``--plugin``. Anything
but ``"builtin"`` is a plugin (see :func:`is_plugin`); the leaderboard marks those.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import re
from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, TypeVar

T = TypeVar("T")

DISABLE_ENV = "CLIPBENCH_DISABLE_PLUGINS"
RESERVED = frozenset({"all"})
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
ATTACK_GROUP = "clipbench.attacks"
DEFENSE_GROUP = "clipbench.defenses"
DETECTOR_GROUP = "clipbench.detectors"


class RegistryError(LookupError):
    """An unknown, broken or conflicting method name; the message says the fix."""


def plugins_disabled() -> bool:
    """True when ``CLIPBENCH_DISABLE_PLUGINS`` is set to 1/true/yes."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_plugin(source: str) -> bool:
    """Whether a result's ``source`` string denotes a third-party (non built-in) method."""
    return source != "builtin"


@dataclass
class Entry:
    """One registered method: where it comes from and how to import it."""

    name: str
    target: str  # "module:Class"
    source: str  # "builtin", "plugin <dist> <version>" or "local <spec>"
    loaded: Any = None
    error: str | None = None
    conflicts: list[str] = field(default_factory=list)
    fingerprint: str | None = None  # for local files: sha256 of the code (goes into cache keys)

    @property
    def is_builtin(self) -> bool:
        return self.source == "builtin"


def import_target(target: str) -> Any:
    """Import ``"package.module:Attr"`` and return the attribute."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"bad import string {target!r}: expected 'module:Class'")
    module = importlib.import_module(module_name)
    obj: Any = module
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise RegistryError(f"{module_name!r} has no attribute {attr!r} (from {target!r})") from None
    return obj


class Registry(Generic[T]):
    """A lazy name -> class table for one kind of method ("attack", "defense" or "detector")."""

    def __init__(self, kind: str, builtin: dict[str, str], group: str | None = None, base: type | None = None):
        self.kind = kind
        self.group = group
        self.base = base
        self._entries: dict[str, Entry] = {}
        self.problems: list[str] = []  # plugins that could not even be registered (bad names, broken metadata)
        for name, target in builtin.items():
            if name in RESERVED or not NAME_RE.match(name):
                raise RegistryError(f"{kind} name {name!r} is reserved by the CLI or not snake_case; rename it")
            self._add(Entry(name, target, "builtin"))
        if group and not plugins_disabled():
            self._discover(group)

    # -- building -------------------------------------------------------------------
    def _add(self, entry: Entry) -> None:
        if entry.name in RESERVED or not NAME_RE.match(entry.name):
            raise RegistryError(f"{self.kind} name {entry.name!r} from {entry.source} is "
                                f"{'reserved by the CLI' if entry.name in RESERVED else 'not lowercase snake_case'}; rename it")
        existing = self._entries.get(entry.name)
        if existing is None:
            self._entries[entry.name] = entry
        elif existing.target != entry.target or (existing.loaded is not None and entry.loaded is not None
                                                  and existing.loaded is not entry.loaded):
            label = f"{entry.target} ({entry.source})"
            if label not in existing.conflicts:
                existing.conflicts.append(label)

    def _discover(self, group: str) -> None:
        try:
            eps = importlib.metadata.entry_points(group=group)
        except Exception as exc:  # broken metadata of some distribution: report, keep the built-ins
            self.problems.append(f"entry points of group {group!r} could not be read: {type(exc).__name__}: {exc}")
            return
        for ep in eps:
            dist = getattr(ep, "dist", None)
            source = f"plugin {dist.name} {dist.version}" if dist is not None else "plugin (unknown distribution)"
            try:
                self._add(Entry(ep.name, ep.value, source))
            except RegistryError as exc:  # a bad name: listed as a problem, never fatal
                self.problems.append(str(exc))

    def register(self, name: str, target: str | type, source: str = "local", fingerprint: str | None = None) -> None:
        """Add a method by import string or class (``--plugin``, tests, notebooks)."""
        if isinstance(target, str):
            self._add(Entry(name, target, source, fingerprint=fingerprint))
        else:
            self._add(Entry(name, f"{target.__module__}:{target.__qualname__}", source, loaded=target,
                            fingerprint=fingerprint))

    # -- reading --------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return f"unknown {self.kind} {name!r}: {hint}choose from {', '.join(self.names()) or '(none)'}"

    def get(self, name: str) -> type[T]:
        """The class for ``name``, imported on first use."""
        entry = self.entry(name)
        if entry.conflicts:
            raise RegistryError(
                f"{self.kind} {name!r} is defined twice: {entry.target} ({entry.source}) and "
                f"{', '.join(entry.conflicts)}; uninstall or rename one of them, or set {DISABLE_ENV}=1"
            )
        if entry.loaded is None:
            try:
                loaded = import_target(entry.target)
            except Exception as exc:  # a broken plugin fails only when selected
                entry.error = f"{type(exc).__name__}: {exc}"
                raise RegistryError(
                    f"{self.kind} {name!r} ({entry.source}) failed to import from {entry.target}: "
                    f"{entry.error}; fix or uninstall that package, or set {DISABLE_ENV}=1"
                ) from exc
            self._check_class(entry, loaded)
            entry.loaded = loaded
        return entry.loaded

    def build(self, name: str, overrides: dict[str, Any] | None = None, seed: int = 0, **kwargs: Any) -> T:
        """An instance of ``name``: its ``Config`` from ``overrides`` (strict keys, typed values;
        errors name ``<kind>s.<name>.<key>``), constructed with ``seed`` and ``kwargs``
        (e.g. an attack's ``image_shape``)."""
        from .config import from_dict

        cls = self.get(name)
        config = from_dict(cls.Config, overrides or {}, prefix=f"{self.kind}s.{name}.")
        return cls(config, seed=seed, **kwargs)

    def _check_class(self, entry: Entry, loaded: Any) -> None:
        if self.base is not None and not (isinstance(loaded, type) and issubclass(loaded, self.base)):
            entry.error = f"{entry.target} is not a subclass of {self.base.__name__}"
            raise RegistryError(f"{self.kind} {entry.name!r} ({entry.source}): {entry.error} (got {loaded!r}); "
                                f"derive it from benchmark.{self.base.__name__}")
        declared = getattr(loaded, "name", entry.name)
        if declared != entry.name:
            entry.error = f"{entry.target} declares name {declared!r} but is registered as {entry.name!r}"
            raise RegistryError(f"{self.kind} {entry.name!r} ({entry.source}): {entry.error}; make the class's "
                                "`name` and the entry-point name equal")

    def try_load_all(self) -> None:
        """Import every entry, recording (not raising) errors: for ``clipbench list``."""
        for name in self.names():
            if self._entries[name].conflicts:
                continue
            try:
                self.get(name)
            except RegistryError as exc:
                if self._entries[name].error is None:
                    self._entries[name].error = str(exc)

    def identity(self, name: str) -> dict[str, str]:
        """What, besides name/version/config, identifies the method's code in cache keys.

        Empty for built-ins (their ``version`` class attribute covers code changes, and
        existing caches stay valid); the distribution and version for installed plugins;
        the SHA-256 of the file for ``--plugin file.py`` (editing it invalidates the cache).
        """
        entry = self.entry(name)
        if entry.is_builtin:
            return {}
        if entry.fingerprint:
            return {"source": entry.fingerprint}
        return {"source": entry.source}

    def resolve(self, spec: str | Iterable[str]) -> list[str]:
        """Expand ``"all"`` or a comma list into known names; unknown names raise."""
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        items = [s.strip() for s in items if s.strip()]
        if items == ["all"]:
            return self.names()
        if not items:
            raise RegistryError(f"no {self.kind} given: name one or more, comma-separated, or 'all'")
        for name in items:
            self.entry(name)
        return list(dict.fromkeys(items))


def attack_registry(plugins: Iterable[str] = ()) -> "Registry":
    """A fresh registry of attacks (built-ins, installed plugins, then ``plugins`` specs)."""
    from .api import Attack

    reg = Registry("attack", importlib.import_module("attacks").BUILTIN, ATTACK_GROUP, Attack)
    if plugins:
        from .plugins import load_plugins

        load_plugins(plugins, attacks=reg)
    return reg


def defense_registry(plugins: Iterable[str] = ()) -> "Registry":
    """A fresh registry of defenses (built-ins, installed plugins, then ``plugins`` specs)."""
    from .api import Defense

    reg = Registry("defense", importlib.import_module("defenses").BUILTIN, DEFENSE_GROUP, Defense)
    if plugins:
        from .plugins import load_plugins

        load_plugins(plugins, defenses=reg)
    return reg


def detector_registry(plugins: Iterable[str] = ()) -> "Registry":
    """A fresh registry of detectors (built-ins, installed plugins, then ``plugins`` specs)."""
    from .api import Detector

    reg = Registry("detector", importlib.import_module("defenses.detectors").BUILTIN, DETECTOR_GROUP, Detector)
    if plugins:
        from .plugins import load_plugins

        load_plugins(plugins, detectors=reg)
    return reg


def registries(plugins: Iterable[str] = ()) -> tuple["Registry", "Registry"]:
    """The attack and defense registries with the ``--plugin`` specs loaded into both."""
    attacks, defenses, _ = all_registries(plugins)
    return attacks, defenses


def all_registries(plugins: Iterable[str] = ()) -> tuple["Registry", "Registry", "Registry"]:
    """The attack, defense and detector registries with the ``--plugin`` specs loaded into each."""
    from .plugins import load_plugins

    attacks, defenses, detectors = attack_registry(), defense_registry(), detector_registry()
    load_plugins(plugins, attacks=attacks, defenses=defenses, detectors=detectors)
    return attacks, defenses, detectors
