"""Command-line options (and, later, app form fields) generated from config dataclasses.

A config field declared with `param(...)` carries its type, default, help, choices and range; this
module turns every field of a config, nested configs flattened (`train.epochs` -> `--epochs`), into
an option. A family command (`quantize`, `prune`, `distill`) offers the union of its methods'
options; an option the chosen method does not take is refused by name, so a typo never runs
something else. Values are parsed by the field's type: numbers, `true/false` switches, lists
(`2,3,4` or a range `0,0.1,...,0.9`, at most MAX_GRID values) and `name=value` mappings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from engine.core.config import Config, type_name
from engine.core.errors import ConfigError, quoted
from engine.core.point import json_safe

MAX_GRID = 1000  # values one list option may expand to


@dataclass(frozen=True)
class Option:
    path: tuple[str, ...]  # field names from the top config down, e.g. ("train", "epochs")
    flag: str  # "--epochs"
    hint: Any  # the field's type
    default: Any
    help: str
    choices: tuple | None = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def dest(self) -> str:
        return "opt_" + self.flag[2:].replace("-", "_")

    @property
    def base(self) -> Any:
        """The type without Optional."""
        return _strip_optional(self.hint)

    @property
    def is_switch(self) -> bool:
        return self.base is bool

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.base) in (tuple, list)

    def describe(self) -> dict:
        """The option as a listing or a form shows it."""
        default = self.default
        if isinstance(default, tuple):
            default = list(default)
        return {"name": self.name, "flag": self.flag, "type": type_name(self.hint), "default": default,
                "help": self.help, "choices": list(self.choices) if self.choices else None, "lo": self.lo,
                "hi": self.hi}


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _nested_config(hint: Any) -> type[Config] | None:
    base = _strip_optional(hint)
    return base if isinstance(base, type) and issubclass(base, Config) else None


def config_options(cls: type[Config], skip: typing.Collection[str] = (), _prefix: tuple[str, ...] = (),
                   _instance: Any = None) -> list[Option]:
    """Every CLI-visible field of `cls` as an Option; nested configs are flattened.

    A nested field's flag is its own name unless that collides with another, then it is prefixed
    with its parent's name (`--finetune-lr`)."""
    hints = typing.get_type_hints(cls)
    instance = _instance
    if instance is None:
        try:
            instance = cls()
        except ConfigError:
            instance = None  # defaults that do not validate alone (a required checkpoint): read field defaults
    top: list[Option] = []
    nested: list[Option] = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in skip or not meta.get("cli", True):
            continue
        default = getattr(instance, f.name) if instance is not None else _field_default(f)
        sub = _nested_config(hints[f.name])
        if sub is not None:
            nested += config_options(sub, (), (*_prefix, f.name), default)
            continue
        flag = meta.get("flag") or f.name.replace("_", "-")
        top.append(Option((*_prefix, f.name), f"--{flag}", hints[f.name], default, meta.get("help", ""),
                          meta.get("choices"), meta.get("lo"), meta.get("hi"), meta.get("lo_open", False),
                          meta.get("hi_open", False)))
    taken = {o.flag for o in top}
    out = list(top)
    for o in nested:
        if o.flag in taken:
            o = dataclasses.replace(o, flag=f"--{o.path[-2].replace('_', '-')}-{o.flag[2:]}")
        if o.flag in taken:
            raise ValueError(f"{cls.__name__}: two fields want the option {o.flag}")
        taken.add(o.flag)
        out.append(o)
    return out


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


# ---------------------------------------------------------------- parsing text


def parse_number(flag: str, text: str, kind: type) -> int | float:
    try:
        value = int(text) if kind is int else float(text)
    except ValueError:
        raise ConfigError(f"{flag} must be {'a whole number' if kind is int else 'a number'}, got {quoted(text)}") from None
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {quoted(text)}")
    return value


