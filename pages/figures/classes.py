"""Confusion matrices side by side: the baseline's and the variant's, each row (a true class) coloured by the
share of its test images predicted as each class, the counts in the hover text."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engine.analysis.classes import ClassReport


def _shares(matrix: list[list[int]]) -> list[list[float]]:
    return [[v / sum(r) if sum(r) else 0.0 for v in r] for r in matrix]


def confusion_figure(report: ClassReport) -> go.Figure:
    """One heatmap per matrix the report holds (baseline first), rows = true class, columns = predicted."""
    panels = [(f"baseline: {report.baseline_label}", report.baseline_matrix)] if report.baseline_matrix else []
    panels.append((f"this point: {report.label}", report.matrix or []))
    names = report.class_names or [str(i) for i in range(len(report.matrix or []))]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for t, _ in panels], horizontal_spacing=0.08)
    for i, (_, m) in enumerate(panels, start=1):
        fig.add_trace(go.Heatmap(
            z=_shares(m), x=names, y=names, customdata=m, zmin=0, zmax=1, coloraxis="coloraxis",
            hovertemplate="true %{y}, predicted %{x}: %{customdata} images (%{z:.1%} of the class)<extra></extra>"),
            row=1, col=i)
        fig.update_xaxes(title_text="predicted", type="category", row=1, col=i)
        fig.update_yaxes(title_text="true class" if i == 1 else None, type="category", autorange="reversed",
                         row=1, col=i)
    fig.update_layout(coloraxis={"colorscale": "Blues", "colorbar": {"title": "share of row", "tickformat": ".0%"}},
                      height=380 + 8 * len(names), margin={"t": 60, "l": 60, "r": 20, "b": 50})
    fig.update_annotations(font_size=12)
    return fig
