"""Accuracies scored on a seeded subset carry their 95 % interval into the charts: the Trade-offs frame and figure
(engine/analysis/tradeoffs.py, pages/figures/tradeoffs.py) and the Breakpoints curve and figure
(engine/analysis/breakpoint.py, pages/figures/breakpoints.py); points measured on the whole split draw no bar."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from engine.analysis.breakpoint import Curve, curve_from_points
from engine.analysis.tradeoffs import as_point_dicts, error_bar_caption, on_axis, shape_points
from engine.core.intervals import accuracy_interval
from engine.core.point import Measurement
from engine.methods.tasks import make_point
from pages.figures.breakpoints import breakpoint_figure
from pages.figures.tradeoffs import tradeoff_figure
from store import Store

SPARSITY = [0.0, 0.5, 0.8, 0.95]
ACC = [0.96, 0.95, 0.90, 0.30]
TEST, SUBSET = 360, 60


def measurement(accuracy: float, sparsity: float, **kw) -> Measurement:
    nonzero = round(1000 * (1 - sparsity))
    values = dict(accuracy=accuracy, top5=0.99, loss=0.3, params_total=1000, params_nonzero=nonzero, bits=32.0,
                  size_bytes=4 * nonzero + 100, size_fp32_bytes=4000, file_bytes=4200, macs=50_000,
                  latency_ms_b1=None, latency_p90_ms_b1=None, latency_ms_b32=None, latency_p90_ms_b32=None,
                  threads=2, backend="fp32 eager cpu", simulated=False, dataset="digits", model="cnn_s",
                  runtime="torch", sparsity=sparsity)
    return Measurement(**{**values, **kw})


def sweep_points() -> list:
    """A sweep as the subset-scoring sweep logs it: the ends on the whole split, the middle on 60 images."""
    out = []
    for i, (s, a) in enumerate(zip(SPARSITY, ACC)):
        whole = i in (0, len(SPARSITY) - 1)
        n = TEST if whole else SUBSET
        out.append(make_point(measurement(a, s), family="prune", method="global_unstructured",
                              stage="baseline" if s == 0 else "variant", level=s, level_name="sparsity",
                              accuracy_std=0.0, accuracy_runs=[a], eval_subset=not whole, eval_samples=n,
                              test_samples=TEST, eval_note="seeded subset", **accuracy_interval(a, n),
                              **({"subset_accuracy": a - 0.01} if whole else {})))
    return out


def mixed_point():
    """A mixed-precision step: accuracy on the whole test split, its search score on a validation subset."""
    return make_point(measurement(0.94, 0.0, bits=6.0), family="quantize", method="mixed", stage="step",
                      val_accuracy=0.9, val_samples=50, val_accuracy_lo=0.785, val_accuracy_hi=0.957)


@pytest.fixture(scope="module")
def shaped(tmp_path_factory) -> pd.DataFrame:
    with Store(tmp_path_factory.mktemp("subset") / "s.duckdb") as store:
        rid = store.create_run("prune.global_unstructured", {}, name="subset sweep")
        for p in sweep_points():
            store.add_point(rid, p)
        store.add_point(store.create_run("quantize.mixed", {}, name="mixed"), mixed_point())
        store.flush()
        return shape_points(store.points(expand=False))


def test_the_frame_carries_each_subset_points_interval_and_no_bar_for_the_whole_split(shaped):
    sweep = shaped[shaped["method"] == "global_unstructured"].sort_values("level")
    assert sweep["eval_subset"].tolist() == [False, True, True, False]
    for _, r in sweep.iterrows():
        lo, hi = accuracy_interval(r["accuracy"], SUBSET if r["eval_subset"] else TEST).values()
        assert (r["accuracy_lo"], r["accuracy_hi"]) == pytest.approx((lo, hi))
        if r["eval_subset"]:
            assert r["eval_samples"] == SUBSET
            assert (r["error_minus"], r["error_plus"]) == pytest.approx((r["accuracy"] - lo, hi - r["accuracy"]))
            assert r["error_minus"] > 0 and r["error_plus"] > 0
            assert r["interval_text"] == f"subset of 60 images, 95 % interval {lo:.4f}–{hi:.4f}"
        else:  # measured on the whole split: no bar (one run: no spread either), no words
            assert math.isnan(r["error_minus"]) and math.isnan(r["error_plus"]) and r["interval_text"] == ""
    mixed = shaped[shaped["method"] == "mixed"].iloc[0]
    assert not mixed["eval_subset"] and math.isnan(mixed["error_plus"])  # its accuracy is the whole test split's
    assert (mixed["val_accuracy_lo"], mixed["val_accuracy_hi"], mixed["val_samples"]) == (0.785, 0.957, 50)
    assert "search score 0.9000 on a subset of 50 validation images, 95 % interval 0.7850–0.9570" in \
        mixed["interval_text"]
    assert "2 points; points measured on the whole split have none" in error_bar_caption(shaped)


def test_the_tradeoffs_figure_draws_the_interval_below_and_above_and_says_so_on_hover(shaped):
    fig = tradeoff_figure(on_axis(shaped, "params"), "family", "model")
    prune = next(t for t in fig.data if t.name == "prune")
    assert prune.error_y.symmetric is False
    order = np.argsort(-np.asarray(prune.x))  # fewest pruned first
    minus = np.asarray(prune.error_y.arrayminus, dtype=float)[order]
    plus = np.asarray(prune.error_y.array, dtype=float)[order]
    assert np.isnan(minus[[0, 3]]).all() and np.isfinite(minus[[1, 2]]).all() and np.isfinite(plus[[1, 2]]).all()
    hover = np.asarray(prune.hovertext, dtype=object)[order]
    assert "subset of 60 images, 95 % interval" in hover[1] and "subset of" not in hover[0]
    mixed = next(t for t in fig.data if t.name == "quantize")
    assert mixed.error_y.array is None  # a whole-split accuracy: no bar
    assert "search score" in mixed.hovertext[0]


def test_the_breakpoint_curve_and_figure_carry_the_subset_intervals(shaped):
    rows = shaped[shaped["method"] == "global_unstructured"]
    curve = curve_from_points(as_point_dicts(rows))
    assert np.isnan(curve.lo[0]) and np.isnan(curve.lo[-1]) and curve.samples[1:3] == [SUBSET, SUBSET]
    assert curve.lo[1] < curve.mean[1] < curve.hi[1]
    assert Curve.from_dict(curve.to_dict()).to_dict() == curve.to_dict()
    fig = breakpoint_figure({"sweep": curve}, {})
    line = next(t for t in fig.data if t.name == "sweep")
    assert np.isfinite(np.asarray(line.error_y.array, dtype=float)).sum() == 2
    assert "subset of 60 images, 95 % interval" in line.customdata[1][2] and line.customdata[0][2] == ""
    whole = Curve([1000, 500, 50], [0.96, 0.95, 0.3])  # nothing on a subset: no bars at all
    assert next(t for t in breakpoint_figure({"w": whole}, {}).data if t.name == "w").error_y.array is None
