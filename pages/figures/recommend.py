"""The Recommend chart: accuracy change (points, against the baseline) over size for the baseline's variants on its
dataset, the accuracy budget and a size budget as lines, fitting variants coloured apart from the rest, estimates
drawn open, the winner as a star, the baseline as a diamond and the front of measured models as a step line.
`customdata[0]` of every measured point is its point_id."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from engine.analysis.recommend import Recommendation

FITS, BREAKS, WINNER = "#2ca02c", "#9e9e9e", "#d62728"


def recommend_figure(rec: Recommendation, height: int = 480) -> go.Figure:
    """Accuracy change against size, log x, one trace per kind of row (fits, breaks, estimates), the winner and
    the baseline on top, budgets as lines."""
    b, t = rec.baseline, rec.table
    fig = go.Figure()
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), hovermode="closest",
                      xaxis_title="size (bytes, as deployed)", yaxis_title="accuracy change (points, vs baseline)",
                      title=dict(text=f"Variants of point {b['point_id']} on {b['dataset']}", x=0, font_size=15))
    fig.update_xaxes(type="log")
    groups = (("fit", t["fits"] & ~t["estimate"], FITS, "circle"),
              ("break a budget", ~t["fits"] & ~t["estimate"], BREAKS, "circle"),
              ("estimate (not measured)", t["estimate"], FITS, "circle-open"))
    for name, mask, colour, symbol in groups:
        part = t[mask.to_numpy(dtype=bool)] if len(t) else t
        if part.empty:
            continue
        text = [f"{m} {lv}<br>{r}<br>{br or 'fits every budget'}" for m, lv, r, br in
                zip(part["method"], part["level"], part["timing"], part["breaks"], strict=True)]
        fig.add_trace(go.Scatter(
            x=part["size_bytes"].to_numpy(dtype=float), y=part["change_points"].to_numpy(dtype=float),
            mode="markers", name=f"{name} ({len(part)})", marker=dict(color=colour, symbol=symbol, size=9),
            customdata=part[["point_id"]].to_numpy(dtype=float), hovertext=text,
            hovertemplate="%{x:,.0f} B, %{y:+.2f} points<br>%{hovertext}<extra>point %{customdata[0]}</extra>"))
    if len(rec.front):
        front = rec.front
        change = 100 * (front["accuracy"].to_numpy(dtype=float) - b["accuracy"])
        fig.add_trace(go.Scatter(x=front["size_bytes"].to_numpy(dtype=float), y=change, mode="lines",
                                 line=dict(color="black", width=1.5, dash="dash", shape="hv"),
                                 name=f"Pareto front, {b['dataset']} ({len(front)})", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[b["size_bytes"]], y=[0.0], mode="markers", name="baseline",
                             marker=dict(symbol="diamond", size=13, color="black"),
                             customdata=[[b["point_id"]]], hovertemplate="baseline<extra>point %{customdata[0]}</extra>"))
    if rec.best is not None:
        w = rec.best
        fig.add_trace(go.Scatter(x=[w["size_bytes"]], y=[w["change_points"]], mode="markers", name="recommended",
                                 marker=dict(symbol="star", size=18, color=WINNER, line=dict(width=1, color="black")),
                                 customdata=[[w["point_id"]]],
                                 hovertemplate="recommended<extra>point %{customdata[0]}</extra>"))
    budget = rec.budget
    fig.add_hline(y=-budget.max_drop, line=dict(color=WINNER, dash="dot", width=1),
                  annotation_text=f"at most {budget.max_drop:g} points lost", annotation_position="bottom left")
    limits = [budget.max_size_bytes] if budget.max_size_bytes is not None else []
    if budget.min_smaller is not None and np.isfinite(b["size_bytes"]):
        limits.append(b["size_bytes"] / budget.min_smaller)
    if limits:
        fig.add_vline(x=min(limits), line=dict(color=WINNER, dash="dot", width=1),
                      annotation_text="size budget", annotation_position="top left")
    return fig
