"""Typed configuration: dataclasses, strict loading, ``--set`` overrides and hashing.

Precedence (lowest first): a method's dataclass defaults (the paper's) < the suite YAML
< ``--set key=value``. Unknown keys are errors with a did-you-mean suggestion; values
are checked against the field's type; ``__post_init__`` of each dataclass validates
ranges. Everything that can change a result goes into a config and into its hash.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """Invalid configuration. The message names the key, the value and the fix."""


class InvalidValue(ConfigError):
    """A value outside its valid range (raised by :func:`check`); :func:`from_dict` prefixes ``key``
    with the section it is in, so that the message names the full key (``pretrain.epochs``)."""

    def __init__(self, key: str, value: Any, fix: str):
        self.key, self.value, self.fix = key, value, fix
        super().__init__(f"{key}={value!r} is invalid: {fix}")

    def under(self, prefix: str) -> "InvalidValue":
        """The same error with ``key`` placed under ``prefix`` (``"pretrain."``), unless it already is."""
        if not prefix or self.key.startswith(prefix):
            return self
        return InvalidValue(prefix + self.key, self.value, self.fix)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert where lossless."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping (key: value), got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is not Any:  # e.g. attacks: dict[str, dict]: each value a mapping too
            return {k: _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    if tp is list and not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def unknown_key_message(key: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r} in {where}: {hint}valid keys are {', '.join(sorted(known))}"


def from_dict(cls: type[C], data: dict[str, Any] | None, prefix: str = "") -> C:
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys raise)."""
    data = dict(data or {})
    types_ = field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types_:
            raise ConfigError(unknown_key_message(prefix + key, list(types_), cls.__name__))
        kwargs[key] = _coerce(value, types_[key], prefix + key)
    try:
        return cls(**kwargs)
    except InvalidValue as exc:
        raise exc.under(prefix) from None
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """Plain JSON-able data from nested dataclasses."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two plain mappings (override wins)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested mapping; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"malformed --set {item!r}: write it as --set section.key=value, e.g. --set pretrain.epochs=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
            try:
                value = float(value) if any(ch in value for ch in ".eE") else int(value)
            except ValueError:
                pass
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with an earlier --set of {part!r}")
        node[parts[-1]] = value
    return out


def canonical_json(data: Any) -> str:
    return json.dumps(to_dict(data), sort_keys=True, separators=(",", ":"), default=str)


def config_hash(data: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``data`` (dataclasses allowed)."""
    return "sha256:" + hashlib.sha256(canonical_json(data).encode()).hexdigest()


def check(condition: bool, key: str, value: Any, fix: str) -> None:
    """Raise a one-line ConfigError unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise InvalidValue(key, value, fix)
