"""Plain functions that turn store DataFrames into Plotly figures (tests call them without a browser)."""

from __future__ import annotations

import math

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def metric_history_figure(history: pd.DataFrame, keys: list[str]) -> go.Figure:
    """One line per metric key against its step (the epoch, for per-epoch metrics)."""
    df = history[history["key"].isin(keys)]
    fig = px.line(df, x="step", y="value", color="key", markers=True)
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), legend_title_text="")
    steps = pd.to_numeric(df["step"], errors="coerce").dropna()
    if len(steps) and (steps == steps.round()).all():  # epochs: whole-number ticks, never 1.2, 1.4
        span = float(steps.max() - steps.min())
        fig.update_xaxes(tickmode="linear", tick0=float(steps.min()), dtick=max(1, math.ceil(span / 10)),
                         tickformat="d")
    return fig
