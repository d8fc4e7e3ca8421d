"""Mixed precision (greedy and sensitivity-guided paths), the prefix activation cache, and per-layer
sensitivity, on the small digits model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.cli.main import main
from engine.core.context import RunContext
from engine.deploy.measure import prunable_weights
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant import MixedPrecisionConfig, SensitivityConfig, quantize
from engine.methods.quant.common import LayerWeights, Output, evaluate_tensors
from engine.methods.quant.mixed import (
    greedy_choice,
    measured_indices,
    mixed_precision,
    next_lower,
    sensitivity_order,
    validation_subset,
)
from engine.methods.quant.prefix_cache import CandidateEvaluator, graph_cuts
from engine.methods.tasks import open_checkpoint
from engine.model.zoo import build_model

QUANTIZER = {"symmetric": True, "per_channel": True, "observer": "minmax", "percentile": 99.99}
LADDER = (8, 4, 2)
MAX_DROP = 0.05


class RecordingContext(RunContext):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []

    def log_event(self, message: str, level: str = "info") -> None:
        self.events.append((level, message))


@pytest.fixture(scope="module")
def digits(digits_checkpoint):
    model, _, data = open_checkpoint(digits_checkpoint)
    return model, data


def run(digits, search: str, *, cached: bool = True, **settings):
    model, data = digits
    ctx = RecordingContext()
    cfg = MixedPrecisionConfig(search=search, latency=False, **{"bits": LADDER, "max_accuracy_drop": MAX_DROP,
                                                                "val_samples": 120, "measure_every": 2, **settings})
    points = mixed_precision(model, data, cfg, ctx, Output(), cached=cached)
    return [p.to_dict() for p in points], ctx


@pytest.fixture(scope="module")
def greedy(digits):
    return run(digits, "greedy")


@pytest.fixture(scope="module")
def sensitivity(digits):
    return run(digits, "sensitivity")


# ---------------------------------------------------------------- both paths


@pytest.mark.parametrize("search", ["greedy", "sensitivity"])
def test_a_path_is_monotone_in_average_bits_and_size(search, greedy, sensitivity):
    points, _ = greedy if search == "greedy" else sensitivity
    assert len(points) >= 3
    avg = [p["level"] for p in points]
    assert all(a > b for a, b in zip(avg, avg[1:]))
    assert all(p["stage"] == "step" and p["level_name"] == "average_bits" for p in points)
    assert [p["bits"] for p in points] == pytest.approx(avg)  # measure's bits is the same weighted mean
    for key in ("size_bytes", "file_bytes"):
        sizes = [p[key] for p in points]
        assert all(a > b for a, b in zip(sizes, sizes[1:])), key


@pytest.mark.parametrize("search", ["greedy", "sensitivity"])
def test_each_point_records_its_search_its_assignment_and_the_layers_lowered_since_the_last(
        search, greedy, sensitivity):
    points, _ = greedy if search == "greedy" else sensitivity
    assert set(points[0]["bits_per_layer"].values()) == {8} and len(points[0]["bits_per_layer"]) == 5
    for before, after in zip(points, points[1:]):
        a, b = before["bits_per_layer"], after["bits_per_layer"]
        rungs = {k: LADDER.index(b[k]) - LADDER.index(a[k]) for k in a}
        assert all(r >= 0 for r in rungs.values())
        assert sorted(after["lowered"]) == sorted(k for k, r in rungs.items() for _ in range(r))
        assert after["step"] - before["step"] == sum(rungs.values())
    for p in points:
        assert p["search"] == search and p["val_samples"] == 120 and p["simulated"]
        assert "mixed-precision" in p["backend"]
    evaluations = [p["evaluations"] for p in points]
    assert evaluations == sorted(evaluations) and evaluations[0] == 1


@pytest.mark.parametrize("search", ["greedy", "sensitivity"])
def test_every_reported_point_is_what_an_independent_evaluation_of_its_assignment_measures(
        search, digits, greedy, sensitivity):
    points, _ = greedy if search == "greedy" else sensitivity
    model, data = digits
    folded = fold_batchnorm(model)
    weights = LayerWeights(folded, QUANTIZER)
    x_val, y_val = validation_subset(data, 120, seed=0)
    for p in points:
        weights.apply(p["bits_per_layer"])
        test = evaluate_tensors(folded, *data.test.tensors())
        val = evaluate_tensors(folded, x_val, y_val)
        assert p["accuracy"] == test["accuracy"] and p["val_accuracy"] == val["accuracy"]
        assert p["val_loss"] == pytest.approx(val["loss"], rel=1e-6)


@pytest.mark.parametrize("search", ["greedy", "sensitivity"])
def test_a_path_stops_at_the_accuracy_drop_it_was_given(search, greedy, sensitivity):
    points, ctx = greedy if search == "greedy" else sensitivity
    start = points[0]["val_accuracy"]
    assert all(start - p["val_accuracy"] <= MAX_DROP for p in points)
    assert any(m.startswith("stopped:") for _, m in ctx.events)


def test_the_greedy_path_is_the_same_with_and_without_the_prefix_cache(digits, greedy):
    cached, _ = greedy
    plain, _ = run(digits, "greedy", cached=False)
    assert [p["lowered"] for p in cached] == [p["lowered"] for p in plain]  # the same layer at each step
    assert [p["val_accuracy"] for p in cached] == [p["val_accuracy"] for p in plain]
    assert [p["val_loss"] for p in cached] == [p["val_loss"] for p in plain]
    # the cache ran most candidates from a layer's input, not from the image
    assert cached[-1]["full_evaluations"] < plain[-1]["full_evaluations"] == plain[-1]["evaluations"]


def test_the_sensitivity_path_goes_as_low_as_greedy_within_half_a_point_of_accuracy(greedy, sensitivity):
    # the test: at the same --max-drop, the same or a lower average width, and a final accuracy
    # within 0.5 point of greedy's
    assert sensitivity[0][-1]["level"] <= greedy[0][-1]["level"] + 1e-9
    assert sensitivity[0][-1]["accuracy"] >= greedy[0][-1]["accuracy"] - 0.005
    assert sensitivity[0][-1]["evaluations"] < greedy[0][-1]["evaluations"]


@pytest.mark.parametrize("search", ["greedy", "sensitivity"])
def test_a_path_stops_at_a_target_average_width(search, digits):
    points, _ = run(digits, search, bits=(8, 4), target_bits=7.0, max_accuracy_drop=1.0, val_samples=60)
    assert points[-1]["level"] <= 7.0 < points[-2]["level"]


def test_search_and_its_settings_are_generated_options(capsys):
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--search {sensitivity,greedy}", "--val-samples", "--measure-every"):
        assert flag in out, flag
    assert MixedPrecisionConfig().search == "sensitivity"


# ---------------------------------------------------------------- the search logic, given evaluations


def test_greedy_keeps_the_most_accurate_lowering_then_the_lowest_loss_then_the_most_bits_saved():
    bits, sizes = {"a": 8, "b": 8, "c": 8}, {"a": 10, "b": 100, "c": 100}
    tried = {("a", 4): {"accuracy": 0.9, "loss": 0.3}, ("b", 4): {"accuracy": 0.9, "loss": 0.3},
             ("c", 4): {"accuracy": 0.8, "loss": 0.1}}
    assert greedy_choice(bits, sizes, tried) == ("b", 4)  # a tie on accuracy and loss: b saves more bits
    tried[("a", 4)] = {"accuracy": 0.9, "loss": 0.2}
    assert greedy_choice(bits, sizes, tried) == ("a", 4)


def test_the_sensitivity_order_lowers_the_cheapest_predicted_loss_per_bit_first():
    start, sizes = {"small": 8, "big": 8}, {"small": 10, "big": 1000}
    start_val = {"accuracy": 0.9, "loss": 0.30}
    alone = {("small", 4): {"accuracy": 0.89, "loss": 0.31},  # loss +0.01 over 40 bits
             ("big", 4): {"accuracy": 0.85, "loss": 0.35},  # +0.05 over 4000 bits: cheaper per bit
             ("small", 2): {"accuracy": 0.88, "loss": 0.32},  # then +0.01 over 20 bits
             ("big", 2): {"accuracy": 0.1, "loss": 2.0}}  # then +1.65 over 2000 bits
    assert sensitivity_order(start, [8, 4, 2], sizes, start_val, alone) == [
        ("big", 4), ("small", 4), ("small", 2), ("big", 2)]
    assert sensitivity_order(start, [8, 4, 2], sizes, start_val, alone, frozen=frozenset({"big"})) == [
        ("small", 4), ("small", 2)]


def test_the_path_is_measured_every_few_steps_and_bisected_where_it_breaks_the_drop():
    asked: list[int] = []

    def within(i: int) -> bool:
        asked.append(i)
        return i <= 9

    assert list(measured_indices(20, 4, within)) == [0, 4, 8, 9]
    assert asked == [4, 8, 12, 10, 9]
    assert list(measured_indices(10, 4, lambda i: True)) == [0, 4, 8, 10]  # the last step always
    assert list(measured_indices(10, 4, lambda i: i < 4)) == [0, 3]
    assert list(measured_indices(10, 4, lambda i: i < 1)) == [0]


def test_the_ladder_steps_down_one_rung_at_a_time():
    assert next_lower([8, 6, 4, 2], 8) == 6 and next_lower([8, 6, 4, 2], 5) == 4 and next_lower([8, 6, 4, 2], 2) is None


# ---------------------------------------------------------------- the prefix activation cache


def changed_one_at_a_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cached: bool):
    torch.manual_seed(0)
    folded = fold_batchnorm(model)
    weights = LayerWeights(folded, QUANTIZER)
    evaluator = CandidateEvaluator(folded, weights, x, y, cached=cached)
    base = {n: 8 for n in weights.layers}
    changes = [(n, b) for n in weights.layers for b in (4, 2)]
    return evaluator.evaluate_changes(base, changes), evaluator


@pytest.mark.parametrize("arch", ["cnn_s", "resnet20"])
def test_the_cache_scores_exactly_what_a_full_forward_does_also_across_skip_connections(arch):
    torch.manual_seed(0)
    model = build_model(arch, 10, 1, 8).eval()
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))
    cached, evaluator = changed_one_at_a_time(model, x, y, cached=True)
    plain, _ = changed_one_at_a_time(model, x, y, cached=False)
    assert cached == plain
    assert evaluator.cached_layers == [n for n, _ in prunable_weights(evaluator.model)]  # every layer has a cut
    assert evaluator.full_forwards == 0


def test_a_residual_cut_keeps_the_skip_connection_alive():
    model = fold_batchnorm(build_model("resnet20", 10, 1, 8))
    live = {c.layer: [n.name for n in c.live] for c in graph_cuts(model, [n for n, _ in prunable_weights(model)])}
    assert len(live["layer1.0.conv1"]) == 1  # the block's input only
    assert len(live["layer1.0.conv2"]) == 2  # conv2's input and the block's input the shortcut adds


class Branchy(nn.Module):
    """A forward fx cannot trace (it branches on a value)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = self.a(x)
        return self.b(h if h.sum() > 0 else -h)


