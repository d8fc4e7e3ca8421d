"""Trade-offs and Breakpoints logic without a browser: the Pareto front on hand-made points (ties, NaN,
either direction), shaping and filters on a real (small, untrained) store, the figures' traces, axes,
error bars and front, curves for the detectors and seed 002's Table 3 as the study builds it."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from engine.analysis.breakpoint import curve_from_points, detect
from engine.analysis.study_tables import TABLE3_ROWS, kd_prune_table3
from engine.analysis.tradeoffs import (
    AXES,
    apply_filters,
    build_curve,
    curve_candidates,
    detector_fields,
    filter_options,
    lineage_of,
    on_axis,
    pareto_front,
    pareto_points,
    per_curve_summary,
    point_details,
    selected_point_id,
    shape_points,
    table3_summary,
    teacher_rows,
)
from engine.core.errors import UserError
from engine.core.point import Measurement
from engine.methods.tasks import make_point
from pages.figures.breakpoints import breakpoint_figure
from pages.figures.tradeoffs import GL_ABOVE, tradeoff_figure
from store import Store

# ---------------------------------------------------------------- the Pareto front


def front(x, y, xb="min", yb="max") -> list[int]:
    return list(np.flatnonzero(pareto_front(x, y, xb, yb)))


def test_the_front_keeps_the_points_nothing_beats_on_both_accuracy_and_cost():
    x = [1, 2, 2, 3, 4, 5]
    y = [0.5, 0.7, 0.6, 0.7, 0.9, 0.8]
    # (2, .6) loses to (2, .7) at the same cost; (3, .7) costs more for the same accuracy; (5, .8) loses to (4, .9)
    assert front(x, y) == [0, 1, 4]


def test_exact_twins_on_the_front_both_stay_and_a_twin_off_it_stays_off():
    x = [1, 1, 2, 2, 3]
    y = [0.5, 0.5, 0.5, 0.4, 0.9]
    assert front(x, y) == [0, 1, 4]  # (2, .5) ties the best accuracy but costs more: dominated


def test_nan_and_infinite_points_are_never_on_the_front_and_dominate_nothing():
    x = [np.nan, 1.0, 2.0, 0.5, np.inf]
    y = [1.0, 0.5, np.nan, 0.4, 0.99]
    assert front(x, y) == [1, 3]
    assert front([np.nan], [np.nan]) == []
    assert front([], []) == []


def test_more_is_better_flips_the_direction_along_x_as_for_sparsity():
    sparsity = [0.0, 0.5, 0.5, 0.9, 0.3]
    acc = [0.99, 0.98, 0.97, 0.5, 0.97]
    assert front(sparsity, acc, "max") == [0, 1, 3]
    assert front(sparsity, acc, "min") == [0]  # with less sparsity better, the densest most accurate wins alone


def test_the_front_matches_the_definition_on_random_points_with_many_ties():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 80).astype(float), rng.integers(0, 6, 80).astype(float)
    x[::17] = np.nan
    for xb, yb in itertools.product(("min", "max"), repeat=2):
        sx = 1 if xb == "min" else -1
        sy = 1 if yb == "max" else -1
        expected = []
        for i in range(len(x)):
            if np.isnan(x[i]):
                continue
            dominated = any(not np.isnan(x[j]) and sx * x[j] <= sx * x[i] and sy * y[j] >= sy * y[i]
                            and (x[j], y[j]) != (x[i], y[i]) for j in range(len(x)))
            if not dominated:
                expected.append(i)
        assert front(x, y, xb, yb) == expected, (xb, yb)


def test_a_direction_that_is_neither_min_nor_max_is_refused():
    with pytest.raises(ValueError, match="x_better"):
        pareto_front([1], [1], "smaller")
    with pytest.raises(ValueError, match="same length"):
        pareto_front([1, 2], [1])


# ---------------------------------------------------------------- a small store of hand-made points


def measurement(accuracy, nonzero, **kw) -> Measurement:
    values = dict(accuracy=accuracy, top5=0.99, loss=0.3, params_total=1000, params_nonzero=nonzero, bits=32.0, size_bytes=4 * nonzero + 100, size_fp32_bytes=4000,
                  file_bytes=4200, macs=50_000, latency_ms_b1=None, latency_p90_ms_b1=None, latency_ms_b32=None,
                  latency_p90_ms_b32=None, threads=2, backend="fp32 eager cpu", simulated=False, dataset="digits",
                  model="cnn_s", runtime="torch")
    values.update(kw)
    values.setdefault("sparsity", 1 - nonzero / values["params_total"])
    return Measurement(**values)


SPARSITY = [0.0, 0.3, 0.5, 0.7, 0.9]
ACC = [0.95, 0.95, 0.94, 0.90, 0.40]


def prune_points(acc=ACC, model="cnn_s", runtime="torch", role="", std=0.01, latency=None, params=1000):
    return [make_point(measurement(a, round(params * (1 - s)), model=model, runtime=runtime, latency_ms_b1=latency,
                                   params_total=params),
                       family="prune", method="global_unstructured", stage="baseline" if s == 0 else "variant",
                       level=s, level_name="sparsity", role=role, accuracy_std=std, accuracy_runs=[a - std, a + std])
            for s, a in zip(SPARSITY, acc)]


def quant_points():
    return [make_point(measurement(a, 1000, bits=float(b), size_bytes=int(125 * b) + 100, simulated=b < 32),
                       family="quantize", method="fake", stage="baseline" if b == 32 else "variant", level=float(b),
                       level_name="bits")
            for b, a in ((2, 0.6), (4, 0.93), (8, 0.95), (32, 0.95))]


@pytest.fixture(scope="module")
def points(tmp_path_factory) -> pd.DataFrame:
    """Four runs: two prune sweeps (cnn_s on torch and onnxruntime, cnn_m timed), a fake-quant sweep, a
    sensitivity scan; read back as the Trade-offs page reads them."""
    path = tmp_path_factory.mktemp("tradeoffs") / "t.duckdb"
    with Store(path) as store:
        def run(name, kind, pts):
            rid = store.create_run(kind, {}, name=name)
            for p in pts:
                store.add_point(rid, p)
            return rid

        run("prune cnn_s", "prune.global_unstructured",
            prune_points() + prune_points(runtime="onnxruntime", std=0.0))
        run("teacher prune cnn_m", "prune.global_unstructured",
            prune_points([0.97, 0.97, 0.96, 0.95, 0.7], model="cnn_m", latency=2.0, params=4000, role="teacher"))
        run("fake-quant cnn_s", "quantize.fake", quant_points())
        run("sensitivity cnn_s", "prune.sensitivity",
            [make_point(measurement(0.9, 700), family="prune", method="sensitivity", stage="variant", level=0.3,
                        level_name="sparsity", layer=name) for name in ("conv1", "fc")])
        store.flush()
        return store.points(expand=False)


@pytest.fixture(scope="module")
def shaped(points) -> pd.DataFrame:
    return shape_points(points)


def test_shaping_counts_repeats_labels_methods_and_keeps_every_row(points, shaped):
    assert len(shaped) == len(points) == 5 * 3 + 4 + 2
    prune = shaped[shaped["family"] == "prune"]
    assert set(prune["method_label"]) == {"prune.global_unstructured", "prune.sensitivity"}
    swept = prune[prune["method"] == "global_unstructured"]
    assert (swept["repeats"] == 2).all()
    assert swept["error"].notna().all()
    quant = shaped[shaped["family"] == "quantize"]
    assert (quant["repeats"] == 0).all() and quant["error"].isna().all()  # no repeats: no error bar
    assert quant["simulated"].sum() == 3
    assert "sparsity 0.3" in set(shaped["level_text"]) and "bits 4" in set(shaped["level_text"])
    assert shape_points(points.iloc[:0]).empty


def test_filters_keep_the_chosen_values_and_an_empty_choice_keeps_everything(shaped):
    opts = filter_options(shaped)
    assert opts["runtime"] == ["onnxruntime", "torch"] and opts["model"] == ["cnn_m", "cnn_s"]
    assert len(opts["run"]) == 4
    assert len(apply_filters(shaped, {"family": [], "model": None})) == len(shaped)
    only = apply_filters(shaped, {"family": ["prune"], "runtime": ["torch"], "model": ["cnn_s"]})
    assert set(only["family"]) == {"prune"} and set(only["runtime"]) == {"torch"} and set(only["model"]) == {"cnn_s"}
    assert len(apply_filters(shaped, {"method": ["quantize.fake"]})) == 4
    run_id = opts["run"][0]
    assert set(apply_filters(shaped, {"run": [run_id]})["run_id"]) == {run_id}
    with pytest.raises(UserError, match="no filter colour"):
        apply_filters(shaped, {"colour": ["x"]})


def test_a_latency_axis_drops_points_without_latency_and_says_how_many(shaped):
    view = on_axis(shaped, "latency_b1")
    assert len(view.points) == 5 and view.missing == len(shaped) - 5
    assert f"{view.missing} points with no latency measured" in view.caption()
    log = on_axis(shaped, "sparsity", log_x=True)
    assert log.nonpositive == 3 + 4  # the three sparsity-0 baselines and the four dense quantized models
    assert "log axis" in log.caption()
    assert on_axis(shaped, "size").caption() == ""
    with pytest.raises(UserError, match="no axis"):
        on_axis(shaped, "speed")


def test_pareto_points_follow_each_axis_direction(shaped):
    sparsity = pareto_points(on_axis(shaped, "sparsity"))
    assert sparsity["sparsity"].is_monotonic_increasing
    assert sparsity["accuracy"].is_monotonic_decreasing  # more sparsity, less accuracy along the front
    size = pareto_points(on_axis(shaped, "size"))
    assert size["accuracy"].is_monotonic_increasing  # bigger models on the front are more accurate
    assert size["accuracy"].max() == shaped["accuracy"].max()


def test_point_details_parse_the_json_columns_and_lineage_says_why_it_is_missing(shaped, tmp_path):
    pid = int(shaped["point_id"].iloc[1])
    d = point_details(shaped, pid)
    assert d["point_id"] == pid and d["accuracy_runs"] == [pytest.approx(0.94), pytest.approx(0.96)]
    assert isinstance(d["params"], dict) and d["latency_ms_b1"] is None
    with pytest.raises(UserError, match="no point"):
        point_details(shaped, 10_000)
    assert "saved no checkpoint" in lineage_of("").note
    missing = lineage_of(str(tmp_path / "gone"))
    assert not missing.found and "does not exist" in missing.note


def test_a_selection_names_its_point_in_the_form_the_browser_sends():
    row = {"0": 42.0, "1": 0.93}  # a numeric customdata row arrives as an object keyed by position
    assert selected_point_id([{"curve_number": 0, "customdata": row}]) == 42
    assert selected_point_id([{"customdata": [7, "x"]}]) == 7
    assert selected_point_id([{"x": 1, "y": 2}, {"customdata": {"0": 3}}]) == 3  # a line without ids is skipped
    assert selected_point_id([]) is None and selected_point_id([{"customdata": {}}]) is None


# ---------------------------------------------------------------- the Trade-offs figure


def spec(fig) -> dict:
    return json.loads(fig.to_json())


def test_the_figure_has_a_trace_per_colour_group_the_front_and_the_symbol_legend(shaped):
    view = on_axis(shaped, "size")
    fig = tradeoff_figure(view, "family", "model")
    names = list(dict.fromkeys(t.name for t in fig.data))  # a colour group is split by symbol: one name
    assert names[:2] == ["prune", "quantize"]
    assert "model: cnn_m" in names and "model: cnn_s" in names and "open symbol: simulated" in names
    pareto = fig.data[-1]
    assert pareto.name == f"Pareto front ({len(pareto_points(view))})" and pareto.line.shape == "hv"
    assert fig.layout.xaxis.title.text == AXES["size"].label and fig.layout.xaxis.type is None
    # every point names its id first, for a selection
    ids = [int(c[0]) for t in fig.data if t.customdata is not None for c in t.customdata]
    assert sorted(ids) == sorted(view.points["point_id"])
    legend = [t.name for t in fig.data if t.showlegend is not False and t.customdata is not None]
    assert legend == ["prune", "quantize"]  # a group split by symbol has one legend entry
    by_method = list(dict.fromkeys(t.name for t in tradeoff_figure(view, "method", "none").data))
    assert by_method[:3] == ["prune.global_unstructured", "prune.sensitivity", "quantize.fake"]
    assert not any(n.startswith("model:") for n in by_method)


def test_log_x_error_bars_open_symbols_and_the_sparsity_front_shape(shaped):
    fig = tradeoff_figure(on_axis(shaped, "sparsity", log_x=True), "family", "model", log_x=True)
    assert fig.layout.xaxis.type == "log"
    prune = [t for t in fig.data if t.name == "prune"]
    assert "quantize" not in {t.name for t in fig.data}  # the quantized models are dense: sparsity 0 is off a log axis
    assert {t.marker.symbol for t in prune} == {"circle", "square"}  # one symbol per model, none open
    assert all(t.error_y.visible for t in prune)
    bars = np.concatenate([np.asarray(t.error_y.array, dtype=float) for t in prune])
    assert np.isfinite(bars).sum() == 3 * 4  # the swept points (sparsity > 0) of three sweeps, repeated twice
    assert np.isnan(bars).sum() == 2  # the sensitivity scan's two points had no repeats: no bar
    assert fig.data[-1].line.shape == "vh"  # more sparsity is better: the staircase turns the other way
    by_size = tradeoff_figure(on_axis(shaped, "size"), "family", "model")
    quant = [t for t in by_size.data if t.name == "quantize"]
    assert all(t.error_y.array is None for t in quant)  # no repeats, no bars
    opened = {x: t.marker.symbol.endswith("-open") for t in quant for x in t.x}
    assert opened == {350.0: True, 600.0: True, 1100.0: True, 4100.0: False}  # simulated: 2, 4, 8 bits
    assert all("simulated quantization" in h for t in quant if t.marker.symbol.endswith("-open") for h in t.hovertext)
    assert "Pareto" not in " ".join(t.name for t in tradeoff_figure(on_axis(shaped, "size"), pareto=False).data)


def test_many_points_use_webgl_traces(shaped):
    big = pd.concat([shaped] * (GL_ABOVE // len(shaped) + 1), ignore_index=True)
    assert tradeoff_figure(on_axis(big, "params")).data[0].type == "scattergl"
    assert tradeoff_figure(on_axis(shaped, "params")).data[0].type == "scatter"


def test_an_empty_view_gives_an_empty_figure_with_its_axis(shaped):
    fig = tradeoff_figure(on_axis(shaped.iloc[:0], "bits"))
    assert not fig.data and fig.layout.xaxis.title.text == AXES["bits"].label


# ---------------------------------------------------------------- breakpoint curves


def test_candidates_are_sweeps_per_runtime_never_sensitivity_scans(shaped):
    runs = curve_candidates(shaped, "run")
    labels = [k.label for k in runs]
    assert len(runs) == 4  # cnn_s torch, cnn_s onnxruntime, cnn_m, fake-quant
    assert not any("sensitivity" in label for label in labels)
    assert any("onnxruntime" in label for label in labels)
    assert [k.teacher for k in runs].count(True) == 1
    pooled = curve_candidates(shaped, "method")
    assert {(k.ident, k.model, k.runtime) for k in pooled} == {
        ("prune.global_unstructured", "cnn_s", "torch"), ("prune.global_unstructured", "cnn_s", "onnxruntime"),
        ("prune.global_unstructured", "cnn_m", "torch"), ("quantize.fake", "cnn_s", "torch")}
    with pytest.raises(UserError, match="curves come from"):
        curve_candidates(shaped, "colour")
    assert curve_candidates(shaped.iloc[:0]) == []


def test_a_candidate_builds_the_curve_the_breakpoint_engine_builds_from_the_run(shaped):
    key = next(k for k in curve_candidates(shaped) if k.model == "cnn_m")
    curve = build_curve(shaped, key)
    expected = curve_from_points([p.to_dict() for p in prune_points([0.97, 0.97, 0.96, 0.95, 0.7], model="cnn_m",
                                                                     latency=2.0, params=4000)])
    assert curve.x == expected.x and curve.mean == pytest.approx(expected.mean)
    assert curve.std == pytest.approx(expected.std)
    assert build_curve(shaped, key, "latency").x == [2.0] * 5  # latency does not move: detectors will say so
    with pytest.raises(UserError, match="latency_ms_b1 was not measured"):
        build_curve(shaped, next(k for k in curve_candidates(shaped) if k.model == "cnn_s"), "latency")


def test_detector_fields_come_from_the_detector_configs():
    kneedle = {f["name"]: f for f in detector_fields("kneedle")}
    assert kneedle["sensitivity"]["type"] == "float" and kneedle["sensitivity"]["default"] == 1.0
    assert kneedle["curve"]["choices"] == ["concave", "convex"] and kneedle["online"]["type"] == "bool"
    assert [f["name"] for f in detector_fields("tolerance")] == ["delta", "whole_spread"]


def sweep_dicts(acc, params, std=0.0):
    return [p.to_dict() for p in prune_points(acc, params=params, std=std)]


@pytest.mark.parametrize("detector", ["kneedle", "slope_ratio", "tolerance"])
def test_table3_is_the_studys_table_for_a_detector_at_its_defaults(detector):
    pts = {"teacher": sweep_dicts([0.97, 0.97, 0.965, 0.95, 0.6], 4000),
           "student kd": sweep_dicts([0.95, 0.95, 0.93, 0.80, 0.3], 1000)}
    curves = {name: curve_from_points(p) for name, p in pts.items()}
    results = {name: detect(c, detector) for name, c in curves.items()}
    ours = table3_summary(curves, results, "teacher")
    study = kd_prune_table3(pts)
    assert list(ours.index) == TABLE3_ROWS
    pd.testing.assert_frame_equal(ours.astype(float), study[[f"student kd / {detector}"]].astype(float))


def test_table3_follows_the_chosen_settings_and_refuses_an_unknown_teacher():
    pts = {"t": sweep_dicts([0.97, 0.97, 0.965, 0.95, 0.6], 4000), "s": sweep_dicts([0.95, 0.95, 0.93, 0.8, 0.3], 1000)}
    curves = {n: curve_from_points(p) for n, p in pts.items()}
    loose = table3_summary(curves, {n: detect(c, "tolerance", {"delta": 0.2}) for n, c in curves.items()}, "t")
    strict = table3_summary(curves, {n: detect(c, "tolerance", {"delta": 0.001}) for n, c in curves.items()}, "t")
    assert loose.loc["P(s) breakpoint"].iloc[0] < strict.loc["P(s) breakpoint"].iloc[0]
    with pytest.raises(UserError, match="teacher"):
        table3_summary(curves, {}, "nobody")
    per = per_curve_summary(curves, {n: detect(c, "tolerance") for n, c in curves.items()})
    assert list(per["curve"]) == ["t", "s"] and per["compression rate (x)"].notna().all()


def test_the_breakpoint_figure_shares_x_draws_bands_stars_and_the_detection_curve():
    pts = {"t": sweep_dicts([0.97, 0.97, 0.965, 0.95, 0.6], 4000, std=0.01),
           "s": sweep_dicts([0.95, 0.95, 0.95, 0.95, 0.95], 1000)}
    curves = {n: curve_from_points(p) for n, p in pts.items()}
    results = {n: detect(c, "slope_ratio") for n, c in curves.items()}
    assert results["t"].found and not results["s"].found
    fig = breakpoint_figure(curves, results, log_x=True)
    s = spec(fig)
    layout = s["layout"]
    assert layout["xaxis"].get("matches") == "x2" or layout["xaxis2"].get("matches") == "x"
    assert layout["xaxis"]["type"] == "log" and layout["xaxis2"]["type"] == "log"
    assert "slope ratio" in layout["yaxis2"]["title"]["text"]
    names = [t.name for t in fig.data]
    assert "t mean - std" in names and "s mean - std" not in names  # a band only where repeats spread
    band = next(t for t in fig.data if t.name == "t mean - std")
    assert band.fill == "tonexty"
    star = next(t for t in fig.data if t.name == "t: breakpoint")
    assert star.marker.symbol == "star" and star.x[0] == results["t"].x
    assert "s: breakpoint" not in names
    detection = [t for t in fig.data if t.yaxis == "y2"]
    assert {t.name for t in detection} >= {"t: slope ratio (after / before)", "t: threshold"}


def test_a_teacher_is_known_from_points_and_tags_never_from_a_run_name():
    df = pd.DataFrame({
        "run_name": ["teacher-ish name", "x", "y", "z", "kd"],
        "role": ["", "teacher", "", "", "student"],
        "family": ["prune", "distill", "prune", "prune", "distill"],
        "artifact": ["a", "/c/teacher", "b", "c", "/c/student"],
        "input_checkpoint": ["/c/other", "", "/c/teacher", "/c/kd-teacher", "/c/kd-teacher"],  # kd: its teacher
        "params": ["{}", "{}", "{}", "{}", '{"teacher": "/c/kd-teacher"}'],
    })
    assert teacher_rows(df, df).tolist() == [False, True, True, True, False]


# ---------------------------------------------------------------- issue 22: defaults, colours, readable tables


def test_log_x_is_suggested_where_x_spreads_over_orders_of_magnitude_and_crowds_near_zero():
    from engine.analysis.breakpoint import suggest_log_x

    assert suggest_log_x([1_000_000, 900_000, 2_000, 1_500, 900, 400])  # a teacher's millions, students near 0
    assert not suggest_log_x([1000, 700, 500, 300, 100])  # one scale: linear
    assert not suggest_log_x([0, 10, 1000, 10_000])  # a point at 0 cannot go on a log axis
    assert not suggest_log_x([1, 2])  # too few to say


def test_the_default_curve_is_the_newest_sweep_with_three_levels_and_a_breakpoint(shaped):
    from engine.analysis.tradeoffs import MIN_LEVELS, default_curves, map_selection

    candidates = curve_candidates(shaped, "run")
    assert all(k.n_levels >= 2 for k in candidates)
    ids = default_curves(shaped, candidates, "params", "kneedle")
    chosen = [k for k in candidates if k.id in ids]
    assert chosen and all(k.n_levels >= MIN_LEVELS for k in chosen)
    assert len({k.ident for k in chosen}) == 1  # one sweep (with its other runtimes)
    assert all(detect(build_curve(shaped, k, "params"), "kneedle").found for k in chosen)
    assert not any(k.ident == shaped.loc[shaped["run_name"] == "fake-quant cnn_s", "run_id"].iloc[0] for k in chosen)
    pooled = curve_candidates(shaped, "method")
    mapped = map_selection(shaped, ids, pooled)
    assert mapped and all(i.startswith("method|prune.global_unstructured|") for i in mapped)
    assert set(map_selection(shaped, mapped, candidates)) >= set(ids)  # and back again
    assert default_curves(shaped, [], "params") == []


def test_a_colour_is_fixed_by_the_value_not_by_what_a_filter_leaves(shaped):
    from pages.figures.tradeoffs import colour_map

    view = on_axis(shaped, "size")
    every = tradeoff_figure(view, "family")
    only_quant = tradeoff_figure(on_axis(apply_filters(shaped, {"family": ["quantize"]}), "size"), "family",
                                 colour_values=shaped["family"])
    colour = {t.name: t.marker.color for t in every.data if t.customdata is not None}
    assert {t.marker.color for t in only_quant.data if t.name == "quantize"} == {colour["quantize"]}
    assert colour_map(["b", "a"]) == colour_map(["a", "b", "b"])


def test_the_filters_title_names_what_is_chosen():
    from engine.analysis.tradeoffs import filters_title

    assert filters_title({}) == "Filters (none chosen: all points)"
    assert filters_title({"family": ["prune"], "model": []}) == "Filters (family: prune)"
    assert filters_title({"family": ["prune", "quantize"], "run": ["r1"]}) == "Filters (family: 2 chosen; run: 1 chosen)"


def test_tables_round_to_what_was_measured_and_lead_with_accuracy(shaped):
    from engine.analysis.tradeoffs import detail_table, number_text, pareto_table

    front = pareto_table(pareto_points(on_axis(shaped, "params")), "params")
    assert list(front.columns[:2]) == ["accuracy", "params_nonzero"]
    assert number_text(94.80000138282776, "accuracy (%)") == "94.8"
    assert number_text(0.5879999995231628, "accuracy") == "0.588"
    assert number_text(12345.0, "P(t) before pruning") == "12,345"
    table = detail_table({"accuracy": 0.5879999995231628, "accuracy_runs": [0.5879999995231628], "level": None})
    assert list(table["value"]) == ["0.588", "[0.588]", ""]


def test_breakpoint_tables_say_why_a_value_is_missing():
    from engine.analysis.tradeoffs import NO_BREAKPOINT, per_curve_text, table3_text

    falls = curve_from_points(_point_dicts(ACC))
    flat = curve_from_points(_point_dicts([0.95, 0.95, 0.95, 0.95, 0.95]))
    curves = {"teacher": falls, "student": flat}
    results = {n: detect(c, "kneedle") for n, c in curves.items()}
    assert results["teacher"].found and not results["student"].found
    t3 = table3_text(curves, results, "teacher")
    cells = t3.to_numpy().ravel().tolist()
    assert all(isinstance(c, str) and c not in ("None", "nan", "") for c in cells)
    assert t3.loc["ACC(s) breakpoint (%)"].iloc[0] == NO_BREAKPOINT
    per = per_curve_text(curves, results)
    assert per.set_index("curve").loc["student", "params at breakpoint"] == NO_BREAKPOINT
    assert not per.isna().any().any()


def _point_dicts(acc):
    from engine.analysis.tables import point_records

    rows = []
    for s, a in zip(SPARSITY, acc, strict=True):
        rows.append({"accuracy": a, "accuracy_std": 0.0, "accuracy_runs": None, "params_nonzero": round(1000 * (1 - s)),
                     "params_total": 1000, "level": s, "level_name": "sparsity", "stage": "variant", "family": "prune",
                     "method": "global_unstructured", "size_bytes": 4000, "bits": 32.0, "latency_ms_b1": None})
    return point_records(pd.DataFrame(rows))


def test_latency_charts_set_apart_machines_and_noisy_timings(points):
    """Issue #23: two machines are not one series, and a noisy timing is said, never silently mixed in."""
    from engine.analysis.tradeoffs import NOT_TIMED, timing_warning

    df = points[points["model"] == "cnn_m"].head(4).copy()  # the timed run (latency 2.0 ms)
    df["machine"] = ["aaa", "aaa", "bbb", ""]
    df["latency_quality"] = ["clean", "clean", "noisy: busy", ""]
    df["speedup_b1"] = [None, 1.1, 1.2, None]
    shaped = shape_points(df)
    assert list(shaped["machine_label"]) == ["aaa", "aaa", "bbb", NOT_TIMED]
    assert list(shaped["timing"]) == ["clean", "clean", "noisy", NOT_TIMED]
    words = timing_warning(on_axis(shaped, "latency_b1"))
    assert "2 machines (aaa, bbb)" in words and "1 point was timed while other processes shared the CPU" in words
    assert timing_warning(on_axis(shaped[shaped["machine"] == "aaa"], "latency_b1")) == ""
    assert timing_warning(on_axis(shaped, "sparsity")) == ""  # not a timed axis
    speed = on_axis(shaped, "speedup_b1")
    assert len(speed.points) == 2 and speed.axis.better == "max" and "2 machines" in timing_warning(speed)
    assert set(filter_options(shaped)["machine"]) == {"aaa", "bbb", NOT_TIMED}
