"""The simulated sweep: every width of seed 003 is a point with its accuracy, bits and size, and says
that it is simulated; the float model's latency is timed once and carried by every point."""

from __future__ import annotations

import pytest
import torch

from engine.core.errors import Cancelled
from engine.deploy.measure import measure
from engine.deploy.qmaths import SWEEP_BITS
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant import FakeQuantConfig, quantize
from engine.methods.tasks import open_checkpoint


@pytest.fixture(scope="module")
def teacher(teacher_checkpoint):
    model, _, data = open_checkpoint(teacher_checkpoint)
    return model, data


@pytest.fixture(scope="module")
def small(digits_checkpoint):
    model, _, data = open_checkpoint(digits_checkpoint)
    return model, data


def test_the_standard_sweep_gives_one_point_per_width(small, ctx, latency_spy):
    model, data = small
    points = [p.to_dict() for p in quantize(model, data, FakeQuantConfig(), ctx)]
    assert [p["bits"] for p in points] == list(SWEEP_BITS) == [p["level"] for p in points]
    assert [p["stage"] for p in points] == ["variant"] * (len(SWEEP_BITS) - 1) + ["baseline"]
    assert all(list(p["params"]["bits"]) == list(SWEEP_BITS) and p["level_name"] == "bits" for p in points)
    # latency: timed once, on the float model that runs, and shared by every point
    assert len(latency_spy) == 1 and type(latency_spy[0]) is type(model)
    assert len({p["latency_ms_b1"] for p in points}) == 1 and points[0]["latency_ms_b1"] > 0
    for p in points[:-1]:
        bits = int(p["level"])
        assert p["simulated"] and p["backend"] == f"fp32 eager (simulated int{bits} weights; no low-bit kernel ran) cpu"
    assert not points[-1]["simulated"] and points[-1]["backend"] == "fp32 eager cpu"
    for key in ("size_bytes", "file_bytes"):  # the packed file grows with the width, as the estimate does
        sizes = [p[key] for p in points]
        assert all(a < b for a, b in zip(sizes, sizes[1:])), key


def test_on_the_default_teacher_8_bits_is_lossless_and_2_bits_is_not(teacher, ctx):
    model, data = teacher
    points = quantize(model, data, FakeQuantConfig(bits=(2, 8, 16, 32), latency=False), ctx)
    by_bits = {p.level: p.to_dict() for p in points}
    fp32 = measure(fold_batchnorm(model), data, latency=False)
    assert by_bits[32]["accuracy"] == fp32.accuracy and by_bits[32]["size_bytes"] == fp32.size_bytes
    assert abs(by_bits[8]["accuracy"] - fp32.accuracy) <= 0.01
    assert by_bits[16]["accuracy"] == pytest.approx(fp32.accuracy, abs=0.002)
    assert by_bits[2]["accuracy"] < fp32.accuracy - 0.05  # 2 bits really hurts this model
    # 8-bit per-channel weights: n bytes plus 8 bytes of qparams per output channel, biases in fp32
    assert by_bits[8]["size_bytes"] < fp32.size_bytes / 3.8


def test_the_model_is_left_in_float_after_the_sweep(small, ctx):
    model, data = small
    before = [p.clone() for p in model.parameters()]
    quantize(model, data, FakeQuantConfig(bits=(2,), latency=False), ctx)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_activation_quantization_is_optional_and_costs_accuracy_at_low_width(small, ctx):
    model, data = small
    cfg = dict(bits=(8,), latency=False, calib_batches=2)
    weights_only = quantize(model, data, FakeQuantConfig(**cfg), ctx)[0].to_dict()
    a8 = quantize(model, data, FakeQuantConfig(**cfg, activation_bits=8), ctx)[0].to_dict()
    a2 = quantize(model, data, FakeQuantConfig(**cfg, activation_bits=2), ctx)[0].to_dict()
    assert a8["backend"] == "fp32 eager (simulated int8 weights + int8 activations; no low-bit kernel ran) cpu"
    assert abs(a8["accuracy"] - weights_only["accuracy"]) <= 0.02
    assert a2["accuracy"] < weights_only["accuracy"] - 0.05


def test_asymmetric_per_tensor_and_other_observers_run(small, ctx):
    model, data = small
    for observer in ("percentile", "mse"):
        p = quantize(model, data, FakeQuantConfig(bits=(4,), granularity="per_tensor", symmetric=False,
                                                  observer=observer, latency=False), ctx)[0]
        assert p.extra["scheme"].startswith("per-tensor asymmetric")
        assert p.accuracy > 0.5
    # one scale per tensor instead of one per channel: fewer qparam bytes, in the estimate and in the file
    per_channel = quantize(model, data, FakeQuantConfig(bits=(4,), latency=False), ctx)[0]
    assert p.measurement.size_bytes < per_channel.measurement.size_bytes
    assert p.measurement.file_bytes < per_channel.measurement.file_bytes


def test_a_sweep_stops_when_cancelled(small, cancelling_ctx):
    model, data = small
    ctx = cancelling_ctx(2)
    with pytest.raises(Cancelled):
        quantize(model, data, FakeQuantConfig(latency=False), ctx)
    assert len(ctx.points) == 2
