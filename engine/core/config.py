"""The base of every config: a dataclass that validates itself and round-trips through plain dicts.

Recipes, run records, the CLI's options and the app's forms all rest on `to_dict()` / `from_dict()`
and on each field's declaration: its type, its default and its `param(...)` metadata (a one-line
help, allowed choices, a range, a CLI flag name). `engine/core/options.py` turns those declarations into
command-line options and form fields, so a method is declared once, in its own file.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Self

from engine.core.errors import ConfigError, quoted

MISSING = dataclasses.MISSING

# The part a field plays besides saying what is computed; a field without a role is a setting of the method.
ROLES = (
    "input",  # names an input checkpoint (checkpoint, teacher, student_init): a recipe or the app fills it in
    "output",  # where outputs go (out, and overwrite, which goes with it): the runner chooses
    "machine",  # a path on the machine that runs the task (data_root): the runner's, not part of what is computed
    "runner",  # how the run measures and saves, not what it computes (latency, runtime, save)
)


def param(default: Any = MISSING, help: str = "", *, choices: typing.Iterable[Any] | None = None,  # noqa: A002
          lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
          flag: str | None = None, cli: bool = True, role: str = "", default_factory: Any = MISSING) -> Any:
    """A config field with its one-line help and the limits that forms and the CLI show.

    `choices` and `lo`/`hi` are checked for every instance (before `validate()`); `flag` renames the
    CLI option (default: the field name with dashes); `cli=False` keeps a field off the CLI (it is
    still part of the config and of recipes); `role` says which part the field plays besides saying
    what is computed (one of ROLES; see `fields_with_role`).
    """
    if role and role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)} (or empty), got {role!r}")
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "lo": lo, "hi": hi,
            "lo_open": lo_open, "hi_open": hi_open, "flag": flag, "cli": cli, "role": role}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class Config:
    def __post_init__(self) -> None:
        check_declared(self)
        self.validate()

    def validate(self) -> None:
        """Override to check field values; raise ConfigError naming the field and allowed values."""

    @property
    def deterministic(self) -> bool:
        """Whether every run of this config gives the same numbers (declared once, by the config: e.g. a one-shot
        prune without fine-tuning), so repeats of it only multiply the compute. False unless a config says so."""
        return False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """The config from plain values (JSON, YAML, a form): unknown names and wrong types are refused
        with a message naming the field. A nested config given in part keeps the rest of its default."""
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__} must be a mapping of field names to values, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field {', '.join(unknown)}; fields are: {', '.join(sorted(names))}")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            value = d[f.name]
            nested = _config_class(hints.get(f.name))
            if nested is not None and isinstance(value, dict):
                value = {**_default_of(f).to_dict(), **value} if _default_of(f) is not None else value
            values[f.name] = coerce(f.name, value, hints.get(f.name))
        return cls(**values)


def fields_with_role(cls: type[Config], *roles: str) -> frozenset[str]:
    """The names of the fields of `cls`, nested configs included, declared with one of `roles`.

    What reads roles: forms hide input, output and machine fields; recipes set input and output fields
    themselves and leave output and machine fields out of a unit's key; a point's params leave every
    role out; the Ray executor ships input checkpoints."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {', '.join(unknown)}")
    names: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("role") in roles:
            names.add(f.name)
        nested = _config_class(hints.get(f.name))
        if nested is not None and nested is not cls:
            names |= fields_with_role(nested, *roles)
    return frozenset(names)


def _config_class(hint: Any) -> type[Config] | None:
    args = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
    return args[0] if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], Config) else None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None if f.default is MISSING else f.default


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def type_name(hint: Any) -> str:
    """A type as a user reads it: 'a number', 'a whole number', 'a list of numbers', ..."""
    if _is_union(hint):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(type_name(a) for a in args) + " (or empty)"
    origin = typing.get_origin(hint)
    if origin is tuple or origin is list:
        inner = typing.get_args(hint)[0] if typing.get_args(hint) else str
        return "a list of " + {int: "whole numbers", float: "numbers", str: "names"}.get(inner, "values")
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def coerce(name: str, value: Any, hint: Any) -> Any:
    """Turns a JSON value into the declared type (lists -> tuples, ints -> floats), or names the field
    and the type it needs (a recipe or a form may carry text where a number belongs)."""
    if hint is None or hint is Any:
        return value
    if value is None:
        if _is_union(hint) and type(None) in typing.get_args(hint):
            return None
        raise ConfigError(f"{name} must be {type_name(hint)}, got null")
    if _is_union(hint):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return coerce(name, value, args[0])
        for a in args:
            try:
                return coerce(name, value, a)
            except ConfigError:
                continue
        raise ConfigError(f"{name} must be {type_name(hint)}, got {quoted(value)}")
    nested = _config_class(hint)
    if nested is not None:
        if isinstance(value, nested):
            return value
        if isinstance(value, dict):
            return nested.from_dict(value)
        raise ConfigError(f"{name} must be a mapping of {nested.__name__} fields, got {quoted(value)}")
    origin = typing.get_origin(hint)
    if origin is tuple or origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be {type_name(hint)}, got {quoted(value)}")
        args = typing.get_args(hint)
        inner = args[0] if args else None
        items = [coerce(f"{name}[{i}]", v, inner) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {quoted(value)}")
        args = typing.get_args(hint)
        if len(args) == 2:
            return {coerce(name, k, args[0]): coerce(f"{name}[{k}]", v, args[1]) for k, v in value.items()}
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {quoted(value)}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{name} must be a whole number, got {quoted(value)}")
        return value
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {quoted(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be text, got {quoted(value)}")
        return value
    return value


def check_declared(cfg: Config) -> None:
    """Checks each field against its `param(...)` choices and range."""
    for f in dataclasses.fields(cfg):
        meta = f.metadata
        value = getattr(cfg, f.name)
        if value is None:
            continue
        if meta.get("choices") is not None:
            check_choice(f.name, value, meta["choices"])
        if (meta.get("lo") is not None or meta.get("hi") is not None) and isinstance(value, int | float) \
                and not isinstance(value, bool):
            check_range(f.name, value, meta.get("lo"), meta.get("hi"), meta.get("lo_open", False),
                        meta.get("hi_open", False))


def check_choice(name: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {quoted(value)}")


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Checks lo <= value <= hi (or strict where *_open); NaN always fails."""
    bad = isinstance(value, float) and math.isnan(value)
    if lo is not None:
        bad = bad or (value <= lo if lo_open else value < lo)
    if hi is not None:
        bad = bad or (value >= hi if hi_open else value > hi)
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"{name} must be in {left}{lo_s}, {hi_s}{right}, got {value}")
