"""The Plan chart: accuracy (%) over size for a plan's candidates. Estimates (the proxy, not measured) are drawn
hollow and named "estimate"; confirmed runs filled; the recommendation as a star; the baseline as a diamond; the
accuracy budget and a size budget as lines."""

from __future__ import annotations

import plotly.graph_objects as go

ESTIMATE, CONFIRMED, WINNER = "#1f77b4", "#2ca02c", "#d62728"


def plan_figure(estimates: list[dict], confirmed: list[dict], baseline: dict, *, max_drop: float | None = None,
                max_size_bytes: float | None = None, recommended: dict | None = None, height: int = 460) -> go.Figure:
    """`estimates` and `confirmed` are engine.run.planner.estimate_rows / confirmed_rows; `recommended` the plan's
    recommendation (accuracy as a fraction, size_bytes, artifact)."""
    fig = go.Figure()
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), hovermode="closest",
                      xaxis_title="size (bytes, as deployed)", yaxis_title="test accuracy (%)",
                      title=dict(text="Candidates: estimates fill in first, real runs confirm them", x=0, font_size=15))
    fig.update_xaxes(type="log")
    open_estimates = [r for r in estimates if not r.get("confirmed")]
    for name, rows, colour, symbol in (("estimate (proxy, not measured)", open_estimates, ESTIMATE, "circle-open"),
                                       ("confirmed (real run)", confirmed, CONFIRMED, "circle")):
        if not rows:
            continue
        text = [f"{r['key']}<br>{r['label']}" + (f"<br>estimate was {r['estimate_accuracy']:.2f} %"
                                                  if r.get("estimate_accuracy") is not None else "") for r in rows]
        fig.add_trace(go.Scatter(x=[r["size_bytes"] for r in rows], y=[r["accuracy"] for r in rows], mode="markers",
                                 name=f"{name} ({len(rows)})", hovertext=text,
                                 marker=dict(color=colour, symbol=symbol, size=9, line=dict(width=1.5)),
                                 hovertemplate="%{x:,.0f} B, %{y:.2f} %<br>%{hovertext}<extra></extra>"))
    if recommended:  # a stored variant of the baseline: one of these runs, or one the store held already
        fig.add_trace(go.Scatter(x=[recommended["size_bytes"]], y=[100 * recommended["accuracy"]], mode="markers",
                                 name="recommended", hovertext=[recommended.get("artifact", "")],
                                 marker=dict(color=WINNER, symbol="star", size=16)))
    if baseline.get("accuracy") is not None:
        fig.add_trace(go.Scatter(x=[baseline["size_bytes"]], y=[baseline["accuracy"]], mode="markers", name="baseline",
                                 marker=dict(color="black", symbol="diamond", size=11)))
        if max_drop is not None:
            fig.add_hline(y=baseline["accuracy"] - max_drop, line_dash="dash", line_color="grey",
                          annotation_text=f"-{max_drop:g} points", annotation_position="bottom left")
    if max_size_bytes is not None:
        fig.add_vline(x=max_size_bytes, line_dash="dot", line_color="grey", annotation_text="size budget")
    return fig
