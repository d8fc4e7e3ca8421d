"""The Trade-offs chart: accuracy against one cost axis, one trace per colour group, the model (or
another field) as the marker symbol, simulated points drawn open, error bars (the 95 % interval of an accuracy
scored on a test subset, else the spread where repeats exist) and the Pareto front as a step line. `customdata[0]` of every point is its point_id (a selection names it).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from engine.analysis.tradeoffs import COLOUR_BY, MAX_GROUPS, SYMBOL_BY, AxisView, Y, pareto_points

SYMBOLS = ("circle", "square", "diamond", "triangle-up", "triangle-down", "pentagon", "hexagon", "star", "cross",
           "x", "triangle-left", "triangle-right", "star-triangle-up", "hourglass", "bowtie", "diamond-wide")
COLOURS = qualitative.Plotly + qualitative.D3[len(qualitative.Plotly):] + qualitative.Dark24
SIMULATED_TEXT = "simulated quantization (no low-bit kernel ran)"
GL_ABOVE = 2000  # more points than this: WebGL traces (the browser stays responsive)

# customdata: numbers only (a float array is cheap to validate, copy and send), index 0 the point id
CUSTOM = [("point_id", "point", "d"), ("accuracy", "accuracy", ".4f"), ("top5", "top-5", ".4f"),
          ("loss", "loss", ".4f"), ("params_total", "parameters", ","), ("params_nonzero", "nonzero parameters", ","),
          ("sparsity", "sparsity", ".3f"), ("bits", "bits", ".2f"), ("size_bytes", "size (bytes)", ","),
          ("size_fp32_bytes", "fp32 size (bytes)", ","), ("file_bytes", "file (bytes)", ","), ("macs", "MACs", ","),
          ("threads", "threads", "d")]
CUSTOM_INDEX = {c: i for i, (c, _, _) in enumerate(CUSTOM)}


def _latency_text(median: pd.Series, p90: pd.Series) -> list[str]:
    m, p = median.to_numpy(dtype=float), p90.to_numpy(dtype=float)
    out = np.full(m.size, "not measured", dtype=object)
    ok = np.flatnonzero(np.isfinite(m))
    out[ok] = [f"{a:.3f} ms (p90 {b:.3f})" if b == b else f"{a:.3f} ms" for a, b in zip(m[ok].tolist(),
                                                                                       p[ok].tolist(), strict=True)]
    return out.tolist()


def _spread_text(std: pd.Series, repeats: pd.Series) -> list[str]:
    s, n = std.to_numpy(dtype=float), repeats.to_numpy()
    out = np.full(s.size, "no repeats", dtype=object)
    ok = np.flatnonzero((n > 1) & np.isfinite(s))
    out[ok] = [f"± {a:.4f} over {k} repeats" for a, k in zip(s[ok].tolist(), n[ok].tolist(), strict=True)]
    return out.tolist()


def hover_text(df: pd.DataFrame) -> list[str]:
    """Each point's words for its hover box (run, method, level, model, runtime, simulated, latency, repeats);
    the numbers come from customdata. One f-string per point: far cheaper than column arithmetic."""
    cols = [df[c].tolist() for c in ("run_label", "method_label", "stage", "role", "level_text", "model",
                                     "dataset", "runtime", "backend", "simulated")]
    spread = _spread_text(df["accuracy_std"], df["repeats"])
    interval = [f"<br>accuracy: {t}" if t else "" for t in df["interval_text"].tolist()]
    b1 = _latency_text(df["latency_ms_b1"], df["latency_p90_ms_b1"])
    b32 = _latency_text(df["latency_ms_b32"], df["latency_p90_ms_b32"])
    sim = f"<br><i>{SIMULATED_TEXT}</i>"
    return [f"run: {run}<br>method: {method}, {stage}{f' ({role})' if role else ''}{f', {level}' if level else ''}"
            f"<br>{model} on {dataset}, {runtime} ({backend}){sim if simulated else ''}"
            f"<br>accuracy spread: {sp}{iv}<br>latency b1: {l1}<br>latency b32: {l32}"
            for run, method, stage, role, level, model, dataset, runtime, backend, simulated, sp, iv, l1, l32
            in zip(*cols, spread, interval, b1, b32, strict=True)]


def _template(x_label: str, x_fmt: str) -> str:
    lines = [f"<b>{x_label}</b>: %{{x:{x_fmt}}}", "%{hovertext}"]
    lines += [f"{label}: %{{customdata[{i}]:{fmt}}}" for i, (_, label, fmt) in enumerate(CUSTOM) if i]
    lines.append("point %{customdata[0]:d}")
    return "<br>".join(lines) + "<extra>%{fullData.name}</extra>"


OTHER_COLOUR = "#9e9e9e"


def colour_map(values: Iterable) -> dict:
    """A colour per value, fixed by the value's place in the sorted list of every value (the unfiltered
    data's), so a filter never repaints a family."""
    ordered = sorted({v for v in values if v is not None and v == v}, key=str)
    return {v: COLOURS[i % len(COLOURS)] for i, v in enumerate(ordered)}


