"""Breakpoint detection: known knees on synthetic curves, reasons on curves without one, curves from
stored points, seed 002's Table 3, and the `breakpoint` command on a store (no training)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest

from engine.analysis.breakpoint import (
    DETECTORS,
    BreakpointResult,
    Curve,
    breakpoint_of,
    curve_from_points,
    detect,
    detect_all,
    table3,
)
from engine.cli.breakpoint import add_commands
from engine.core.errors import ConfigError, UserError
from engine.core.point import Measurement
from engine.methods.tasks import make_point

SPARSITY = np.round(np.arange(0.0, 1.0, 0.05), 2)  # 20 levels, step 0.05
PARAMS = 1_000_000 * (1 - SPARSITY)  # remaining parameters: falls as compression grows
DETECTOR_NAMES = ("kneedle", "slope_ratio", "tolerance")


def knee_curve(knee: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Nearly flat accuracy up to `knee`, then a steep fall (what seed 002's figures show)."""
    fall = 2.5 * np.clip(SPARSITY - knee, 0, None) ** 1.2
    return 0.90 - 0.005 * SPARSITY - fall + np.random.default_rng(seed).normal(0, noise, len(SPARSITY))


def test_detectors_are_registered_under_the_names_the_command_offers():
    assert DETECTORS.names() == list(DETECTOR_NAMES)


# ---------------------------------------------------------------- known knees


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
@pytest.mark.parametrize("knee", [0.5, 0.6, 0.7, 0.8])
def test_a_known_knee_is_found_within_one_grid_step_against_remaining_parameters(detector, knee):
    r = breakpoint_of(PARAMS, knee_curve(knee), detector=detector)
    assert r.found, r.reason
    assert abs(SPARSITY[r.index] - knee) <= 0.05 + 1e-9
    assert r.x == PARAMS[r.index]


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_a_known_knee_is_found_on_a_level_axis_where_higher_means_more_compressed(detector):
    r = detect(Curve(list(SPARSITY), list(knee_curve(0.7)), x_name="level"), detector)
    assert r.found, r.reason
    assert abs(r.x - 0.7) <= 0.05 + 1e-9


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_a_knee_on_a_bits_sweep_is_found_at_four_bits(detector):
    bits = [32, 26, 20, 16, 12, 8, 7, 6, 5, 4, 3, 2]  # seed 003's uneven grid, most compressed last
    acc = [0.9, 0.9, 0.9, 0.9, 0.899, 0.898, 0.897, 0.895, 0.894, 0.893, 0.80, 0.30]
    r = breakpoint_of(bits, acc, detector=detector)
    assert r.found, r.reason
    assert r.x in (4.0, 5.0)  # one grid step


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_knee_under_repeat_noise_is_still_found_within_one_grid_step(detector, seed):
    mean = knee_curve(0.7, noise=0.003, seed=seed)
    r = breakpoint_of(PARAMS, mean, np.full(len(mean), 0.003), detector=detector)
    assert r.found, r.reason
    assert abs(SPARSITY[r.index] - 0.7) <= 0.05 + 1e-9
    assert r.accuracy == pytest.approx(mean[r.index])
    assert r.accuracy_std == pytest.approx(0.003)


def test_kneedle_reports_kneeds_own_difference_curve():
    from kneed import KneeLocator

    mean = knee_curve(0.6)
    r = breakpoint_of(PARAMS, mean, detector="kneedle")
    kl = KneeLocator(PARAMS[::-1], mean[::-1], curve="concave", direction="increasing")
    assert r.detection_y == pytest.approx(list(kl.y_difference[::-1]))
    assert r.x == kl.knee
    assert r.detection_name == "normalised difference"


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_a_curve_that_falls_to_chance_is_broken_at_its_upper_bend(detector):
    mean = 0.1 + 0.8 / (1 + np.exp((SPARSITY - 0.75) / 0.04))  # plateau, fall, floor at chance
    r = breakpoint_of(PARAMS, mean, detector=detector)
    assert r.found, r.reason
    assert abs(SPARSITY[r.index] - 0.6) <= 0.05 + 1e-9