def parse_list(flag: str, text: str, kind: type = float) -> list:
    """'2,3,4', or an evenly spaced range '0,0.1,...,0.9' (step = the first two values' difference)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"{flag} must list at least one value")
    if kind is str:
        return parts
    if "..." not in parts:
        return [parse_number(flag, p, kind) for p in parts]
    i = parts.index("...")
    if i < 2 or i != len(parts) - 2 or parts.count("...") != 1:
        raise ConfigError(f"{flag}: write a range as first,second,...,last (e.g. 0,0.1,...,0.9); got {quoted(text)}")
    head = [parse_number(flag, p, kind) for p in parts[:i]]
    end = parse_number(flag, parts[-1], kind)
    start, step = head[0], head[1] - head[0]
    if step <= 0:
        raise ConfigError(f"{flag}: a range must ascend (second value above the first); got {quoted(text)}")
    if end < head[-1]:
        raise ConfigError(f"{flag}: the last value {end:g} is below the range's start; got {quoted(text)}")
    count = math.floor((end - start) / step + 1e-9) + 1
    if count > MAX_GRID:
        raise ConfigError(f"{flag}: {quoted(text)} expands to {count:,} values; at most {MAX_GRID:,} are allowed")
    values = [round(start + k * step, 10) for k in range(count)]
    if any(abs(h - v) > 1e-9 * max(1.0, abs(v)) for h, v in zip(head, values)):
        raise ConfigError(f"{flag}: the values before '...' must be evenly spaced; got {quoted(text)}")
    return [int(v) if kind is int else v for v in values]


def parse_mapping(flag: str, text: str, kind: type = float) -> dict:
    """'a.b=0.3,c=0.5' -> {'a.b': 0.3, 'c': 0.5}; JSON objects are accepted too."""
    text = str(text).strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{flag} is not valid JSON: {e}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{flag} must be a mapping")
        return value
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} must look like name=value,other=value; got {quoted(part)}")
        out[key.strip()] = value.strip() if kind is str else parse_number(flag, value.strip(), kind)
    return out


def parse_text(option: Option, text: str) -> Any:
    """An option's text as the value its field takes ('none' clears an optional field)."""
    hint, base = option.hint, option.base
    optional = base is not hint
    if optional and str(text).strip().lower() in ("none", "null", ""):
        return None
    origin = typing.get_origin(base)
    if origin in (tuple, list):
        args = typing.get_args(base)
        return parse_list(option.flag, text, args[0] if args else str)
    if origin is dict or base is dict:
        args = typing.get_args(base)
        return parse_mapping(option.flag, text, args[1] if len(args) == 2 else float)
    if base in (int, float):
        return parse_number(option.flag, text, base)
    if base is str:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# ---------------------------------------------------------------- argparse


class OptionSet:
    """The options of several configs (a family's methods) registered once on a parser."""

    def __init__(self, configs: dict[str, list[Option]]):
        self.configs = configs
        self.flags: dict[str, Option] = {}
        for options in configs.values():
            for o in options:
                self.flags.setdefault(o.flag, o)

    @classmethod
    def of(cls, configs: dict[str, type[Config]], skip: typing.Collection[str] = ()) -> OptionSet:
        return cls({key: config_options(c, skip) for key, c in configs.items()})

    def add_to(self, parser: argparse.ArgumentParser, taken: typing.Collection[str] = ()) -> None:
        by_flag: dict[str, list[tuple[str, Option]]] = {}
        for key, options in self.configs.items():
            for o in options:
                by_flag.setdefault(o.flag, []).append((key, o))
        single = len(self.configs) == 1
        for flag, users in by_flag.items():
            if flag in taken:
                raise ValueError(f"option {flag} is declared twice")
            switches = {o.is_switch for _, o in users}
            if len(switches) > 1:
                raise ValueError(f"option {flag} is a switch for some methods and takes a value for others")
            helps: dict[str, list[str]] = {}
            for key, o in users:
                helps.setdefault(_help_text(o), []).append(key)
            text = "; ".join(h if single or len(keys) == len(self.configs) else f"{', '.join(keys)}: {h}"
                             for h, keys in helps.items())
            o = users[0][1]
            if o.is_switch:
                parser.add_argument(flag, dest=o.dest, action=_SwitchOnce, default=None,
                                    help=text.replace("%", "%%"))
            else:
                parser.add_argument(flag, dest=o.dest, action=_StoreOnce, default=None, metavar=_metavar(o),
                                    help=text.replace("%", "%%"))

    def given(self, args: argparse.Namespace) -> dict[str, Any]:
        """flag -> raw value for every option the user gave; a switch that an alias added by a command
        (quantize's --asymmetric) then set the other way is refused naming both."""
        for dest, (flag, value, aliases) in vars(args).get(_GIVEN, {}).items():
            if getattr(args, dest) != value and dest in {o.dest for o in self.flags.values()}:
                raise ConfigError(f"{flag} and {' / '.join(aliases) or 'another flag'} contradict each other: "
                                  f"give one of them")
        return {f: getattr(args, o.dest) for f, o in self.flags.items() if getattr(args, o.dest, None) is not None}

    def values(self, args: argparse.Namespace, key: str, what: str = "--method") -> dict:
        """The nested dict of values given for config `key`; an option it does not take is refused."""
        own = {o.flag: o for o in self.configs[key]}
        given = self.given(args)
        wrong = sorted(f for f in given if f not in own)
        if wrong:
            takes = ", ".join(sorted(own)) or "no options"
            raise ConfigError(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to "
                              f"{what} {key}; it takes {takes}")
        out: dict = {}
        for flag, raw in given.items():
            o = own[flag]
            value = raw if o.is_switch else parse_text(o, raw)
            node = out
            for name in o.path[:-1]:
                node = node.setdefault(name, {})
            node[o.path[-1]] = value
        return out


