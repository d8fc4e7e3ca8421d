"""The PT2E int8 backend (engine/deploy/pt2e.py) on the digits CNN: conversion, layers, checkpoint, errors.

Every test uses `pt2e_eager` (the uncompiled program: the same export, quantizer, calibration and convert as
`pt2e`); the compiled `pt2e` costs about 10 s of Inductor compile per batch shape, so it is not run here
(bench/quant_methods/backends.py runs and times it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from engine.core.context import RunContext
from engine.deploy.formats import load_variant
from engine.deploy.int8 import INT8_BACKENDS, Int8ConversionError
from engine.deploy.measure import ModelForm, measure, prunable_weights
from engine.deploy.onnx import int8_mode
from engine.deploy.pt2e import shared_modules
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant import PTQInt8Config
from engine.methods.tasks import open_checkpoint, run_task
from engine.model.checkpoint import WEIGHTS, read_meta
from engine.model.data import calibration_batches

CALIB = 4  # batches of 32, as the saved run below uses


@pytest.fixture(scope="module")
def digits(digits_checkpoint):
    model, _, data = open_checkpoint(digits_checkpoint)
    folded = fold_batchnorm(model)
    return folded, data, calibration_batches(data, CALIB, 32, PTQInt8Config().seed)


@pytest.fixture(scope="module")
def pt2e(digits):
    folded, _, batches = digits
    return INT8_BACKENDS.get("pt2e_eager").static(folded, batches, "x86")


def accuracy(folded, data, int8) -> float:
    form = ModelForm(runner=int8.runner, backend=int8.backend, weight_bits=int8.weight_bits,
                     quant_groups=int8.layer_groups, artifact=int8.artifact)
    return measure(folded, data, form, latency=False).accuracy


def test_pt2e_int8_keeps_the_accuracy_of_fp32_and_of_fx(digits, pt2e):
    folded, data, batches = digits
    fx = INT8_BACKENDS.get("fx").static(folded, batches, "x86")
    fp32_acc = measure(folded, data, latency=False).accuracy
    pt2e_acc = accuracy(folded, data, pt2e)
    assert fp32_acc > 0.5  # a trained model, so the comparison means something
    assert abs(pt2e_acc - fp32_acc) <= 0.02 and abs(pt2e_acc - accuracy(folded, data, fx)) <= 0.02
    # the program quantizes activations and holds int8 weights: int8 numerics, not the float model
    ops = {str(n.target) for n in pt2e.runner.program.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in op for op in ops) and any("dequantize_per_channel" in op for op in ops)
    x = data.test.tensors()[0][:64]
    with torch.no_grad():
        assert not torch.equal(pt2e.runner(x), folded(x))
    assert "uncompiled" in pt2e.backend and "no speed-up" in pt2e.backend
    assert pt2e.extra["conversion_s"] > 0 and "compile_s" not in pt2e.extra


def test_every_conv_and_linear_runs_int8_with_one_scale_per_output_channel(digits, pt2e):
    folded, _, _ = digits
    expected = {name: layer.weight.shape[0] for name, layer in prunable_weights(folded)}
    assert pt2e.layer_groups == expected and pt2e.float_layers == []
    assert pt2e.weight_bits == {name: 8 for name in expected}


def test_keep_float_leaves_the_named_layer_in_float(digits):
    folded, _, batches = digits
    int8 = INT8_BACKENDS.get("pt2e_eager").static(folded, batches, "x86", keep_float=["fc"])
    assert int8.float_layers == ["fc"] and "fc" not in int8.layer_groups
    assert len(int8.layer_groups) == len(prunable_weights(folded)) - 1
    assert "1 layer(s) kept float" in int8.backend


def test_the_checkpoint_reloads_to_identical_predictions(digits, pt2e, digits_checkpoint, tmp_path):
    _, data, _ = digits
    out = str(tmp_path / "pt2e")
    _, point = run_task("quantize.ptq_int8", {"checkpoint": digits_checkpoint, "backend": "pt2e_eager",
                                              "calib_batches": CALIB, "latency": False, "out": out}, RunContext())
    meta = read_meta(out)
    assert meta.weights_format == "int8" and meta.quant["backend"] == "pt2e_eager"
    assert point.extra["conversion_s"] > 0
    # what is stored: the folded float weights and the observers' calibration, nothing else, and file_bytes says so
    stored = load_file(Path(out) / WEIGHTS)
    assert all(k.startswith(("float.", "observer.")) for k in stored)
    assert stored["float.fc.weight"].dtype == torch.float32
    assert point.measurement.file_bytes == (Path(out) / WEIGHTS).stat().st_size
    model, form, _ = load_variant(out)
    x = data.test.tensors()[0]
    with torch.no_grad():
        assert torch.equal(form.runner(x), pt2e.runner(x))  # the same calibration batches as the fixture
    assert form.quant_groups == pt2e.layer_groups and form.backend == point.measurement.backend.removesuffix(" cpu")


class Gated(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.export cannot trace it
            return x * 2
        return x


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.gate, self.fc = nn.Conv2d(1, 4, 3), Gated(), nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.gate(self.conv(x)), 1))


def test_an_untraceable_model_gets_an_error_naming_its_layer():
    with pytest.raises(Int8ConversionError, match=r"cannot export Untraceable .*in gate \(Gated\).*x.sum\(\) > 0"):
        INT8_BACKENDS.get("pt2e_eager").static(Untraceable().eval(), [torch.randn(4, 1, 8, 8)], "x86")


class SharedRelu(nn.Module):
    """A residual block calling one ReLU module twice, as the ResNet BasicBlock does (the resnet18 failure)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        y = self.relu(self.conv1(x))
        return self.fc(torch.flatten(self.relu(self.conv2(y) + y), 1))