def test_kneedle_passes_over_a_knee_with_no_fall_after_it():
    from kneed import KneeLocator

    x, mean = [10, 9, 8, 7, 6], [0.9, 0.6, 0.58, 0.56, 0.55]
    assert KneeLocator(x[::-1], mean[::-1]).knee == 6  # kneed's own answer: the most compressed point
    r = breakpoint_of(x, mean, detector="kneedle")
    assert not r.found
    assert "no fall after them" in r.reason


def test_kneedle_online_takes_the_first_fall_from_the_reference():
    mean = 0.9 - 0.1 * np.clip((SPARSITY - 0.3) / 0.1, 0, 1) - 2.0 * np.clip(SPARSITY - 0.7, 0, None)
    assert SPARSITY[breakpoint_of(PARAMS, mean, detector="kneedle").index] == 0.7  # the steepest fall
    assert SPARSITY[breakpoint_of(PARAMS, mean, detector="kneedle", config={"online": True}).index] == 0.3


# ---------------------------------------------------------------- curves without a breakpoint


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_a_flat_curve_has_no_breakpoint_and_says_so(detector):
    r = breakpoint_of(PARAMS, np.full(len(PARAMS), 0.9), detector=detector)
    assert not r.found and r.index is None and r.x is None
    assert "no breakpoint" in r.reason and ("flat" in r.reason or "within" in r.reason)


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_an_increasing_curve_has_no_breakpoint_and_says_so(detector):
    r = breakpoint_of(PARAMS, 0.80 + 0.1 * SPARSITY, detector=detector)
    assert not r.found
    assert "rises" in r.reason or "within" in r.reason


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
@pytest.mark.parametrize("n", [0, 1])
def test_a_curve_too_short_to_judge_gives_a_reason(detector, n):
    r = breakpoint_of(PARAMS[:n], knee_curve(0.5)[:n], detector=detector)
    assert not r.found
    assert r.reason.startswith("too short")
    assert table3(Curve(list(PARAMS[:n]), list(knee_curve(0.5)[:n])), [r])[0]["compression_rate"] is None


@pytest.mark.parametrize("detector", ["kneedle", "slope_ratio"])
def test_two_points_are_too_short_for_a_change_of_slope(detector):
    r = breakpoint_of([1000, 500], [0.9, 0.5], detector=detector)
    assert not r.found and "needs at least 3" in r.reason


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
@pytest.mark.parametrize("seed", range(5))
def test_heavy_noise_gives_an_answer_with_a_reason_and_no_crash(detector, seed):
    mean = np.random.default_rng(seed).uniform(0.3, 0.9, len(PARAMS))  # no shape at all
    r = breakpoint_of(PARAMS, mean, detector=detector)
    assert r.reason
    assert len(r.detection_y) == len(PARAMS)
    assert r.found == (r.index is not None)


@pytest.mark.parametrize("detector", ["kneedle", "slope_ratio"])
def test_a_steady_linear_loss_has_no_knee(detector):
    r = breakpoint_of(PARAMS, 0.9 - 0.5 * SPARSITY, detector=detector)
    assert not r.found, r.reason


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_an_x_that_does_not_change_steadily_with_compression_is_a_reason(detector):
    latency = [1.20, 1.21, 1.19, 1.20, 1.22]  # unstructured sparsity: the same dense kernels
    r = detect(Curve(latency, [0.9, 0.9, 0.89, 0.7, 0.4], x_name="latency"), detector)
    assert not r.found
    assert "does not change steadily" in r.reason and "latency" in r.reason


def test_slope_ratio_ignores_a_dip_that_climbs_back():
    mean = knee_curve(0.7)
    mean[4] -= 0.03  # one bad level in the plateau, recovered at the next
    r = breakpoint_of(PARAMS, mean, detector="slope_ratio")
    assert abs(SPARSITY[r.index] - 0.7) <= 0.05 + 1e-9