_GIVEN = "_generated_options_given"  # on the parsed namespace: dest -> (flag, value, other flags setting dest)


def _given_once(action: argparse.Action, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                flag: str, value: Any) -> None:
    """Sets the option's value, refusing (by name, exit 2) a second one that differs: `--bits 4 --bits 8`,
    `--symmetric --no-symmetric` or a switch and its alias, instead of letting the last one silently win."""
    given = vars(namespace).setdefault(_GIVEN, {})
    before = getattr(namespace, action.dest, None)
    aliases = [s for a in parser._actions if a.dest == action.dest and a is not action for s in a.option_strings]
    if before is not None and before != value:
        first = given[action.dest][0] if action.dest in given else " / ".join(aliases)
        if first == flag:
            parser.error(f"{flag} given twice ({quoted(before)} and {quoted(value)}): give it once")
        parser.error(f"{first} and {flag} contradict each other: give one of them")
    given[action.dest] = (flag, value, aliases)
    setattr(namespace, action.dest, value)


class _SwitchOnce(argparse.BooleanOptionalAction):
    def __call__(self, parser, namespace, values, option_string=None):
        _given_once(self, parser, namespace, option_string, not option_string.startswith("--no-"))


class _StoreOnce(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        _given_once(self, parser, namespace, option_string, values)


def _metavar(o: Option) -> str:
    if o.choices:
        return "{" + ",".join(map(str, o.choices)) + "}"
    base = o.base
    if typing.get_origin(base) in (tuple, list):
        return "A,B,..."
    if typing.get_origin(base) is dict or base is dict:
        return "NAME=V,..."
    return {int: "N", float: "X", str: "TEXT"}.get(base, "VALUE")


def _help_text(o: Option) -> str:
    default = o.default
    if isinstance(default, tuple | list):
        default = ",".join(map(str, default)) if default else "none"
    elif isinstance(default, dict):
        default = ",".join(f"{k}={v}" for k, v in default.items()) or "none"
    elif o.is_switch:
        default = "on" if default else "off"
    elif default is None or default == "":
        default = "none"
    limits = ""
    if o.lo is not None or o.hi is not None:
        left, right = "(" if o.lo_open else "[", ")" if o.hi_open else "]"
        limits = f" in {left}{'-inf' if o.lo is None else _num(o.lo)}, {'inf' if o.hi is None else _num(o.hi)}{right}"
    text = o.help or o.name
    return f"{text}{limits}" if "default" in text else f"{text}{limits} (default {default})"


def _num(x: float) -> str:
    return f"{x:,}" if float(x).is_integer() and abs(x) >= 1e5 else f"{x:g}"


def method_rows(configs: dict[str, tuple[type[Config], str]]) -> list[dict]:
    """For a `*-methods` listing: each method, its description and every setting it takes."""
    rows = []
    for name, (cls, description) in configs.items():
        rows.append({"method": name, "description": description,
                     "settings": [o.describe() for o in config_options(cls)]})
    return rows


def print_method_rows(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(json_safe(rows), indent=2, default=str, allow_nan=False))
        return
    for r in rows:
        print(f"{r['method']}: {r['description']}")
        for s in r["settings"]:
            text = s["help"] if "default" in s["help"] else f"{s['help']} (default {s['default']!r})"
            print(f"    {s['flag']:<24} {text}")
