"""Real int8: PTQ of the trained default CNN keeps accuracy and is measured on the int8 model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.core.errors import UserError
from engine.deploy.int8 import INT8_BACKENDS, EngineRunner, Int8ConversionError
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant import DynamicInt8Config, PTQInt8Config, quantize
from engine.methods.tasks import open_checkpoint


@pytest.fixture(scope="module")
def teacher(teacher_checkpoint):
    model, _, data = open_checkpoint(teacher_checkpoint)
    return model, data


@pytest.fixture(scope="module")
def small(digits_checkpoint):
    model, _, data = open_checkpoint(digits_checkpoint)
    return model, data


def test_int8_ptq_of_the_default_cnn_keeps_accuracy_within_one_point(teacher, ctx, latency_spy):
    model, data = teacher
    fp32, int8 = [p.to_dict() for p in quantize(model, data, PTQInt8Config(latency=True), ctx)]
    assert (fp32["stage"], fp32["level"]) == ("baseline", 32) and (int8["stage"], int8["level"]) == ("variant", 8)
    assert int8["level_name"] == "bits" and int8["artifact"] == ""  # in memory: nothing saved
    assert fp32["accuracy"] > 0.9
    assert abs(fp32["accuracy"] - int8["accuracy"]) <= 0.01
    # latency was timed on what ran: the float model for fp32, the int8 runner for int8
    assert len(latency_spy) == 2 and isinstance(latency_spy[1], EngineRunner)
    assert not any(isinstance(m, nn.Conv2d) for m in latency_spy[1].modules())
    assert int8["latency_ms_b1"] > 0 and int8["latency_ms_b32"] > 0
    assert int8["backend"] == "int8 torch.ao FX (x86) cpu" and not int8["simulated"]
    # file_bytes is the int8 checkpoint's weights file, about a quarter of the fp32 file
    assert int8["file_bytes"] < fp32["file_bytes"] / 3
    assert int8["bits"] == 8.0 and int8["int8_layers"] == 6 and int8["float_layers"] == []
    assert int8["size_bytes"] < fp32["size_bytes"] / 3.5
    assert int8["macs"] == fp32["macs"] and int8["params_total"] == fp32["params_total"]


def test_qnnpack_engine_converts_too(small, ctx):
    model, data = small
    before = torch.backends.quantized.engine
    try:
        fp32, int8 = quantize(model, data, PTQInt8Config(engine="qnnpack", calib_batches=4, latency=False), ctx)
        assert torch.backends.quantized.engine == "qnnpack"  # the runner set the engine it was made for
    finally:
        torch.backends.quantized.engine = before
    assert int8.measurement.backend == "int8 torch.ao FX (qnnpack) cpu"
    assert abs(fp32.accuracy - int8.accuracy) <= 0.02


def test_onednn_engine_converts_too(small, ctx):
    model, data = small
    fp32, int8 = quantize(model, data, PTQInt8Config(engine="onednn", calib_batches=4, latency=False), ctx)
    assert int8.measurement.backend == "int8 torch.ao FX (onednn) cpu"
    assert abs(fp32.accuracy - int8.accuracy) <= 0.02


def test_conv_and_relu_are_fused_after_batchnorm_is_folded(small):
    import torch.ao.nn.intrinsic.quantized as nniq

    model, data = small
    int8 = INT8_BACKENDS.get("fx").static(fold_batchnorm(model), [data.val.tensors()[0][:32]], "x86")
    fused = [m for m in int8.runner.modules() if isinstance(m, nniq.ConvReLU2d)]
    assert len(fused) == sum(isinstance(m, nn.Conv2d) for m in model.modules())


def test_weights_are_per_channel(teacher):
    model, data = teacher
    folded = fold_batchnorm(model)
    int8 = INT8_BACKENDS.get("fx").static(folded, [data.val.tensors()[0][:64]], "x86")
    convs = {n: m.out_channels for n, m in folded.named_modules() if isinstance(m, nn.Conv2d)}
    assert {n: int8.layer_groups[n] for n in convs} == convs


def test_folding_batchnorm_keeps_the_outputs_and_the_layer_names(teacher):
    model, data = teacher
    folded = fold_batchnorm(model)
    x = data.test.tensors()[0][:64]
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), folded(x), atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)] == \
           [n for n, m in folded.named_modules() if isinstance(m, nn.Conv2d)]


def test_dynamic_int8_quantizes_the_linear_layers_only(small, ctx):
    model, data = small
    fp32, dyn = [p.to_dict() for p in quantize(model, data, DynamicInt8Config(latency=False), ctx)]
    assert dyn["backend"] == "fp32 eager + dynamic int8 Linear (x86) cpu"
    assert dyn["int8_layers"] == 1 and dyn["float_layers"] == [n for n, m in model.named_modules()
                                                               if isinstance(m, nn.Conv2d)]
    assert 8 < dyn["bits"] < 32 and dyn["size_bytes"] < fp32["size_bytes"]
    assert abs(fp32["accuracy"] - dyn["accuracy"]) <= 0.02
    assert any(level == "info" and "stay in float" in m for level, m in ctx.events)  # expected, not a warning


def test_an_empty_calibration_set_is_a_clear_error(teacher):
    model, _ = teacher
    with pytest.raises(UserError, match="calibration set is empty"):
        INT8_BACKENDS.get("fx").static(fold_batchnorm(model), [], "x86")


class DataDependentHead(nn.Module):
    """Python control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        h = self.conv(x).relu().mean((2, 3))
        if h.sum() > 0:
            h = h * 2
        return self.fc(h)


def test_a_model_the_backend_cannot_convert_gets_a_clear_error(digits, ctx):
    with pytest.raises(Int8ConversionError, match="cannot trace DataDependentHead.*use dynamic_int8"):
        quantize(DataDependentHead(), digits, PTQInt8Config(latency=False, calib_batches=1), ctx)


def test_or_a_recorded_fallback_to_dynamic_int8(digits, ctx):
    cfg = PTQInt8Config(latency=False, calib_batches=1, fallback="dynamic_int8")
    fp32, point = [p.to_dict() for p in quantize(DataDependentHead(), digits, cfg, ctx)]
    assert point["backend"] == "fp32 eager + dynamic int8 Linear (x86) (fallback: static int8 failed) cpu"
    assert "cannot trace" in point["params"]["fallback_reason"]
    assert point["float_layers"] == ["conv"] and point["int8_layers"] == 1
    warnings = [m for level, m in ctx.events if level == "warning"]
    assert any("falling back to dynamic int8" in m for m in warnings)
    assert any("stay in float: conv" in m for m in warnings)