def test_slope_ratio_with_a_gradual_fall_says_it_is_gradual():
    r = breakpoint_of([100, 90, 80, 70, 60], [0.9, 0.88, 0.86, 0.84, 0.82], detector="slope_ratio")
    assert not r.found and "gradual" in r.reason


def test_tolerance_with_the_whole_spread_stops_at_a_milder_level():
    mean = [0.90, 0.899, 0.895, 0.892, 0.85]
    std = [0.001, 0.001, 0.002, 0.004, 0.01]
    assert breakpoint_of([5, 4, 3, 2, 1], mean, std, "tolerance", {"delta": 0.01}).index == 3
    r = breakpoint_of([5, 4, 3, 2, 1], mean, std, "tolerance", {"delta": 0.01, "whole_spread": True})
    assert r.index == 2
    assert r.detection_y[3] < 0 <= r.detection_y[2]  # the gap to the tolerance
    assert r.threshold == 0.0


def test_tolerance_when_even_the_mildest_level_falls_out_of_it():
    r = breakpoint_of([5, 4, 3], [0.9, 0.8, 0.7], detector="tolerance")
    assert not r.found and "milder levels" in r.reason


# ---------------------------------------------------------------- results and configs


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_the_detection_curve_shares_the_accuracy_curves_x(detector):
    r = breakpoint_of(PARAMS, knee_curve(0.6), detector=detector)
    assert r.detection_x == list(PARAMS)
    assert len(r.detection_y) == len(PARAMS)
    assert r.detection_name == DETECTORS.get(detector).detection_name


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
@pytest.mark.parametrize("knee", [0.6, None])
def test_a_result_round_trips_through_strict_json(detector, knee):
    mean = knee_curve(knee) if knee is not None else np.full(len(PARAMS), 0.9)
    r = breakpoint_of(PARAMS, mean, detector=detector)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))  # NaN in the slope ratio -> null
    assert BreakpointResult.from_dict(d).to_dict() == d
    assert d["params"] == DETECTORS.get(detector).config().to_dict()


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_every_detector_config_round_trips_through_a_plain_dict(detector):
    cls = DETECTORS.get(detector).config
    cfg = cls()
    assert cls.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(("detector", "values", "field"), [
    ("kneedle", {"curve": "wavy"}, "curve"), ("kneedle", {"sensitivity": -1.0}, "sensitivity"),
    ("slope_ratio", {"k": 0.5}, "k"), ("slope_ratio", {"min_drop": 2.0}, "min_drop"),
    ("tolerance", {"delta": -0.1}, "delta"), ("tolerance", {"whole_spread": "yes"}, "whole_spread")])
def test_a_bad_setting_is_refused_naming_the_field(detector, values, field):
    with pytest.raises(ConfigError, match=field):
        detect(Curve([3, 2, 1], [0.9, 0.9, 0.5]), detector, values)


def test_another_detectors_config_is_refused_naming_both():
    with pytest.raises(ConfigError, match="slope_ratio detector takes a SlopeRatioConfig, got a ToleranceConfig"):
        detect(Curve([3, 2, 1], [0.9, 0.9, 0.5]), "slope_ratio", DETECTORS.get("tolerance").config())


def test_a_larger_k_asks_for_a_sharper_knee():
    mean = 0.9 - 0.3 * SPARSITY ** 2  # curving, with no corner
    assert breakpoint_of(PARAMS, mean, detector="slope_ratio", config={"k": 1.5}).found
    assert not breakpoint_of(PARAMS, mean, detector="slope_ratio", config={"k": 3.0}).found


# ---------------------------------------------------------------- curves from stored points


def measurement(accuracy: float, nonzero: int, **overrides) -> Measurement:
    """A Measurement with plausible values (nothing here was measured)."""
    values = dict(accuracy=accuracy, top5=0.99, loss=0.3, params_total=1000, params_nonzero=nonzero,
                  sparsity=1 - nonzero / 1000, bits=32.0, size_bytes=4 * nonzero + 125, size_fp32_bytes=4000,
                  file_bytes=4200, macs=50_000, latency_ms_b1=1.0, latency_p90_ms_b1=1.1, latency_ms_b32=None,
                  latency_p90_ms_b32=None, threads=2, backend="fp32 eager cpu", simulated=False)
    values.update(overrides)
    return Measurement(**values)