def test_a_relu_module_called_twice_in_a_residual_block_converts():
    model = SharedRelu().eval()
    # non-strict export named both calls alike and X86InductorQuantizer failed; the error would name the module
    assert shared_modules(model, torch.randn(1, 1, 8, 8)) == ["relu (ReLU, 2 calls)"]
    int8 = INT8_BACKENDS.get("pt2e_eager").static(model, [torch.randn(8, 1, 8, 8)], "x86")
    assert set(int8.layer_groups) == {"conv1", "conv2", "fc"}


def test_pt2e_needs_the_x86_engine_and_static_mode(digits):
    folded, _, batches = digits
    with pytest.raises(Int8ConversionError, match="x86 engine only"):
        INT8_BACKENDS.get("pt2e_eager").static(folded, batches, "qnnpack")
    with pytest.raises(Int8ConversionError, match="static int8 only"):
        INT8_BACKENDS.get("pt2e").dynamic(folded, "x86")


def test_backend_choices_come_from_the_registry():
    from engine.core.errors import ConfigError

    assert {"fx", "pt2e", "pt2e_eager"} <= set(INT8_BACKENDS.names())
    assert PTQInt8Config().backend == "fx"
    PTQInt8Config(backend="pt2e").validate()
    with pytest.raises(ConfigError, match="bias_correction needs backend fx"):
        PTQInt8Config(backend="pt2e", bias_correction=True).validate()


def test_onnx_export_treats_a_pt2e_form_as_static_int8(digits, pt2e):
    """ONNX Runtime quantizes a PT2E model's float structure statically, as it does FX's; it must never export the
    float graph as if it were what ran."""
    folded, _, _ = digits
    form = ModelForm(runner=pt2e.runner, backend=pt2e.backend, weight_bits=pt2e.weight_bits,
                     quant_groups=pt2e.layer_groups, artifact=pt2e.artifact)
    assert int8_mode(form) == "static"
    assert int8_mode(ModelForm(runner=folded)) == ""