def _groups(values: pd.Series) -> tuple[pd.Series, list[str]]:
    """The colour group of each point, at most MAX_GROUPS of them (the smallest pooled as "other")."""
    counts = values.value_counts(sort=True)
    if len(counts) <= MAX_GROUPS:
        return values, sorted(counts.index, key=str)
    keep = list(counts.index[: MAX_GROUPS - 1])
    other = f"other ({len(counts) - len(keep)} more)"
    grouped = values.where(values.isin(keep), other)
    return grouped, [*sorted(keep, key=str), other]


def tradeoff_figure(view: AxisView, colour_by: str = "family", symbol_by: str = "model", log_x: bool = False,
                    pareto: bool = True, height: int = 560, colour_values: Iterable | None = None) -> go.Figure:
    """Accuracy against the view's axis: one trace per colour group; the Pareto front (max accuracy,
    and min x, or max x for sparsity) as a step line; legend-only markers naming the symbols. Colours come
    from `colour_values` (every value the colour field takes before filtering; default the view's own)."""
    if colour_by not in COLOUR_BY:
        raise ValueError(f"colour_by must be one of {', '.join(COLOUR_BY)}, got {colour_by!r}")
    if symbol_by not in SYMBOL_BY:
        raise ValueError(f"symbol_by must be one of {', '.join(SYMBOL_BY)}, got {symbol_by!r}")
    axis, df = view.axis, view.points
    fig = go.Figure()
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), legend=dict(groupclick="toggleitem"),
                      xaxis_title=axis.label, yaxis_title="accuracy", clickmode="event+select",
                      hovermode="closest", title=dict(text=f"Accuracy against {axis.label}", x=0, font_size=15))
    if log_x:
        fig.update_xaxes(type="log")
    if df.empty:
        return fig
    scatter = go.Scattergl if len(df) > GL_ABOVE else go.Scatter
    h = df
    symbol_col = SYMBOL_BY[symbol_by]
    symbol_values = sorted(h[symbol_col].unique(), key=str) if symbol_col else []
    symbol_of = {v: SYMBOLS[i % len(SYMBOLS)] for i, v in enumerate(symbol_values)}
    symbol = (h[symbol_col].map(symbol_of) if symbol_col else pd.Series("circle", index=h.index))
    symbol = symbol.where(~h["simulated"], symbol + "-open")
    colour, order = _groups(h[COLOUR_BY[colour_by]])
    colour_index = {g: i for i, g in enumerate(order)}
    colour_of = colour_map(h[COLOUR_BY[colour_by]] if colour_values is None else colour_values)
    template = _template(axis.label, axis.fmt)
    custom = h[[c for c, _, _ in CUSTOM]].to_numpy(dtype=float)
    text = np.array(hover_text(h), dtype=object)
    x_all, y_all = h[axis.column].to_numpy(dtype=float), h[Y].to_numpy(dtype=float)
    minus_all, plus_all = h["error_minus"].to_numpy(dtype=float), h["error_plus"].to_numpy(dtype=float)
    # one trace per colour group and symbol (a per-point symbol array costs Plotly a check per point)
    parts = pd.DataFrame({"c": colour.map(colour_index).to_numpy(), "s": symbol.to_numpy(),
                          "i": np.arange(len(h))}).groupby(["c", "s"], sort=True)["i"]
    shown: set[int] = set()
    for (ci, sym), rows in parts:
        idx = rows.to_numpy()
        group = order[ci]
        col = colour_of.get(group, OTHER_COLOUR)
        minus, plus = minus_all[idx], plus_all[idx]
        fig.add_trace(scatter(
            x=x_all[idx], y=y_all[idx], mode="markers", name=str(group), legendgroup=f"colour:{group}",
            showlegend=ci not in shown,
            marker=dict(color=col, symbol=sym, size=9, line=dict(width=1.5, color=col)),
            error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus, visible=True, thickness=1.2,
                         width=3) if np.isfinite(plus).any() else None,
            customdata=custom[idx], hovertext=text[idx], hovertemplate=template,
        ))
        shown.add(ci)
    if symbol_col and len(symbol_values) > 1:
        for v in symbol_values:  # legend entries that name the symbols
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{symbol_by}: {v}",
                                     legendgroup="symbols", legendgrouptitle_text=f"symbol = {symbol_by}",
                                     marker=dict(symbol=symbol_of[v], color="#666", size=9), hoverinfo="skip"))
    if h["simulated"].any():
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="open symbol: simulated",
                                 legendgroup="simulated", marker=dict(symbol="circle-open", color="#666", size=9),
                                 hoverinfo="skip"))
    if pareto:
        front = pareto_points(view)  # one front per dataset, models at chance level left out
        # between two front points the best accuracy reachable is the cheaper side's: a staircase
        shape = "hv" if axis.better == "min" else "vh"
        datasets = list(dict.fromkeys(front["dataset"])) if "dataset" in front and len(front) else [None]
        for i, dataset in enumerate(datasets):
            part = front if dataset is None else front[front["dataset"] == dataset]
            name = f"Pareto front ({len(part)})" if len(datasets) == 1 else f"Pareto front, {dataset} ({len(part)})"
            fig.add_trace(go.Scatter(
                x=part[axis.column].to_numpy(dtype=float), y=part[Y].to_numpy(dtype=float), mode="lines",
                line=dict(color="black", width=1.5, dash=("dash", "dot", "dashdot", "longdash")[i % 4], shape=shape),
                name=name, legendgroup="pareto", hoverinfo="skip"))
    return fig