def prune_sweep(knee: float = 0.7, std: float = 0.002) -> list[dict]:
    """A stored prune sweep's points: sparsity 0 (baseline) to 0.95, accuracy_std from repeats."""
    acc = knee_curve(knee)
    return [make_point(measurement(float(a), int(round(1000 * (1 - s)))), family="prune", method="global_unstructured",
                       stage="baseline" if s == 0 else "variant", level=float(s), level_name="sparsity",
                       accuracy_std=std, accuracy_runs=[float(a) - std, float(a) + std]).to_dict()
            for s, a in zip(SPARSITY, acc)]


def test_a_curve_from_points_is_in_order_of_compression_whatever_order_they_were_logged_in():
    points = prune_sweep()
    curve = curve_from_points(points[::-1])
    assert curve.levels == list(SPARSITY)
    assert curve.x == [round(1000 * (1 - s)) for s in SPARSITY]
    assert curve.std == [0.002] * len(SPARSITY)
    assert curve.x_label == "remaining parameters" and curve.level_name == "sparsity"


def test_a_bits_sweep_puts_the_widest_level_first():
    points = [make_point(measurement(a, 1000, bits=float(b)), family="quantize", method="fake",
                         stage="baseline" if b == 32 else "variant", level=b, level_name="bits").to_dict()
              for b, a in [(2, 0.3), (32, 0.9), (4, 0.88), (8, 0.9)]]
    curve = curve_from_points(points, x="bits")
    assert curve.x == [32, 8, 4, 2] and curve.mean == [0.9, 0.9, 0.88, 0.3]


def test_points_sharing_a_level_are_averaged_with_their_spread():
    points = [make_point(measurement(a, n), family="prune", method="l1_unstructured", stage=stage, level=s,
                         level_name="sparsity").to_dict()
              for s, a, n, stage in [(0.0, 0.9, 1000, "baseline"), (0.5, 0.86, 500, "variant"),
                                     (0.5, 0.88, 500, "variant"), (0.9, 0.5, 100, "variant")]]
    curve = curve_from_points(points)
    assert curve.mean == pytest.approx([0.9, 0.87, 0.5])
    assert curve.std == pytest.approx([0.0, np.std([0.86, 0.88], ddof=1), 0.0])


def test_a_baseline_without_a_level_is_the_reference():
    points = [make_point(measurement(0.91, 1000), family="prune", method="iterative", stage="baseline").to_dict()]
    points += [make_point(measurement(a, n), family="prune", method="iterative", stage="step", level=s,
                          level_name="sparsity").to_dict() for s, a, n in [(0.5, 0.9, 500), (0.8, 0.6, 200)]]
    curve = curve_from_points(points)
    assert curve.levels == [None, 0.5, 0.8] and curve.x == [1000, 500, 200]


def test_a_curve_on_an_unmeasured_axis_is_refused_naming_the_field():
    points = [{**p, "latency_ms_b1": None} for p in prune_sweep()]
    with pytest.raises(UserError, match="latency_ms_b1 was not measured"):
        curve_from_points(points, x="latency")


def test_per_layer_sensitivity_points_are_not_taken_for_one_curve():
    points = [{**p, "layer": "conv1"} for p in prune_sweep()]
    with pytest.raises(UserError, match="sensitivity"):
        curve_from_points(points)


def test_a_curve_round_trips_through_a_plain_dict():
    curve = curve_from_points(prune_sweep())
    d = json.loads(json.dumps(curve.to_dict(), allow_nan=False))
    assert Curve.from_dict(d) == curve


# ---------------------------------------------------------------- seed 002, Table 3


