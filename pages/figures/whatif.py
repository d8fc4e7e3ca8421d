"""The What-if chart: accuracy against size for the measured curves of one checkpoint's runs (one line
per run and method), the checkpoint itself, and the what-if point the sliders describe, drawn as a star.

The curves are measured on the whole test split; the what-if point on the page's evaluation subset, and
its name says so.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

WHATIF_COLOUR = "#d62728"
COLOURS = [c for c in qualitative.Plotly if c.upper() != "#EF553B"]  # red stays the what-if point's


def _level_text(level, level_name) -> str:
    if level is None or level != level:  # None or NaN
        return ""
    return f"{level_name or 'level'} {level:g}"


def whatif_figure(curves: pd.DataFrame, point: dict, *, point_name: str = "what-if",
                  baseline: dict | None = None, log_x: bool = True) -> go.Figure:
    """Accuracy against size (KiB).

    `curves`: rows of engine.methods.whatif.checkpoint_points (series, size_bytes, accuracy, level, level_name,
    simulated, stage). `point`: the what-if position (WhatIfResult.to_dict(): size_bytes, accuracy, and
    the slider values). `baseline`: the checkpoint on the same subset (drawn as a hollow diamond).
    """
    fig = go.Figure()
    for i, (series, df) in enumerate(curves.groupby("series", sort=False)):
        df = df.sort_values("size_bytes")
        text = [f"{_level_text(lv, ln)}{' (simulated)' if sim else ''}"
                for lv, ln, sim in zip(df["level"], df["level_name"], df["simulated"].fillna(False))]
        fig.add_trace(go.Scatter(
            x=df["size_bytes"] / 1024, y=df["accuracy"], mode="lines+markers", name=str(series),
            marker={"color": COLOURS[i % len(COLOURS)], "size": 7}, line={"width": 1.5}, text=text,
            hovertemplate="%{text}<br>size %{x:,.1f} KiB<br>accuracy %{y:.4f}<extra>%{fullData.name}</extra>"))
    if baseline is not None:
        fig.add_trace(go.Scatter(
            x=[baseline["size_bytes"] / 1024], y=[baseline["accuracy"]], mode="markers",
            name="checkpoint (same subset)", marker={"symbol": "diamond-open", "size": 12, "color": "#444"},
            hovertemplate="the checkpoint on the subset<br>size %{x:,.1f} KiB<br>accuracy %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=[point["size_bytes"] / 1024], y=[point["accuracy"]], mode="markers", name=point_name,
        marker={"symbol": "star", "size": 18, "color": WHATIF_COLOUR, "line": {"width": 1, "color": "#fff"}},
        text=[_describe(point)],
        hovertemplate="%{text}<br>size %{x:,.1f} KiB<br>accuracy %{y:.4f}<extra>" + point_name + "</extra>"))
    fig.update_layout(
        height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend={"title": {"text": ""}},
        xaxis={"title": {"text": "size (KiB" + (", log scale)" if log_x else ")")},
               "type": "log" if log_x else "linear"},
        yaxis={"title": {"text": "accuracy"}})
    return fig


def _describe(point: dict) -> str:
    mode = point.get("mode", "unstructured")
    what = "channels" if mode == "channels" else "sparsity"
    bits = point.get("bits", 32)
    width = f"{bits}-bit {str(point.get('granularity', '')).replace('_', '-')} (simulated)" if bits < 32 else "float"
    return f"{what} {point.get('sparsity', 0):.0%}, {width}"
