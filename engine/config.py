"""The base of every config: a dataclass that validates itself and round-trips through plain dicts.

Recipes, run records and the app's forms all rest on `to_dict()` / `from_dict()`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Self

from engine.errors import ConfigError


@dataclasses.dataclass
class Config:
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Override to check field values; raise ConfigError naming the field and allowed values."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field {', '.join(unknown)}; fields are: {', '.join(sorted(names))}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(k, v, hints.get(k)) for k, v in d.items()})


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Turns JSON values back into the declared type (lists -> tuples, ints -> floats)."""
    if hint is None or value is None:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(name, value, args[0]) if len(args) == 1 else value
    if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
        return hint.from_dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if args else None
        return tuple(_coerce(name, v, inner) for v in value)
    return value


def check_choice(name: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


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
