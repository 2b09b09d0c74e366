"""Typed configuration dataclasses, their allowed ranges, and ``--set key=value`` overrides.

Model and training configs are plain dataclasses. :func:`apply_overrides` parses
``key=value`` strings against the dataclass field types, so an unknown key or a value
of the wrong type is a one-line :class:`~gencraft.errors.ConfigError`.

Every config class may declare the allowed values of its fields in a class attribute
``LIMITS: ClassVar[dict[str, Range | tuple[str, ...]]]`` (a numeric :class:`Range` or a tuple of
choices). :func:`validate` checks every field against its type (NaN and infinity are never a
valid float) and its limit; it runs wherever a config enters gencraft: after ``--set`` overrides
(:func:`apply_overrides`) and when a config is read back from a file (:func:`from_dict`), so a
bad value is one line naming the setting (or the file and field) and the allowed range.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, NamedTuple, TypeVar

from gencraft.errors import ConfigError

T = TypeVar("T")


class Range(NamedTuple):
    """The allowed interval of a numeric setting (closed unless ``lo_open``/``hi_open``)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: object) -> bool:
        if not isinstance(v, int | float) or isinstance(v, bool):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def __str__(self) -> str:
        def fmt(x: float) -> str:
            return f"{x:g}" if isinstance(x, float) else f"{x:,}".replace(",", "_") if abs(x) >= 10**5 else str(x)
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {fmt(self.lo)}" if self.lo is not None else "any number"
        lo = "(" if self.lo_open else "["
        hi = ")" if self.hi_open else "]"
        return f"{lo}{fmt(self.lo) if self.lo is not None else '-inf'}, {fmt(self.hi)}{hi}"


Limit = Range | tuple[str, ...]


def _label(where: str, name: str) -> str:
    """How a message names a setting: ``--set NAME`` or ``FILE: field PREFIX.NAME``."""
    return where.format(name=name) if "{name}" in where else f"{where} {name}"


def _type_problem(v: Any, tp: Any) -> str | None:
    """Why ``v`` is not a value of the annotated type ``tp`` (None when it is)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        problems = [_type_problem(v, a) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        return None if v in choices else f"expected one of {', '.join(map(str, choices))}"
    if tp is bool:
        return None if isinstance(v, bool) else "expected true or false"
    if tp is int:
        return None if isinstance(v, int) and not isinstance(v, bool) else "expected an integer"
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return "expected a number"
        return None if math.isfinite(v) else "expected a finite number"
    if tp is str:
        return None if isinstance(v, str) else "expected a string"
    if origin in (list, tuple) or tp in (list, tuple):
        return None if isinstance(v, list | tuple) else "expected a list"
    if origin is dict or tp is dict:
        return None if isinstance(v, dict) else "expected a mapping"
    return None


def check_value(label: str, v: Any, limit: Limit, *, integer: bool = False, param: str | None = None) -> Any:
    """Check one plain argument (``--max-time``, ``--upscale``...) against ``limit``; returns it.

    NaN, infinity and values of the wrong type are errors too (:class:`ConfigError` naming ``label``).
    """
    problem = _type_problem(v, int if integer else float)
    if problem is None and isinstance(limit, Range) and v not in limit:
        problem = f"must be in {limit}" if limit.hi is not None else f"must be {limit}"
    elif problem is None and isinstance(limit, tuple) and v not in limit:
        problem = f"expected one of {', '.join(map(str, limit))}"
    if problem is not None:
        raise ConfigError(f"{label} {v}: {problem}", param=param or label.lstrip("-").replace("-", "_"))
    return v


def validate(cfg: Any, where: str = "--set") -> None:
    """Check every field of the config dataclass ``cfg`` against its type and its ``LIMITS``.

    ``where`` says how the message names a setting: ``"--set"`` (-> ``--set lr=nan: ...``) or a
    template with ``{name}`` (``"runs/x/gencraft.json: field model.{name}"``). Raises
    :class:`ConfigError` (``param`` = the field name) for the first bad field.
    """
    hints = typing.get_type_hints(type(cfg))
    limits: dict[str, Limit] = getattr(type(cfg), "LIMITS", {})
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        label = _label(where, f.name)
        problem = _type_problem(v, hints.get(f.name, Any))
        lim = limits.get(f.name)
        if problem is None and lim is not None and v is not None:
            if isinstance(lim, Range) and v not in lim:
                problem = f"must be in {lim}" if lim.hi is not None else f"must be {lim}"
            elif isinstance(lim, tuple) and v not in lim:
                problem = f"expected one of {', '.join(map(str, lim))}"
        if problem is not None:
            shown = repr(v) if isinstance(v, str) else str(v)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            raise ConfigError(f"{label}={shown}: {problem}", param=f.name)


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
    for c in out:
        validate(c)
    return out


def from_dict(cls: type[T], data: Any, where: str | None = None) -> T:
    """Build a dataclass from a dict read back from a file, ignoring unknown keys (older/newer run
    files). With ``where`` (``"FILE: field model"``) the values are validated and a bad one is a
    :class:`ConfigError` naming that file and field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    cfg = cls(**{k: v for k, v in data.items() if k in names})
    if where is not None:
        validate(cfg, f"{where}.{{name}}")
    return cfg
