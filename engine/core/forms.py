"""Forms generated from config dataclasses: what the app's Launch page draws for any task or method.

The same declarations that make the CLI's options (`engine/core/options.py`) make the form: every field's
type, default, help, choices and range. A field becomes a `FormField` with a widget kind; the page
draws the kind and hands the values back to `build_config`, which builds the config through
`Config.from_dict` and attributes each error to the field it names, so the page can show it next to
that field. A new method therefore needs no page code.

List-valued fields get a sweep editor: explicit values, or a range (start, stop, step) expanded by
`sweep_range` (at most engine.core.options.MAX_GRID values); fields with choices get a multi-select.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from typing import Any

from engine.core.config import Config, fields_with_role
from engine.core.errors import ConfigError
from engine.core.options import MAX_GRID, Option, config_options, parse_list, parse_text

# Fields a browser must not set, by their role (engine.core.config.ROLES): paths on the server (the app
# chooses where outputs go, and models come from the run store or an upload) and the overwrite switch
# that goes with an explicit output folder.
SERVER_SIDE_ROLES = ("input", "output", "machine")

WIDGETS = ("switch", "choice", "int", "float", "text", "sweep", "multichoice", "optional", "mapping")


@dataclass(frozen=True)
class FormField:
    option: Option
    widget: str  # one of WIDGETS
    typed: bool = False  # a choice that also takes a typed value (a dataset given as imagefolder:<path>)

    @property
    def name(self) -> str:
        """The dotted field path (`train.epochs`): the form's key for this field."""
        return self.option.name

    @property
    def label(self) -> str:
        return self.option.flag[2:].replace("-", " ")

    @property
    def help(self) -> str:
        o = self.option
        limits = ""
        if o.lo is not None or o.hi is not None:
            limits = f" (from {'-inf' if o.lo is None else f'{o.lo:g}'} to {'inf' if o.hi is None else f'{o.hi:g}'})"
        return f"{o.help or o.name}{limits}"

    @property
    def default(self) -> Any:
        value = self.option.default
        return list(value) if isinstance(value, tuple) else value

    @property
    def item_type(self) -> type:
        """For list fields: the type of one item (int, float or str)."""
        args = typing.get_args(self.option.base)
        return args[0] if args else str

    def default_text(self) -> str:
        """The default as a text widget shows it ('' for none)."""
        value = self.default
        if value is None:
            return ""
        if isinstance(value, list):
            return ",".join(_plain(v) for v in value)
        if isinstance(value, dict):
            return ",".join(f"{k}={_plain(v)}" for k, v in value.items())
        return _plain(value)


def _plain(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def widget_of(o: Option) -> str:
    base = o.base
    optional = base is not o.hint
    if o.is_list:
        return "multichoice" if o.choices else "sweep"
    if typing.get_origin(base) is dict or base is dict:
        return "mapping"
    if o.choices:
        return "choice"
    if base is bool:
        return "switch"
    if optional:
        return "optional"  # a text box where empty means "none"
    if base is int:
        return "int"
    if base is float:
        return "float"
    return "text"


def form_fields(cls: type[Config], hidden: typing.Collection[str] | None = None,
                choices: dict[str, typing.Sequence] | None = None,
                typed: typing.Collection[str] = ()) -> list[FormField]:
    """The fields of `cls` (nested configs flattened) a form shows, in declaration order. `choices`
    gives a text field the names it may take (a dataset or an architecture from a registry); the fields
    named in `typed` also take a value typed in (checked by the config like any other). `hidden` names the
    fields left out (default: those whose role is in SERVER_SIDE_ROLES)."""
    if hidden is None:
        hidden = fields_with_role(cls, *SERVER_SIDE_ROLES)
    out = []
    for o in config_options(cls):
        if o.path[-1] in hidden:
            continue
        if choices and o.name in choices:
            o = dataclasses.replace(o, choices=tuple(choices[o.name]))
        out.append(FormField(o, widget_of(o), typed=o.name in typed and bool(o.choices)))
    return out


def sweep_range(name: str, start: float, stop: float, step: float, kind: type = float) -> list:
    """start, start+step, ... up to stop (inclusive); the range a sweep editor's three boxes describe."""
    for label, value in (("start", start), ("stop", stop), ("step", step)):
        if not math.isfinite(value):
            raise ConfigError(f"{name}: the range's {label} must be a finite number")
    if step <= 0:
        raise ConfigError(f"{name}: the range's step must be above 0, got {step:g}")
    if stop < start:
        raise ConfigError(f"{name}: the range's stop ({stop:g}) is below its start ({start:g})")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_GRID:
        raise ConfigError(f"{name}: the range gives {count:,} values; at most {MAX_GRID:,} are allowed")
    values = [round(start + k * step, 10) for k in range(count)]
    return [int(round(v)) for v in values] if kind is int else values


def field_value(f: FormField, raw: Any) -> Any:
    """A widget's value as the config field takes it. Text widgets are parsed like the CLI's options."""
    if f.widget in ("switch", "choice", "int", "float", "multichoice"):
        return list(raw) if f.widget == "multichoice" else raw
    if f.widget == "sweep" and isinstance(raw, list | tuple):
        return list(raw)
    if f.widget == "sweep" and isinstance(raw, dict):  # the sweep editor's range boxes
        return sweep_range(f.label, raw["start"], raw["stop"], raw["step"], f.item_type)
    text = "" if raw is None else str(raw)
    if f.widget == "sweep":
        return parse_list(f.label, text, f.item_type)
    if f.widget == "text":
        return text
    return parse_text(f.option, text)


def nest(values: dict[str, Any]) -> dict:
    """{'train.epochs': 3, 'sparsity': [..]} -> {'train': {'epochs': 3}, 'sparsity': [..]}."""
    out: dict = {}
    for name, value in values.items():
        node = out
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def build_config(cls: type[Config], fields: list[FormField], raw: dict[str, Any],
                 fixed: dict | None = None) -> tuple[Config | None, dict[str, str]]:
    """The config from a form's widget values (`raw`: field name -> value) plus `fixed` values the page
    chose itself (the checkpoint, the output folder); or None and {field name or '': message}."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for f in fields:
        if f.name not in raw:
            continue
        try:
            values[f.name] = field_value(f, raw[f.name])
        except ConfigError as e:
            errors[f.name] = str(e)
    if errors:
        return None, errors
    doc = _merge(nest(values), fixed or {})
    try:
        return cls.from_dict(doc), {}
    except ConfigError as e:
        return None, {blame(str(e), fields): str(e)}


def blame(message: str, fields: list[FormField]) -> str:
    """The field a config error names (the longest name found in the message as a word), or ''."""
    found = ""
    for f in fields:
        for name in {f.name, f.option.path[-1]}:
            if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", message) and len(f.name) > len(found):
                found = f.name
    return found


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
