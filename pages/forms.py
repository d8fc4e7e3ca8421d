"""Draws an engine.core.forms form with Streamlit widgets (not a page: pages import it).

Each FormField kind has one widget; list fields get a sweep editor (values, or a range with a step);
the error `build_config` attributes to a field is shown right under that field's widget.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from engine.core.forms import FormField

MAX_COLUMNS = 3


def draw_form(fields: list[FormField], key: str, errors: dict[str, str] | None = None,
              columns: int = MAX_COLUMNS) -> dict[str, Any]:
    """The widgets of `fields` in a grid; returns {field name: widget value}. Nested groups
    (`train.`, `finetune.`) get their own expander."""
    errors = errors or {}
    values: dict[str, Any] = {}
    groups: dict[str, list[FormField]] = {}
    for f in fields:
        group = ".".join(f.option.path[:-1])
        groups.setdefault(group, []).append(f)
    for group, members in groups.items():
        box = st.expander(f"{group} settings", expanded=False) if group else st.container()
        with box:
            cols = st.columns(min(columns, max(1, len(members))))
            for i, f in enumerate(members):
                with cols[i % len(cols)]:
                    values[f.name] = draw_field(f, f"{key}.{f.name}")
                    if f.name in errors:
                        st.error(errors[f.name], icon=":material/error:")
    return values


def draw_field(f: FormField, key: str) -> Any:
    label, help_text, default = f.label, f.help, f.default
    if f.widget == "switch":
        return st.checkbox(label, value=bool(default), help=help_text, key=key)
    if f.widget == "choice":
        options = list(f.option.choices)
        optional = f.option.base is not f.option.hint
        if optional:
            options = [None, *options]
        index = options.index(default) if default in options else 0
        return st.selectbox(label, options, index=index, help=help_text, key=key, accept_new_options=f.typed,
                            format_func=lambda v: "(default)" if v is None else str(v))
    if f.widget in ("int", "float"):
        o = f.option
        kind = int if f.widget == "int" else float
        lo = None if o.lo is None else kind(o.lo)
        hi = None if o.hi is None else kind(o.hi)
        if f.widget == "float":
            fmt, step = "%g", None
        else:
            fmt, step = "%d", 1
        return st.number_input(label, min_value=lo, max_value=hi, value=kind(default), step=step, format=fmt,
                               help=help_text, key=key)
    if f.widget == "multichoice":
        options = list(f.option.choices)
        chosen = [v for v in (default or []) if v in options]
        return st.multiselect(label, options, default=chosen, help=help_text, key=key)
    if f.widget == "sweep":
        return draw_sweep(f, key)
    placeholder = "empty = none" if f.widget in ("optional", "mapping") else None
    return st.text_input(label, value=f.default_text(), help=help_text, key=key, placeholder=placeholder)


def draw_sweep(f: FormField, key: str) -> Any:
    """A list field: comma-separated values, or (for numbers) a range start/stop/step."""
    if f.item_type is str:
        return st.text_input(label=f"{f.label} (comma-separated)", value=f.default_text(), help=f.help, key=key)
    mode = st.radio(f.label, ["values", "range"], horizontal=True, key=f"{key}.mode", help=f.help)
    if mode == "values":
        return st.text_input(f"{f.label} values", value=f.default_text(), key=key, label_visibility="collapsed",
                             help="comma-separated, or a range written first,second,...,last")
    default = [float(v) for v in (f.default or [0.0, 1.0])] or [0.0, 1.0]
    start0, stop0 = min(default), max(default)
    step0 = (default[1] - default[0]) if len(default) > 1 and default[1] > default[0] else 1.0
    a, b, c = st.columns(3)
    start = a.number_input("start", value=start0, format="%g", key=f"{key}.start")
    stop = b.number_input("stop", value=stop0, format="%g", key=f"{key}.stop")
    step = c.number_input("step", value=float(step0), format="%g", key=f"{key}.step")
    return {"start": start, "stop": stop, "step": step}
