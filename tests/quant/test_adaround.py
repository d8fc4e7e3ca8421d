"""AdaRound: the rectified sigmoid, its regulariser and schedule by hand; learned codes sit one step
from nearest at most and lower a layer's output error; the run saves packed checkpoints that reload
to the accuracy it measured."""

from __future__ import annotations

import json
import math

import pytest
import torch

from engine.cli.main import main
from engine.core.context import RunContext
from engine.core.errors import Cancelled, ConfigError
from engine.deploy import qmaths as maths
from engine.deploy.formats import load_variant
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant import quantize
from engine.methods.quant.adaround import (
    AdaRoundConfig,
    beta_at,
    capture,
    execution_order,
    following_activations,
    initial_v,
    layer_function,
    optimize_rounding,
    output_error,
    rectified_sigmoid,
    rounding_regularizer,
)
from engine.methods.quant.common import LayerWeights
from engine.methods.tasks import open_checkpoint, run_task
from engine.model.data import calibration_batches

QUANTIZER = {"symmetric": True, "per_channel": True, "observer": "minmax", "percentile": 99.99}


# ---------------------------------------------------------------- the maths by hand


def test_rectified_sigmoid_stretches_the_sigmoid_and_clamps_it_to_0_and_1():
    v = torch.tensor([0.0, math.log(3), -math.log(3), 10.0, -10.0])
    # 1.2 * sigmoid(v) - 0.1: sigmoid(log 3) = 0.75 -> 0.8; sigmoid(-log 3) = 0.25 -> 0.2; the tails clamp
    assert torch.allclose(rectified_sigmoid(v), torch.tensor([0.5, 0.8, 0.2, 1.0, 0.0]), atol=1e-6)


def test_initial_v_makes_h_equal_to_the_fractional_part():
    rest = torch.tensor([0.0, 0.3, 0.5, 0.999])
    assert torch.allclose(rectified_sigmoid(initial_v(rest)), rest, atol=1e-6)


def test_the_regulariser_is_zero_at_0_and_1_and_largest_at_one_half():
    h = torch.tensor([0.0, 1.0, 0.5, 0.75])
    # 1 - |2h - 1|^2 = 0, 0, 1, 0.75
    assert float(rounding_regularizer(h, 2.0)) == pytest.approx(1.75)
    assert float(rounding_regularizer(torch.tensor([0.75]), 20.0)) == pytest.approx(1 - 0.5**20)


def test_beta_is_off_during_the_warm_start_then_decays_from_20_to_2_on_a_cosine():
    assert beta_at(0, 100, 0.2, 20, 2) is None and beta_at(19, 100, 0.2, 20, 2) is None
    assert beta_at(20, 100, 0.2, 20, 2) == pytest.approx(20)
    assert beta_at(60, 100, 0.2, 20, 2) == pytest.approx(11)  # halfway: 2 + 9 * (1 + cos(pi / 2))
    assert beta_at(99, 100, 0.2, 20, 2) == pytest.approx(2 + 9 * (1 + math.cos(79 / 80 * math.pi)))


# ---------------------------------------------------------------- the activation in the loss


