"""Simulated (fake-quant) quantization at any width from 2 to 32 bits: a sweep.

Uniform quantization (Jacob et al., CVPR 2018) simulated in float, swept over the widths of the
greedy path-following study (seed 003): [2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 26, 32]. Weights are
quantized once per width from a cached float copy; evaluation reuses the split's cached tensors;
latency is that of the float model that actually runs, timed once, and every point says simulated.
Each width below 32 is a variant saved as a `packed` checkpoint (its codes bit-packed at that
width, so file_bytes is the size of a real low-bit file); 32 bits is the float baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.point import Point
from engine.deploy import qmaths as maths
from engine.deploy.quantized import ActivationQuant, fold_batchnorm
from engine.methods.quant.common import (
    LayerWeights,
    Output,
    SimulatedRun,
    baseline_point,
    check_bits_list,
    float_latency,
    quant_method,
    report,
    simulated_backend,
    simulated_point,
)
from engine.model.data import Dataset, calibration_batches
from engine.model.outputs import SaveOptions, level_dir


@dataclass
class FakeQuantConfig(SaveOptions, SimulatedRun):
    bits: tuple[int, ...] = param(maths.SWEEP_BITS, "weight widths to sweep, each in [2, 32]; 32 = float")
    activation_bits: int | None = param(None, "also fake-quantize each layer's input at this width (default: "
                                              "float inputs)", lo=maths.MIN_BITS, hi=maths.MAX_BITS)
    calib_batches: int = param(10, "batches that calibrate the activation ranges (only with --activation-bits)",
                               lo=1, hi=10_000)
    calib_batch_size: int = param(32, "images per calibration batch", lo=1, hi=4096)

    def validate(self) -> None:
        check_bits_list("bits", self.bits)


@quant_method("fake", FakeQuantConfig, "simulated quantization sweep: accuracy and size at each bit width")
def fake_quant_sweep(model: nn.Module, data: Dataset, cfg: FakeQuantConfig, ctx: RunContext,
                     output: Output) -> list[Point]:
    model = fold_batchnorm(model)
    latency = float_latency(model, data, cfg.latency)
    acts = None
    if cfg.activation_bits is not None and cfg.activation_bits < maths.FLOAT_BITS:
        acts = ActivationQuant.calibrate(model, cfg.activation_bits,
                                         calibration_batches(data, cfg.calib_batches, cfg.calib_batch_size, cfg.seed),
                                         symmetric=cfg.symmetric, observer=cfg.observer, percentile=cfg.percentile)
    weights = LayerWeights(model, cfg.quantizer())
    ctx.log_event(f"fake-quant sweep over {list(cfg.bits)} bits, {cfg.scheme()}, "
                  f"{len(weights.layers)} layers (BatchNorm folded)")
    points = []
    for i, bits in enumerate(cfg.bits):
        report(ctx, i / len(cfg.bits), f"{bits}-bit weights")
        if bits >= maths.FLOAT_BITS and acts is None:
            weights.apply(maths.FLOAT_BITS)
            points.append(baseline_point(ctx, model, data, cfg, output, method="fake", latency=latency,
                                         scheme=cfg.scheme()))
            continue
        backend = simulated_backend(f"int{bits}" if bits < maths.FLOAT_BITS else "fp32", cfg.activation_bits)
        points.append(simulated_point(ctx, model, data, weights, bits, cfg, output, method="fake", stage="variant",
                                      sub=level_dir("bits", bits), level=bits, level_name="bits", latency=latency,
                                      backend=backend, acts=acts, scheme=cfg.scheme()))
    weights.apply(maths.FLOAT_BITS)
    report(ctx, 1.0, "done")
    return points
