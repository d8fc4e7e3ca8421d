"""Quantization-aware training: fine-tune with fake-quantized weights and a straight-through estimator.

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference" (CVPR 2018), with the straight-through estimator of Bengio et al. (2013). BatchNorm is
folded first, so the weights trained on the grid are the weights deployed. Every Conv/Linear weight
is fake-quantized in the forward pass through `torch.nn.utils.parametrize`; the gradient reaches
the float weights through rounding unchanged. The run records the fp32 model (baseline), PTQ at the same width
(the variant QAT must beat; `kind` ptq), optionally a float fine-tune then PTQ (`kind`
finetune_ptq), and the QAT result (`kind` qat), each saved as a `packed` checkpoint; at 8 bits the
trained model is also converted to the real int8 model (`kind` qat_int8, an `int8` checkpoint).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.utils import parametrize

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.point import Point
from engine.core.progress import scaled
from engine.deploy import qmaths as maths
from engine.deploy.int8 import ENGINES, INT8_BACKENDS
from engine.deploy.measure import prunable_weights
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant.common import (
    LayerWeights,
    Output,
    SimulatedRun,
    baseline_point,
    float_latency,
    quant_method,
    report,
    simulated_backend,
    simulated_point,
)
from engine.methods.quant.ptq_int8 import int8_point
from engine.model.data import Dataset, calibration_batches
from engine.model.outputs import SaveOptions, level_dir
from engine.model.train import TrainConfig, fit


def default_qat_training() -> TrainConfig:
    # a short, gentle fine-tune: without BatchNorm (folded) the trained model diverges at lr 0.01 here;
    # no weight decay pulling weights off the grid
    return TrainConfig(epochs=1, lr=0.001, weight_decay=0.0, schedule="cosine")


@dataclass
class QATConfig(SaveOptions, SimulatedRun):
    bits: int = param(4, "the weight width trained for", lo=2, hi=8)
    train: TrainConfig = param(default_factory=default_qat_training)  # the fine-tune: 1 epoch at lr 0.001
    engine: str = param("x86", "at 8 bits: the int8 engine the result is converted for", choices=ENGINES)
    backend: str = param("fx", "at 8 bits: the int8 backend", choices=tuple(INT8_BACKENDS.names()))
    calib_batches: int = param(10, "at 8 bits: batches that calibrate the int8 activation ranges", lo=1, hi=10_000)
    calib_batch_size: int = param(32, "images per calibration batch", lo=1, hi=4096)
    control: bool = param(False, "also fine-tune in float for the same epochs, then PTQ: separates QAT from "
                                 "more training")


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


def quantized_point(ctx: RunContext, model: nn.Module, data: Dataset, cfg: QATConfig, output: Output,
                    latency: dict | bool, kind: str, **extra) -> Point:
    """The model's weights quantized to cfg.bits (and saved packed); the model is left as it was."""
    weights = LayerWeights(model, cfg.quantizer())
    try:
        return simulated_point(ctx, model, data, weights, cfg.bits, cfg, output, method="qat", stage="variant",
                               sub=f"{kind}-{level_dir('bits', cfg.bits)}", level=cfg.bits, level_name="bits",
                               latency=latency, backend=simulated_backend(f"int{cfg.bits}"), kind=kind, **extra)
    finally:
        weights.apply(maths.FLOAT_BITS)


@quant_method("qat", QATConfig, "quantization-aware training at 2-8 bits (8 bits converts to int8)")
def quantization_aware_training(model: nn.Module, data: Dataset, cfg: QATConfig, ctx: RunContext,
                                output: Output) -> list[Point]:
    model = fold_batchnorm(model)
    latency = float_latency(model, data, cfg.latency)
    report(ctx, 0.0, "measuring fp32")
    points = [baseline_point(ctx, model, data, cfg, output, method="qat", latency=latency)]
    report(ctx, 0.02, f"PTQ at {cfg.bits} bits")
    ptq = quantized_point(ctx, model, data, cfg, output, latency, "ptq")
    points.append(ptq)
    if cfg.control:
        ctx.log_event(f"control: fine-tuning in float for {cfg.train.epochs} epoch(s), then PTQ")
        tuned = copy.deepcopy(model)
        fit(tuned, data, cfg.train, progress=scaled(ctx.progress, 0.02, 0.45), cancel=ctx.cancel)
        points.append(quantized_point(ctx, tuned, data, cfg, output, latency, "finetune_ptq"))

    ctx.log_event(f"QAT: fine-tuning {cfg.train.epochs} epoch(s) with {cfg.bits}-bit weights, {cfg.scheme()}")
    layers = add_fake_quant(model, cfg.bits, cfg.quantizer())
    try:
        history = fit(model, data, cfg.train, progress=scaled(ctx.progress, 0.45 if cfg.control else 0.05, 0.85),
                      cancel=ctx.cancel)
    finally:
        bake_fake_quant(layers)
    for row in history:
        ctx.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    report(ctx, 0.85, "measuring QAT model")
    # the baked weights lie on the grid; quantizing them again gives the codes the checkpoint stores
    points.append(quantized_point(ctx, model, data, cfg, output, latency, "qat", ptq_accuracy=ptq.accuracy))
    if cfg.bits == 8:
        report(ctx, 0.9, "converting to int8")
        batches = calibration_batches(data, cfg.calib_batches, cfg.calib_batch_size, cfg.seed)
        int8 = INT8_BACKENDS.get(cfg.backend).static(model, batches, cfg.engine, ctx.cancel)
        points.append(int8_point(ctx, model, data, int8, output, method="qat", params=cfg.method_params(),
                                 mode="static", engine=cfg.engine, backend=cfg.backend, latency=cfg.latency,
                                 sub=f"qat_int8-{level_dir('bits', 8)}", kind="qat_int8"))
    report(ctx, 1.0, "done")
    return points
