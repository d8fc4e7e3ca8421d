"""Simulated (fake-quant) quantization at any width from 2 to 32 bits: a sweep.

Uniform quantization (Jacob et al., CVPR 2018) simulated in float, swept over the widths of the
greedy path-following study (seed 003): [2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 26, 32]. Weights are
quantized once per width from a cached float copy; evaluation reuses the split's cached tensors;
latency is that of the float model that actually runs, timed once, and every point says simulated.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from torch import nn

from engine.config import check_range
from engine.context import RunContext
from engine.data import Dataset
from engine.measure import ModelForm
from engine.quant import maths
from engine.quant.common import (
    ActivationQuant,
    LayerWeights,
    SimulatedRun,
    calibration_batches,
    check_bits_list,
    float_latency,
    fold_batchnorm,
    point_extras,
    quant_method,
    report,
    simulated_backend,
)
from engine.tasks import measure_point


@dataclass
class FakeQuantConfig(SimulatedRun):
    bits: tuple[int, ...] = maths.SWEEP_BITS  # weight widths to sweep, each in [2, 32]; 32 = float
    activation_bits: int | None = None  # also fake-quantize each layer's input at this width; None = float
    calib_batches: int = 10  # batches that calibrate the activation ranges (only with activation_bits)
    calib_batch_size: int = 32

    def validate(self) -> None:
        super().validate()
        check_bits_list("bits", self.bits)
        if self.activation_bits is not None:
            maths.check_bits("activation_bits", self.activation_bits)
        check_range("calib_batches", self.calib_batches, 1, 10_000)
        check_range("calib_batch_size", self.calib_batch_size, 1, 4096)


@quant_method("fake", FakeQuantConfig, "simulated quantization sweep: accuracy and size at each bit width")
def fake_quant_sweep(model: nn.Module, data: Dataset, cfg: FakeQuantConfig, ctx: RunContext) -> list[dict]:
    model = fold_batchnorm(model)
    latency = float_latency(model, data, cfg.latency)
    acts = None
    if cfg.activation_bits is not None:
        acts = ActivationQuant(model, cfg.activation_bits,
                               calibration_batches(data, cfg.calib_batches, cfg.calib_batch_size, cfg.seed),
                               symmetric=cfg.symmetric, observer=cfg.observer, percentile=cfg.percentile)
    weights = LayerWeights(model, cfg.quantizer())
    ctx.log_event(f"fake-quant sweep over {list(cfg.bits)} bits, {cfg.scheme()}, "
                  f"{len(weights.layers)} layers (BatchNorm folded)")
    points = []
    for i, bits in enumerate(cfg.bits):
        report(ctx, i / len(cfg.bits), f"{bits}-bit weights")
        weights.apply(bits)
        simulated = bits < maths.FLOAT_BITS or (acts is not None and cfg.activation_bits < maths.FLOAT_BITS)
        form = ModelForm(backend=simulated_backend(f"int{bits}", cfg.activation_bits) if simulated else "fp32 eager",
                         weight_bits=bits, quant_groups=weights.groups(bits), simulated=simulated)
        params = {**cfg.method_params(), "sweep": list(cfg.bits), "bits": bits, "scheme": cfg.scheme()}
        with acts if acts is not None else nullcontext():
            points.append(measure_point(ctx, model, data, method="fake", params=params, form=form,
                                        stage=f"{bits}bit", latency=latency, **point_extras(cfg)))
    weights.apply(maths.FLOAT_BITS)
    report(ctx, 1.0, "done")
    return points