class _Block(torch.nn.Module):
    """conv -> BN -> ReLU, then conv -> BN -> (+ input) -> ReLU: only the first conv's output meets the ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.BatchNorm2d(3)
        self.conv2, self.bn2 = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.BatchNorm2d(3)
        self.relu = torch.nn.ReLU(inplace=True)
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 4), torch.nn.ReLU6())

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.head(self.relu(self.bn2(self.conv2(out)) + x))


def test_the_activation_that_directly_follows_a_layer_is_found_through_a_folded_batchnorm():
    model = fold_batchnorm(_Block())
    layers = {"conv1": model.conv1, "conv2": model.conv2, "head.1": model.head[1]}
    found = following_activations(model, layers, torch.randn(2, 3, 4, 4))
    assert set(found) == {"conv1", "head.1"}  # conv2's output goes to the residual add, not to a ReLU
    t = torch.tensor([-7.0, 3.0, 8.0])
    assert found["conv1"](t).tolist() == [0.0, 3.0, 8.0] and found["head.1"](t).tolist() == [0.0, 3.0, 6.0]
    assert t.tolist() == [-7.0, 3.0, 8.0]  # out of place, though the model's ReLU is in place
    x = torch.randn(5, 3, 4, 4)
    assert torch.equal(layer_function(model.conv1, found["conv1"])(x, model.conv1.weight), torch.relu(model.conv1(x)))


# ---------------------------------------------------------------- one layer


@pytest.fixture(scope="module")
def digits_model(digits_checkpoint):
    model, _, data = open_checkpoint(digits_checkpoint)
    return fold_batchnorm(model), data


@pytest.fixture(scope="module")
def one_layer(digits_model):
    """A middle conv of the digits model at 3 bits, AdaRounded on its float calibration inputs."""
    model, data = digits_model
    images = torch.cat(calibration_batches(data, 4, 32, seed=0))
    weights = LayerWeights(model, QUANTIZER)
    name = execution_order(model, weights.layers, images[:1])[1]
    layer = weights.layers[name]
    inputs, targets = capture(model, layer, images, "input"), capture(model, layer, images, "output")
    nearest = weights.codes(name, 3)
    rounding = optimize_rounding(weights.float[name], nearest, maths.int_range(3, True)[1], layer_function(layer),
                                 inputs, targets, iterations=300, seed=0)
    return rounding, nearest, layer, inputs, targets


def test_adaround_codes_are_floor_or_ceil_of_the_scaled_weight(one_layer):
    rounding, nearest, layer, *_ = one_layer
    scaled = layer.weight.detach() * (1.0 / nearest.scale.reshape(-1, 1, 1, 1))
    codes = rounding.codes.codes
    assert ((codes == torch.floor(scaled)) | (codes == torch.ceil(scaled))).all()
    assert (codes - nearest.codes).abs().max() <= 1
    assert rounding.flipped == int((codes != nearest.codes).sum()) > 0  # it did change something
    assert (rounding.codes.scale is nearest.scale) and rounding.codes.bits == 3


def test_adaround_lowers_the_layer_output_error_and_undoing_its_flips_raises_it(one_layer):
    rounding, nearest, layer, inputs, targets = one_layer
    fn = layer_function(layer)

    def error(codes: torch.Tensor) -> float:
        return output_error(fn, maths.dequantize(codes, nearest.scale, nearest.zero_point, nearest.axis), inputs,
                            targets)

    chosen = rounding.codes.codes
    assert rounding.error_adaround == pytest.approx(error(chosen))
    assert rounding.error_nearest == pytest.approx(error(nearest.codes))
    assert rounding.error_adaround < 0.9 * rounding.error_nearest
    # undo a random half of the flips (three draws): each time the error goes up
    flipped = (chosen != nearest.codes).flatten().nonzero().flatten()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        half = flipped[torch.randperm(len(flipped), generator=g)[: len(flipped) // 2]]
        undone = chosen.clone().flatten()
        undone[half] = nearest.codes.flatten()[half]
        assert error(undone.reshape(chosen.shape)) > rounding.error_adaround


# ---------------------------------------------------------------- the method


@pytest.fixture(scope="module")
def adaround_run(digits_checkpoint, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("adaround") / "run")
    points = run_task("quantize.adaround", {"checkpoint": digits_checkpoint, "bits": [3], "iterations": 100,
                                            "calib_batches": 4, "latency": False, "out": out},
                      RunContext())
    return points, out


def test_the_run_records_the_float_baseline_and_one_simulated_adaround_variant(adaround_run, digits_checkpoint):
    points, out = adaround_run
    base, three = [p.to_dict() for p in points]
    assert (base["stage"], base["level"], base["artifact"]) == ("baseline", 32, "")
    assert (three["stage"], three["level"], three["level_name"], three["method"]) == ("variant", 3, "bits",
                                                                                      "adaround")
    assert three["simulated"] and "simulated int3 AdaRound weights" in three["backend"]
    assert three["params"]["iterations"] == 100 and three["rounding"] == "adaround"
    assert three["flipped_weights"] == sum(v["flipped"] for v in three["layers"].values()) > 0
    assert three["adaround_seconds"] > 0
    assert all(v["error_adaround"] <= v["error_nearest"] for v in three["layers"].values())


def test_the_packed_checkpoint_reloads_to_the_measured_accuracy_with_codes_one_step_from_nearest(
        adaround_run, digits_model):
    points, _ = adaround_run
    three = points[1].to_dict()
    again = run_task("measure", {"checkpoint": three["artifact"], "latency": False},
                     RunContext())[0].to_dict()
    assert again["accuracy"] == three["accuracy"] and again["loss"] == three["loss"]
    assert again["file_bytes"] == three["file_bytes"] and again["simulated"]
    reloaded, form, meta = load_variant(three["artifact"])
    assert meta.weights_format == "packed" and meta.lineage[-1]["method"] == "adaround"
    folded, _ = digits_model
    nearest_weights = LayerWeights(folded, QUANTIZER)
    steps = []
    for name, layer in LayerWeights(reloaded, QUANTIZER).layers.items():
        nearest = nearest_weights.codes(name, 3)
        step = (layer.weight.detach() - nearest.dequantize()) / nearest.scale.reshape(
            [-1] + [1] * (layer.weight.dim() - 1))
        assert torch.allclose(step, step.round(), atol=1e-4)  # the same grid as nearest
        steps.append(step.round().flatten())
    steps = torch.cat(steps)
    assert steps.abs().max() == 1 and int((steps != 0).sum()) == three["flipped_weights"]


def test_a_run_stops_when_cancelled(digits_model, cancelling_ctx):
    model, data = digits_model
    ctx = cancelling_ctx(1)  # cancelled once the baseline is logged
    with pytest.raises(Cancelled):
        quantize(model, data, AdaRoundConfig(bits=(3,), iterations=10, calib_batches=1, latency=False), ctx)
    assert len(ctx.points) == 1


def test_the_config_round_trips_and_refuses_bad_values():
    cfg = AdaRoundConfig(checkpoint="ck", bits=(2, 4), iterations=50, reg_weight=0.1, beta_start=10,
                         beta_end=3, warm_start=0.1, lr=0.01, granularity="per_tensor", seed=4)
    assert AdaRoundConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match=r"bits must be a whole number of bits in \[2, 8\], got 16"):
        AdaRoundConfig(bits=(4, 16))
    with pytest.raises(ConfigError, match="beta_end must not exceed beta_start"):
        AdaRoundConfig(beta_start=2, beta_end=20)
    with pytest.raises(ConfigError, match="warm_start"):
        AdaRoundConfig(warm_start=1.0)


def test_the_cli_runs_adaround_on_digits(digits_checkpoint, capsys):
    code = main(["quantize", "--checkpoint", digits_checkpoint, "--method", "adaround", "--bits", "4",
                 "--iterations", "20", "--calib-batches", "1", "--granularity", "per_tensor", "--json",
                 "--no-latency", "--no-save"])
    assert code == 0
    points = json.loads(capsys.readouterr().out)
    assert [(p["stage"], p["level"]) for p in points] == [("baseline", 32), ("variant", 4)]
    assert points[1]["params"]["granularity"] == "per_tensor" and points[1]["scheme"] == "per-tensor symmetric minmax"
