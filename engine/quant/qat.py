"""Quantization-aware training: fine-tune with fake-quantized weights and a straight-through estimator.

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference" (CVPR 2018), with the straight-through estimator of Bengio et al. (2013). BatchNorm is
folded first, so the weights trained on the grid are the weights deployed. Every Conv/Linear weight
is fake-quantized in the forward pass through `torch.nn.utils.parametrize`; the gradient reaches
the float weights through rounding unchanged. The run records PTQ at the same width (the baseline
QAT must beat) and the QAT result; at 8 bits the trained model is also converted to the real int8
model by the int8 backend.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import Tensor, nn
from torch.nn.utils import parametrize

from engine.config import check_choice, check_range
from engine.context import RunContext
from engine.data import Dataset
from engine.measure import ModelForm, prunable_weights
from engine.progress import scaled
from engine.quant import maths
from engine.quant.backend import ENGINES, INT8_BACKENDS
from engine.quant.common import (
    LayerWeights,
    SimulatedRun,
    calibration_batches,
    float_latency,
    fold_batchnorm,
    point_extras,
    quant_method,
    report,
    simulated_backend,
)
from engine.quant.ptq_int8 import measure_int8
from engine.tasks import measure_point
from engine.train import TrainConfig, fit


def default_qat_training() -> TrainConfig:
    # a short, gentle fine-tune: without BatchNorm (folded) the trained model diverges at lr 0.01 here;
    # no weight decay pulling weights off the grid
    return TrainConfig(epochs=1, lr=0.001, weight_decay=0.0, schedule="cosine")


@dataclass
class QATConfig(SimulatedRun):
    bits: int = 4  # the weight width trained for, in [2, 8]
    train: TrainConfig = field(default_factory=default_qat_training)  # the fine-tune (epochs E, lr, ...)
    engine: str = "x86"  # at 8 bits: the int8 engine the result is converted for
    backend: str = "fx"  # at 8 bits: the int8 backend
    calib_batches: int = 10  # at 8 bits: batches that calibrate the int8 activation ranges
    calib_batch_size: int = 32
    control: bool = False  # also fine-tune in float for the same epochs, then PTQ: separates QAT from more training

    def validate(self) -> None:
        super().validate()
        maths.check_bits("bits", self.bits, 2, 8)
        check_choice("engine", self.engine, ENGINES)
        check_choice("backend", self.backend, INT8_BACKENDS.names())
        check_range("calib_batches", self.calib_batches, 1, 10_000)
        check_range("calib_batch_size", self.calib_batch_size, 1, 4096)


class FakeQuantWeight(nn.Module):
    """A weight parametrization: the weight as the layer sees it is fake-quantized (with an STE)."""

    def __init__(self, bits: int, quantizer: dict):
        super().__init__()
        self.bits = bits
        self.quantizer = quantizer

    def forward(self, weight: Tensor) -> Tensor:
        return maths.fake_quantize_ste(weight, self.bits, **self.quantizer)


def add_fake_quant(model: nn.Module, bits: int, quantizer: dict) -> list[nn.Module]:
    layers = [m for _, m in prunable_weights(model)]
    for m in layers:
        parametrize.register_parametrization(m, "weight", FakeQuantWeight(bits, quantizer))
    return layers


def bake_fake_quant(layers: list[nn.Module]) -> None:
    """Removes the parametrizations, keeping the quantized weights (so they sit exactly on the grid)."""
    for m in layers:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


def ptq_point(ctx: RunContext, model: nn.Module, data: Dataset, cfg: QATConfig, form: ModelForm,
              latency: dict | bool, stage: str) -> dict:
    """The model's weights quantized to cfg.bits without training (the model is left as it was)."""
    weights = LayerWeights(model, cfg.quantizer())
    weights.apply(cfg.bits)
    try:
        return measure_point(ctx, model, data, method="qat", params=cfg.method_params(), form=form,
                             stage=stage, latency=latency, **point_extras(cfg))
    finally:
        weights.apply(maths.FLOAT_BITS)


@quant_method("qat", QATConfig, "quantization-aware training at 2-8 bits (8 bits converts to int8)")
def quantization_aware_training(model: nn.Module, data: Dataset, cfg: QATConfig, ctx: RunContext) -> list[dict]:
    model = fold_batchnorm(model)
    latency = float_latency(model, data, cfg.latency)
    params = cfg.method_params()
    quantizer = cfg.quantizer()
    form = ModelForm(backend=simulated_backend(f"int{cfg.bits}"), weight_bits=cfg.bits, simulated=True,
                     quant_groups=LayerWeights(model, quantizer).groups(cfg.bits))

    report(ctx, 0.0, f"PTQ at {cfg.bits} bits")
    baseline = ptq_point(ctx, model, data, cfg, form, latency, "ptq")
    points = [baseline]
    if cfg.control:
        ctx.log_event(f"control: fine-tuning in float for {cfg.train.epochs} epoch(s), then PTQ")
        tuned = copy.deepcopy(model)
        fit(tuned, data, cfg.train, progress=scaled(ctx.progress, 0.02, 0.45), cancel=ctx.cancel)
        points.append(ptq_point(ctx, tuned, data, cfg, form, latency, "finetune_ptq"))

    ctx.log_event(f"QAT: fine-tuning {cfg.train.epochs} epoch(s) with {cfg.bits}-bit weights, {cfg.scheme()}")
    layers = add_fake_quant(model, cfg.bits, quantizer)
    try:
        history = fit(model, data, cfg.train, progress=scaled(ctx.progress, 0.45 if cfg.control else 0.05, 0.85),
                      cancel=ctx.cancel)
    finally:
        bake_fake_quant(layers)
    for row in history:
        ctx.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    report(ctx, 0.85, "measuring QAT model")
    trained = measure_point(ctx, model, data, method="qat", params=params, form=form, stage="qat",
                            latency=latency, ptq_accuracy=baseline["accuracy"], **point_extras(cfg))
    points.append(trained)
    if cfg.bits == 8:
        report(ctx, 0.9, "converting to int8")
        batches = calibration_batches(data, cfg.calib_batches, cfg.calib_batch_size, cfg.seed)
        int8 = INT8_BACKENDS.get(cfg.backend).static(model, batches, cfg.engine, ctx.cancel)
        points.append(measure_int8(ctx, model, data, int8, method="qat", params=params, stage="qat_int8",
                                   latency=cfg.latency, **point_extras(cfg)))
    report(ctx, 1.0, "done")
    return points
