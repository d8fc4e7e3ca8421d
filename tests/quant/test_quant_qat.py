"""Quantization-aware training: compared with PTQ at 4 bits on the default model; 8 bits becomes int8."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn.utils import parametrize

from engine.core.errors import Cancelled
from engine.deploy import qmaths as maths
from engine.deploy.measure import prunable_weights
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant import QATConfig, quantize
from engine.methods.quant.qat import add_fake_quant, bake_fake_quant
from engine.methods.tasks import open_checkpoint
from engine.model.train import TrainConfig, fit


def test_qat_at_4_bits_beats_ptq_at_4_bits_on_the_default_model(teacher_checkpoint, ctx):
    model, _, data = open_checkpoint(teacher_checkpoint)
    data = dataclasses.replace(data, train=data.calibration(1500, seed=1))  # one short epoch keeps this fast
    fp32, ptq, qat = [p.to_dict() for p in quantize(model, data, QATConfig(bits=4, latency=False), ctx)]
    assert (fp32["stage"], fp32["level"]) == ("baseline", 32) and not fp32["simulated"]
    assert (ptq["stage"], ptq["kind"], qat["stage"], qat["kind"]) == ("variant", "ptq", "variant", "qat")
    assert ptq["level"] == qat["level"] == 4 and ptq["level_name"] == "bits"
    assert ptq["bits"] == qat["bits"] == 4 and ptq["size_bytes"] == qat["size_bytes"]
    assert qat["simulated"] and "simulated int4 weights" in qat["backend"]
    assert qat["accuracy"] > ptq["accuracy"], (ptq["accuracy"], qat["accuracy"])
    assert qat["ptq_accuracy"] == ptq["accuracy"]
    assert ctx.metrics and ctx.metrics[0][1]["val_accuracy"] > 0.9  # the fine-tune's history is logged


def test_trained_weights_end_on_the_4_bit_grid(digits_checkpoint):
    model, _, data = open_checkpoint(digits_checkpoint)
    model = fold_batchnorm(model)
    layers = add_fake_quant(model, 4, {"symmetric": True, "per_channel": True, "observer": "minmax",
                                       "percentile": 99.99})
    fit(model, data, TrainConfig(epochs=1, lr=0.001, weight_decay=0.0))
    bake_fake_quant(layers)
    for _, layer in prunable_weights(model):
        w = layer.weight.detach()
        assert not parametrize.is_parametrized(layer)
        assert max(row.unique().numel() for row in w.flatten(1)) <= 15  # 4-bit symmetric: 15 levels
        assert torch.allclose(maths.quantize_tensor(w, 4), w, atol=1e-6)  # already on the grid


def test_qat_at_8_bits_converts_to_the_real_int8_model(digits_checkpoint, ctx):
    model, _, data = open_checkpoint(digits_checkpoint)
    cfg = QATConfig(bits=8, latency=False, calib_batches=2, train=TrainConfig(epochs=1, lr=0.001, weight_decay=0.0))
    points = [p.to_dict() for p in quantize(model, data, cfg, ctx)]
    assert [p["stage"] for p in points] == ["baseline", "variant", "variant", "variant"]
    assert [p.get("kind") for p in points] == [None, "ptq", "qat", "qat_int8"]
    fp32, qat, int8 = points[0], points[2], points[-1]
    assert not int8["simulated"] and int8["backend"] == "int8 torch.ao FX (x86) cpu" and int8["level"] == 8
    assert int8["file_bytes"] < fp32["file_bytes"] / 2.5
    assert abs(int8["accuracy"] - qat["accuracy"]) <= 0.02


def test_qat_can_be_cancelled_mid_training(digits_checkpoint, cancelling_ctx):
    model, _, data = open_checkpoint(digits_checkpoint)
    ctx = cancelling_ctx(2)  # cancel once the fp32 baseline and the PTQ variant are logged
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(Cancelled):
        quantize(model, data, QATConfig(bits=4, latency=False), ctx)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the input model is untouched
