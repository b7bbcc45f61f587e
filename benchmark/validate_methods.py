"""Checks of the suite and the selected methods, for the validation pass of ``clipbench run``.

The suite file (found, valid YAML, known keys, typed values) and every ``--set`` value on
its own, so that several bad values are reported together (messages name the full key,
``pretrain.epochs``, or the ``attack_common`` / ``defense_common`` key the user set);
every ``--plugin`` (imports, defines a method) and every selected method (imports, no
name conflict, its resolved config is valid and builds, its target is a class of the
data). Used by :func:`benchmark.validate.check_run`.
"""
from __future__ import annotations

import re
from typing import Any

from .validate_options import Findings


def load_checked_suite(name: str, overrides: list[str], findings: Findings) -> Any:
    """The suite with its valid ``--set`` values (None if the suite itself is bad); every bad ``--set``
    is filed on its own."""
    from .config import ConfigError, parse_set
    from .suite import load_suite

    good: list[str] = []
    for item in overrides:
        try:
            parse_set([item])
            good.append(item)
        except ConfigError as exc:
            findings.add(str(exc))
    try:
        load_suite(name)  # the file itself first: its problems are not the --set values
    except ConfigError as exc:
        findings.add(str(exc))
        return None
    try:
        return load_suite(name, parse_set(good))
    except ConfigError as combined:
        alone_ok = []
        for item in good:  # which --set values are bad on their own
            try:
                load_suite(name, parse_set([item]))
                alone_ok.append(item)
            except ConfigError as exc:
                findings.add(str(exc))
        if len(alone_ok) == len(good):  # only their combination is invalid
            findings.add(str(combined))
            return None
        try:  # the other checks go on with the valid values, so that every problem is reported at once
            return load_suite(name, parse_set(alone_ok))
        except ConfigError as exc:
            findings.add(str(exc))
            return None


def _origin(message: str, section: str, name: str, suite: Any) -> str:
    """Name the key the user set: ``attacks.badnet.poison_rate`` came from ``attack_common`` if it is only there."""
    common = getattr(suite, "attack_common" if section == "attacks" else "defense_common") or {}
    own = (getattr(suite, section) or {}).get(name) or {}
    common_key = "attack_common" if section == "attacks" else "defense_common"

    def paths(tree: dict, prefix: str = "") -> list[str]:  # dotted keys, deepest first
        out: list[str] = []
        for k, v in tree.items():
            if isinstance(v, dict) and v:
                out += paths(v, f"{prefix}{k}.")
            out.append(f"{prefix}{k}")
        return out

    def has(tree: dict, dotted: str) -> bool:
        for part in dotted.split("."):
            if not isinstance(tree, dict) or part not in tree:
                return False
            tree = tree[part]
        return True

    for key in paths(common):  # a nested key (train.batch_size) the method's own section does not set
        if not has(own, key):
            message = re.sub(rf"\b{section}\.{re.escape(name)}\.{re.escape(key)}\b", f"{common_key}.{key}", message)
    return message


def _full_key(message: str, section: str, name: str, fields: set[str]) -> str:
    """``patch_size=40 ... does not fit`` (raised by a method's constructor) -> ``attacks.badnet.patch_size=40 ...``."""
    m = re.match(r"([a-z_][a-z0-9_]*)=", message)
    if m and m.group(1) in fields:
        return f"{section}.{name}.{message}"
    if message.startswith(f"{section}.{name}"):
        return message
    return f"{section}.{name}: {message}"


# ------------------------------------------------------------------------------ methods
def registries_with_plugins(plugins: list[str], findings: Findings, detectors: Any = None):
    """The attack and defense registries with ``plugins`` loaded (problems filed); a given
    ``detectors`` registry receives the plugins' detectors."""
    from .plugins import load_plugins
    from .registry import RegistryError, attack_registry, defense_registry

    attacks, defenses = attack_registry(), defense_registry()
    for spec in plugins:
        try:
            load_plugins([spec], attacks=attacks, defenses=defenses, detectors=detectors)
        except RegistryError as exc:
            findings.add(str(exc))
        except Exception as exc:  # noqa: BLE001 - a plugin's import can raise anything
            findings.add(f"--plugin {spec!r} failed to import: {type(exc).__name__}: {exc}; fix it")
    return attacks, defenses


def selected_methods(reg: Any, names: list[str], findings: Findings) -> list[str]:
    """Known, importable names (``all``: every one); unknown, broken and conflicting ones are filed."""
    from .registry import RegistryError

    names = reg.names() if names == ["all"] else [n for n in names if n != "all"]
    out = []
    for name in names:
        if name not in reg:
            findings.add(reg.unknown_message(name))
            continue
        try:
            reg.get(name)
            out.append(name)
        except RegistryError as exc:
            findings.add(str(exc))
    return out


def section_problems(suite: Any, attacks: Any, defenses: Any, findings: Findings, detectors: Any = None) -> None:
    import difflib

    for section, reg in (("attacks", attacks), ("defenses", defenses), *((("detectors", detectors),) if detectors else ())):
        for name in getattr(suite, section) or {}:
            if name not in reg:
                close = difflib.get_close_matches(name, reg.names(), n=1, cutoff=0.5)
                hint = f"did you mean {close[0]!r}? " if close else ""
                findings.add(f"{section}.{name}: no {reg.kind} is called {name!r}; {hint}"
                             f"choose from {', '.join(reg.names())} (or load it with --plugin)")


def method_problems(suite: Any, reg: Any, section: str, names: list[str], seeds: list[int], image_shape: Any,
                     bundle: Any, findings: Findings) -> None:
    import dataclasses

    from .config import ConfigError, from_dict

    for name in names:
        cls = reg.get(name)
        overrides = {"attacks": suite.attack_overrides, "defenses": suite.defense_overrides,
                     "detectors": suite.detector_overrides}[section](name)
        try:
            config = from_dict(cls.Config, overrides, prefix=f"{section}.{name}.")
        except ConfigError as exc:
            findings.add(_origin(str(exc), section, name, suite))
            continue
        fields = {f.name for f in dataclasses.fields(config)}
        for seed in seeds or [0]:
            try:
                cls(config, seed=seed, **({"image_shape": image_shape} if section == "attacks" else {}))
            except (ConfigError, ValueError, TypeError) as exc:
                findings.add(_origin(_full_key(str(exc), section, name, fields), section, name, suite))
                break
            except Exception as exc:  # noqa: BLE001 - a plugin's constructor: bad input all the same
                findings.add(f"{section}.{name}: {reg.kind} {name!r} cannot be built ({type(exc).__name__}: {exc}); "
                             "fix its configuration or its code")
                break
        target = getattr(config, "target", None)
        if section == "attacks" and target is None and hasattr(config, "target"):
            findings.add(f"attacks.{name}: no target class; set attack_common.target (or attacks.{name}.target) "
                         "in the suite to a class of its data, e.g. --set attack_common.target=<class>")
        elif section == "attacks" and bundle is not None and target is not None and target not in bundle.class_names:
            key = _origin(f"attacks.{name}.target", section, name, suite)
            shown = ", ".join(bundle.class_names[:12]) + (", ..." if len(bundle.class_names) > 12 else "")
            findings.add(f"{key}={target!r} is not a class of this suite's data; choose one of {shown}")
