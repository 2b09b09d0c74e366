"""Typed configuration dataclasses and ``--set key=value`` overrides.

Model and training configs are plain dataclasses. :func:`apply_overrides` parses
``key=value`` strings against the dataclass field types, so an unknown key or a value
of the wrong type is a one-line :class:`~gencraft.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, TypeVar

from gencraft.errors import ConfigError

T = TypeVar("T")


def _convert(value: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value.lower() in ("none", "null", ""):
            return None
        for a in args:
            try:
                return _convert(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"--set {key}={value}: expected {tp}")
    if tp is bool:
        v = value.lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--set {key}={value}: expected true or false")
    if tp is int:
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"--set {key}={value}: expected an integer") from None
        if not f.is_integer():
            raise ConfigError(f"--set {key}={value}: expected an integer")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"--set {key}={value}: expected a number") from None
    if tp is str:
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        try:
            v = json.loads(value)
        except json.JSONDecodeError:
            v = [s for s in value.split(",") if s]
        if not isinstance(v, list):
            raise ConfigError(f"--set {key}={value}: expected a list")
        return v
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"--set {key}={value}: expected one of {', '.join(map(str, choices))}")
        return value
    return value


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--set {p!r}: expected key=value")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def apply_overrides(configs: list[Any], pairs: list[str] | dict[str, str] | None) -> list[Any]:
    """Return copies of ``configs`` (dataclass instances) with ``key=value`` overrides applied.

    Each key must name a field of exactly one of the configs (the first that has it wins);
    otherwise it is a :class:`ConfigError` listing the valid keys.
    """
    items = parse_overrides(pairs) if not isinstance(pairs, dict) else dict(pairs)
    out = [dataclasses.replace(c) for c in configs]
    for key, raw in items.items():
        for i, c in enumerate(out):
            hints = typing.get_type_hints(type(c))
            fields = {f.name for f in dataclasses.fields(c)}
            if key in fields:
                out[i] = dataclasses.replace(c, **{key: _convert(raw, hints[key], key)})
                break
        else:
            valid = sorted({f.name for c in out for f in dataclasses.fields(c)})
            raise ConfigError(f"--set {key}: unknown key; valid keys are {', '.join(valid)}", param=key)
    return out


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass from a dict, ignoring unknown keys (older/newer run files)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})
