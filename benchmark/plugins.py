"""``--plugin`` loading: register the methods of a ``module:Class`` or a ``.py`` file.

A file is imported as a uniquely named module (its SHA-256 in the name and in the cache
keys, so editing it invalidates what was computed with it); ``module:Class`` plugins are
fingerprinted by their source file. See :mod:`benchmark.registry` for the rules.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from .registry import Registry, RegistryError, import_target


def _load_file(path: Path) -> Any:
    """Import a ``.py`` file as a uniquely named module (registered in ``sys.modules``)."""
    code = path.read_bytes()
    digest = hashlib.sha256(code).hexdigest()
    module_name = f"clipbench_local_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest[:12]}"
    if module_name in sys.modules:
        return sys.modules[module_name], digest
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RegistryError(f"--plugin {str(path)!r} cannot be imported as a Python module; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look classes up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module, digest


def _source_digest(cls: type) -> str | None:
    """``local sha256:<hex>`` of the file defining ``cls`` (None when it has no file)."""
    import inspect

    try:
        source_file = inspect.getsourcefile(cls)
        return f"local sha256:{hashlib.sha256(Path(source_file).read_bytes()).hexdigest()}" if source_file else None
    except (OSError, TypeError):
        return None


def load_plugins(specs: Iterable[str], attacks: Registry | None = None, defenses: Registry | None = None,
                 detectors: Registry | None = None) -> list[str]:
    """Register the methods named by ``--plugin`` specs; return ``"kind name"`` labels.

    A spec is ``module:Class`` (an Attack, Defense or Detector subclass, registered under its
    ``name``) or a path to a ``.py`` file (every Attack/Defense/Detector subclass *defined* in it).
    An explicit plugin that cannot be loaded is bad input: a one-line RegistryError.
    """
    from .api import Attack, Defense, Detector, ModelDetector, SampleDetector

    added: list[str] = []
    bases = (Attack, Defense, Detector)
    abstract = (Attack, Defense, Detector, SampleDetector, ModelDetector)

    def add(cls: type, source: str, fingerprint: str | None) -> None:
        if issubclass(cls, Attack):
            reg, kind = attacks, "attack"
        elif issubclass(cls, Detector):
            reg, kind = detectors, "detector"
        else:
            reg, kind = defenses, "defense"
        name = getattr(cls, "name", "")
        if not name:
            raise RegistryError(f"--plugin {source.removeprefix('local ')}: {cls.__qualname__} has no `name`; "
                                "set a class attribute name = 'snake_case_name'")
        if reg is not None:
            reg.register(name, cls, source=source, fingerprint=fingerprint)
        added.append(f"{kind} {name}")

    for spec in specs:
        spec = spec.strip()
        path = Path(spec).expanduser()
        if spec.endswith(".py") or path.is_file():
            if not path.is_file():
                raise RegistryError(f"--plugin {spec!r}: no such file; give a path to a .py file or module:Class")
            try:
                module, digest = _load_file(path)
            except RegistryError:
                raise
            except Exception as exc:
                raise RegistryError(f"--plugin {spec!r} failed to import: {type(exc).__name__}: {exc}; fix the file") from exc
            classes = [obj for obj in vars(module).values()
                       if isinstance(obj, type) and issubclass(obj, bases) and obj not in abstract
                       and obj.__module__ == module.__name__]
            if not classes:
                raise RegistryError(f"--plugin {spec!r} defines no subclass of benchmark.Attack, benchmark.Defense "
                                    "or benchmark.Detector")
            for cls in classes:
                add(cls, f"local {path}", f"local sha256:{digest}")
        elif ":" in spec:
            try:
                obj = import_target(spec)
            except RegistryError:
                raise
            except Exception as exc:
                raise RegistryError(f"--plugin {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc
            if not (isinstance(obj, type) and issubclass(obj, bases)):
                raise RegistryError(f"--plugin {spec!r} is not a subclass of benchmark.Attack, benchmark.Defense "
                                    "or benchmark.Detector")
            add(obj, f"local {spec}", _source_digest(obj))
        else:
            raise RegistryError(f"--plugin {spec!r}: expected module:Class or a path to a .py file")
    return added