def test_table3_gives_the_parameters_before_and_at_the_breakpoint():
    curve = curve_from_points(prune_sweep(knee=0.7))
    rows = {r["detector"]: r for r in table3(curve)}
    assert set(rows) == set(DETECTOR_NAMES)
    row = rows["slope_ratio"]
    assert row["accuracy_before"] == pytest.approx(0.9)
    assert row["params_before"] == 1000 and row["params_at_breakpoint"] == 300
    assert row["percentage_decrease"] == pytest.approx(70.0)
    assert row["compression_rate"] == pytest.approx(1000 / 300)
    assert row["accuracy_at_breakpoint"] == pytest.approx(knee_curve(0.7)[14])


def test_table3_without_a_breakpoint_leaves_the_breakpoint_columns_empty():
    curve = Curve(list(PARAMS), [0.9] * len(PARAMS), x_name="params")
    for row in table3(curve):
        assert not row["found"]
        assert row["params_before"] == PARAMS[0]
        assert row["params_at_breakpoint"] is None and row["compression_rate"] is None


def test_detect_all_runs_every_detector_with_its_own_settings():
    results = detect_all(Curve(list(PARAMS), list(knee_curve(0.7))), {"tolerance": {"delta": 0.2}})
    assert [r.detector for r in results] == list(DETECTOR_NAMES)
    assert results[2].params["delta"] == 0.2 and SPARSITY[results[2].index] > 0.75


# ---------------------------------------------------------------- the command


@pytest.fixture
def sweep_db(tmp_path):
    """A store file holding one finished prune sweep (made without training)."""
    from store import Store

    path = str(tmp_path / "runs.duckdb")
    with Store(path) as store:
        run_id = store.create_run("prune.global_unstructured", {"sparsities": list(SPARSITY)}, name="sweep",
                                  status="running")
        for p in prune_sweep(knee=0.6):
            store.add_point(run_id, p)
        store.end_run(run_id, "finished")
    return path, run_id


def run_command(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_the_command_prints_every_detectors_breakpoint_as_strict_json(sweep_db, capsys):
    path, run_id = sweep_db
    run_command(["breakpoint", run_id[:6], "--db", path, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["run_id"] == run_id and doc["x"] == "params"
    assert [r["detector"] for r in doc["results"]] == list(DETECTOR_NAMES)
    for r in doc["results"]:
        assert r["found"] and abs(r["level"] - 0.6) <= 0.05 + 1e-9
        assert r["detection_x"] == doc["curve"]["x"]
    assert doc["table3"][1]["compression_rate"] == pytest.approx(1000 / 400)


def test_the_command_in_text_names_the_level_and_the_compression_rate(sweep_db, capsys):
    path, run_id = sweep_db
    run_command(["breakpoint", run_id, "--db", path, "--detector", "slope_ratio", "--k", "2", "--x", "level"])
    out = capsys.readouterr().out
    assert "slope_ratio" in out and "sparsity 0.6" in out and "compression rate 2.5x" in out
    assert "kneedle" not in out


def test_an_option_the_chosen_detector_does_not_take_is_refused_by_name(sweep_db):
    path, run_id = sweep_db
    with pytest.raises(ConfigError, match="--k does not apply to --detector tolerance"):
        run_command(["breakpoint", run_id, "--db", path, "--detector", "tolerance", "--k", "2"])


def test_with_all_detectors_each_takes_its_own_options(sweep_db, capsys):
    path, run_id = sweep_db
    run_command(["breakpoint", run_id, "--db", path, "--k", "5", "--delta", "0.5", "--no-whole-spread", "--json"])
    params = {r["detector"]: r["params"] for r in json.loads(capsys.readouterr().out)["results"]}
    assert params["slope_ratio"]["k"] == 5 and params["tolerance"]["delta"] == 0.5
    assert params["kneedle"] == dataclasses.asdict(DETECTORS.get("kneedle").config())


def test_an_unknown_run_is_a_one_line_error(sweep_db):
    from store import RunNotFound

    path, _ = sweep_db
    with pytest.raises(RunNotFound, match="no run with id"):
        run_command(["breakpoint", "zzzz", "--db", path])