def test_a_model_fx_cannot_trace_falls_back_to_full_forwards():
    torch.manual_seed(0)
    model, x, y = Branchy(), torch.randn(16, 4), torch.randint(0, 3, (16,))
    cached, evaluator = changed_one_at_a_time(model, x, y, cached=True)
    plain, _ = changed_one_at_a_time(model, x, y, cached=False)
    assert cached == plain and evaluator.cuts == [] and evaluator.full_forwards == len(cached)


# ---------------------------------------------------------------- per-layer sensitivity


def test_sensitivity_quantizes_one_layer_at_a_time(digits, ctx):
    model, data = digits
    points = [p.to_dict() for p in quantize(model, data, SensitivityConfig(bits=(2,), latency=False), ctx)]
    reference, rows = points[0], points[1:]
    assert reference["stage"] == "baseline" and reference["bits"] == 32 and reference["level"] == 32
    layers = [p["layer"] for p in rows]
    assert len(layers) == 5 and len(set(layers)) == 5
    assert all(p["stage"] == "variant" and p["level"] == 2 and p["level_name"] == "bits" for p in rows)
    assert all(p["artifact"] == "" for p in points)  # sensitivity saves nothing
    for p in rows:
        assert 2 < p["bits"] < 32 and p["size_bytes"] < reference["size_bytes"]
        assert p["accuracy_drop"] == pytest.approx(reference["accuracy"] - p["accuracy"])
    assert len({p["accuracy_drop"] for p in rows}) > 1  # the layers differ in what 2 bits costs them
