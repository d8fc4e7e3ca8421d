"""The Runs page's training-curve figure (pages/figures/runs.py): epochs tick at whole numbers."""

from __future__ import annotations

import pandas as pd

from pages.figures.runs import metric_history_figure


def test_epoch_ticks_are_whole_numbers_never_1_2_or_1_4():
    history = pd.DataFrame({"key": ["loss", "loss", "loss"], "step": [1, 2, 3], "value": [0.9, 0.5, 0.4]})
    axis = metric_history_figure(history, ["loss"]).layout.xaxis
    assert axis.tickmode == "linear" and axis.dtick == 1 and axis.tickformat == "d"
    many = pd.DataFrame({"key": "loss", "step": range(0, 101), "value": 0.5})
    assert metric_history_figure(many, ["loss"]).layout.xaxis.dtick == 10  # about ten ticks, still whole


def test_fractional_steps_keep_plotlys_own_ticks():
    history = pd.DataFrame({"key": ["lr", "lr"], "step": [0.5, 1.5], "value": [0.1, 0.05]})
    assert metric_history_figure(history, ["lr"]).layout.xaxis.dtick is None
