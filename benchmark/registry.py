"""Lazy registries of attacks and defenses.

A registry maps a snake_case name to an import string ``"module:Class"``; the class is
imported on first use (lm-evaluation-harness style), so ``clipbench list`` never imports
torch-heavy method code. Names come from three places, in this order:

1. the built-in table (``attacks.BUILTIN`` / ``defenses.BUILTIN``), import-light;
2. installed plugins, through the entry-point groups ``clipbench.attacks`` and
   ``clipbench.defenses`` (unless ``CLIPBENCH_DISABLE_PLUGINS=1``);
3. explicit registrations (``Registry.register`` or ``--plugin module:Class``).

A name claimed twice is a conflict: it is reported, never silently shadowed.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, TypeVar

T = TypeVar("T")

DISABLE_ENV = "CLIPBENCH_DISABLE_PLUGINS"
RESERVED = frozenset({"all"})


class RegistryError(LookupError):
    """An unknown, broken or conflicting method name; the message says the fix."""


@dataclass
class Entry:
    """One registered method: where it comes from and how to import it."""

    name: str
    target: str  # "module:Class"
    source: str  # "builtin", "plugin <dist> <version>", or "explicit"
    loaded: Any = None
    error: str | None = None
    conflicts: list[str] = field(default_factory=list)

    @property
    def is_builtin(self) -> bool:
        return self.source == "builtin"


def import_target(target: str) -> Any:
    """Import ``"package.module:Attr"`` and return the attribute."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"bad import string {target!r}: expected 'module:Class'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RegistryError(f"{module_name!r} has no attribute {attr!r} (from {target!r})") from None


class Registry(Generic[T]):
    """A lazy name -> class table for one kind of method ("attack" or "defense")."""

    def __init__(self, kind: str, builtin: dict[str, str], group: str | None = None, base: type | None = None):
        self.kind = kind
        self.group = group
        self.base = base
        self._entries: dict[str, Entry] = {}
        for name, target in builtin.items():
            self._add(Entry(name, target, "builtin"))
        if group and os.environ.get(DISABLE_ENV, "") not in ("1", "true", "yes"):
            self._discover(group)

    # -- building -------------------------------------------------------------------
    def _add(self, entry: Entry) -> None:
        if entry.name in RESERVED:
            raise RegistryError(f"{self.kind} name {entry.name!r} is reserved by the CLI; rename it")
        existing = self._entries.get(entry.name)
        if existing is None:
            self._entries[entry.name] = entry
        elif existing.target != entry.target:
            existing.conflicts.append(f"{entry.target} ({entry.source})")

    def _discover(self, group: str) -> None:
        for ep in importlib.metadata.entry_points(group=group):
            dist = getattr(ep, "dist", None)
            source = f"plugin {dist.name} {dist.version}" if dist else "plugin"
            self._add(Entry(ep.name, ep.value, source))

    def register(self, name: str, target: str | type, source: str = "explicit") -> None:
        """Add a method by import string or class (``--plugin``, tests, notebooks)."""
        if isinstance(target, str):
            self._add(Entry(name, target, source))
        else:
            entry = Entry(name, f"{target.__module__}:{target.__qualname__}", source, loaded=target)
            self._add(entry)

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
                f"{', '.join(entry.conflicts)}; uninstall or rename one of them"
            )
        if entry.loaded is None:
            try:
                entry.loaded = import_target(entry.target)
            except Exception as exc:  # a broken plugin fails only when selected
                entry.error = f"{type(exc).__name__}: {exc}"
                raise RegistryError(
                    f"{self.kind} {name!r} ({entry.source}) failed to import from {entry.target}: "
                    f"{entry.error}; fix or uninstall that package, or set {DISABLE_ENV}=1"
                ) from exc
            if self.base is not None and not (isinstance(entry.loaded, type) and issubclass(entry.loaded, self.base)):
                entry.error = f"{entry.target} is not a subclass of {self.base.__name__}"
                loaded, entry.loaded = entry.loaded, None
                raise RegistryError(f"{self.kind} {name!r}: {entry.error} (got {loaded!r})")
        return entry.loaded

    def try_load_all(self) -> None:
        """Import every entry, recording (not raising) errors: for ``clipbench list``."""
        for name in self.names():
            try:
                self.get(name)
            except RegistryError as exc:
                if self._entries[name].error is None:
                    self._entries[name].error = str(exc)

    def resolve(self, spec: str | Iterable[str]) -> list[str]:
        """Expand ``"all"`` or a comma list into known names; unknown names raise."""
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        items = [s.strip() for s in items if s.strip()]
        if items == ["all"]:
            return self.names()
        for name in items:
            self.entry(name)
        return list(dict.fromkeys(items))


def attack_registry() -> "Registry":
    """A fresh registry of attacks (built-ins plus installed plugins)."""
    from .api import Attack

    return Registry("attack", importlib.import_module("attacks").BUILTIN, "clipbench.attacks", Attack)


def defense_registry() -> "Registry":
    """A fresh registry of defenses (built-ins plus installed plugins)."""
    from .api import Defense

    return Registry("defense", importlib.import_module("defenses").BUILTIN, "clipbench.defenses", Defense)
