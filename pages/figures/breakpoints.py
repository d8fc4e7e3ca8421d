"""The Breakpoints chart: accuracy against x for each chosen curve (mean line, a mean ± std band where
repeats spread, an error bar with the 95 % interval at a level scored on a test subset), its detected breakpoint
marked, and underneath, on the same x axis, the detector's
own curve (Kneedle's normalised difference, the slope ratio, or the gap to the tolerance) with the
line it is compared with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative
from plotly.subplots import make_subplots

from engine.analysis.breakpoint import BreakpointResult, Curve

COLOURS = qualitative.Plotly


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = hex_to_rgb(colour)
    return f"rgba({r},{g},{b},{alpha})"


def _level_text(curve: Curve, i: int) -> str:
    level = curve.levels[i] if curve.levels else None
    return "uncompressed" if level is None else f"{curve.level_name or 'level'} {level:g}"


def breakpoint_figure(curves: Mapping[str, Curve], results: Mapping[str, BreakpointResult], log_x: bool = False,
                      height: int = 640) -> go.Figure:
    """Two rows sharing x: accuracy (with bands and breakpoints) above, the detection curve below."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06)
    x_label = next((c.x_label for c in curves.values()), "x")
    detection = sorted({r.detection_name for r in results.values() if r.detection_name})
    for i, (name, curve) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        x = np.asarray(curve.x, dtype=float)
        mean = np.asarray(curve.mean, dtype=float)
        std = np.asarray(curve.std, dtype=float)
        levels = [_level_text(curve, j) for j in range(len(curve))]
        minus, plus, words = curve.subset_bars()
        words = [f"<br>accuracy: {w}" if w else "" for w in words]
        if np.nanmax(std, initial=0.0) > 0:
            fig.add_trace(go.Scatter(x=x, y=mean + std, mode="lines", line=dict(width=0), legendgroup=name,
                                     showlegend=False, hoverinfo="skip", name=f"{name} mean + std"), row=1, col=1)
            fig.add_trace(go.Scatter(x=x, y=mean - std, mode="lines", line=dict(width=0), fill="tonexty",
                                     fillcolor=_rgba(colour, 0.2), legendgroup=name, showlegend=False,
                                     hoverinfo="skip", name=f"{name} mean - std"), row=1, col=1)
        fig.add_trace(go.Scatter(
            x=x, y=mean, mode="lines+markers", name=name, legendgroup=name, line=dict(color=colour, width=2),
            marker=dict(size=7, color=colour),
            error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus, visible=True, thickness=1.2,
                         width=3, color=colour) if any(math.isfinite(v) for v in plus) else None,
            customdata=np.column_stack([std, np.array(levels, dtype=object), np.array(words, dtype=object)]),
            hovertemplate=(f"<b>{name}</b><br>%{{customdata[1]}}<br>{x_label}: %{{x:,.6g}}<br>"
                           "accuracy: %{y:.4f} ± %{customdata[0]:.4f}%{customdata[2]}<extra></extra>")), row=1, col=1)
        r = results.get(name)
        if r is None:
            continue
        if r.found and r.x is not None:
            fig.add_trace(go.Scatter(
                x=[r.x], y=[r.accuracy], mode="markers", name=f"{name}: breakpoint", legendgroup=name,
                marker=dict(symbol="star", size=18, color=colour, line=dict(color="black", width=1)),
                hovertemplate=(f"<b>breakpoint</b> ({r.detector})<br>{_level_text(curve, r.index)}<br>"
                               f"{x_label}: %{{x:,.6g}}<br>accuracy: %{{y:.4f}} ± {r.accuracy_std or 0:.4f}"
                               "<extra></extra>")), row=1, col=1)
        dx = np.asarray(r.detection_x or curve.x, dtype=float)
        dy = np.asarray(r.detection_y, dtype=float) if r.detection_y else np.full(dx.size, math.nan)
        if r.found and r.index is not None and r.index < dy.size and math.isfinite(dy[r.index]):
            fig.add_trace(go.Scatter(  # the same breakpoint on the detection curve
                x=[dx[r.index]], y=[dy[r.index]], mode="markers", name=f"{name}: breakpoint (detection)",
                legendgroup=name, showlegend=False, hoverinfo="skip",
                marker=dict(symbol="star", size=14, color=colour, line=dict(color="black", width=1))), row=2, col=1)
        fig.add_trace(go.Scatter(
            x=dx, y=dy, mode="lines+markers", name=f"{name}: {r.detection_name or r.detector}", legendgroup=name,
            showlegend=False, line=dict(color=colour, width=1.5, dash="dash"), marker=dict(size=5, color=colour),
            connectgaps=False, hovertemplate=(f"<b>{name}</b><br>{r.detection_name}: %{{y:.4g}}<br>{x_label}: "
                                              "%{x:,.6g}<extra></extra>")), row=2, col=1)
        if r.threshold is not None and dx.size:
            fig.add_trace(go.Scatter(
                x=[np.nanmin(dx), np.nanmax(dx)], y=[r.threshold, r.threshold], mode="lines",
                name=f"{name}: threshold", legendgroup=name, showlegend=False, hoverinfo="skip",
                line=dict(color=colour, width=1, dash="dot")), row=2, col=1)
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text=" / ".join(detection) or "detection", row=2, col=1)
    fig.update_xaxes(title_text=x_label, row=2, col=1)
    if log_x:
        fig.update_xaxes(type="log")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=60, b=10), hovermode="closest",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    return fig
