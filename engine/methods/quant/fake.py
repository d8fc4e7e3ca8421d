"""Simulated (fake-quant) quantization at any width from 2 to 32 bits: a sweep.

Uniform quantization (Jacob et al., CVPR 2018) simulated in float, swept over the widths of the
greedy path-following study (seed 003): [2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 26, 32]. Weights are
quantized once per width from a cached float copy; evaluation reuses the split's cached tensors;
latency is that of the float model that actually runs, timed once, and every point says simulated.
Each width below 32 is a variant saved as a `packed` checkpoint (its codes bit-packed at that
width, so file_bytes is the size of a real low-bit file); 32 bits is the float baseline.

`--equalize` applies cross-layer equalization to the folded model first and `--bias-correction` corrects
the (float) biases for the simulated weights at each width on the calibration batches (Nagel, van
Baalen, Blankevoort & Welling, "Data-Free Quantization Through Weight Equalization and Bias Correction",
ICCV 2019; engine/deploy/equalize.py); the corrected biases are saved in that width's checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.point import Point
from engine.deploy import equalize as eq
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
from engine.methods.quant.equalize import BIAS_CORRECTION_HELP, EQUALIZE_HELP, RELU6_HELP, equalize_folded
from engine.model.data import Dataset, calibration_batches
from engine.model.outputs import SaveOptions, level_dir


@dataclass
class FakeQuantConfig(SaveOptions, SimulatedRun):
    bits: tuple[int, ...] = param(maths.SWEEP_BITS, "weight widths to sweep, each in [2, 32]; 32 = float")
    activation_bits: int | None = param(None, "also fake-quantize each layer's input at this width (default: "
                                              "float inputs)", lo=maths.MIN_BITS, hi=maths.MAX_BITS)
    calib_batches: int = param(10, "calibration batches: they set the activation ranges (with --activation-bits) and "
                                   "the bias correction (with --bias-correction)", lo=1, hi=10_000)
    calib_batch_size: int = param(32, "images per calibration batch", lo=1, hi=4096)
    equalize: bool = param(False, EQUALIZE_HELP)
    relu6: str = param("keep", RELU6_HELP, choices=eq.RELU6_POLICIES)
    bias_correction: bool = param(False, BIAS_CORRECTION_HELP)

    def validate(self) -> None:
        check_bits_list("bits", self.bits)


@quant_method("fake", FakeQuantConfig, "simulated quantization sweep: accuracy and size at each bit width")
def fake_quant_sweep(model: nn.Module, data: Dataset, cfg: FakeQuantConfig, ctx: RunContext,
                     output: Output) -> list[Point]:
    model = fold_batchnorm(model)
    if cfg.equalize:
        equalize_folded(model, cfg.relu6, ctx, saving=output.root is not None)
    latency = float_latency(model, data, cfg.latency)
    acts = None
    needs_batches = cfg.bias_correction or (cfg.activation_bits is not None and cfg.activation_bits < maths.FLOAT_BITS)
    batches = calibration_batches(data, cfg.calib_batches, cfg.calib_batch_size, cfg.seed) if needs_batches else []
    if cfg.activation_bits is not None and cfg.activation_bits < maths.FLOAT_BITS:
        acts = ActivationQuant.calibrate(model, cfg.activation_bits, batches, symmetric=cfg.symmetric,
                                         observer=cfg.observer, percentile=cfg.percentile)
    float_biases = eq.layer_biases(model)
    # the float model's mean outputs, which each width's corrected biases bring its layers back to
    reference = eq.output_means(model, float_biases, batches) if cfg.bias_correction else None
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
        if reference is not None:
            weights.apply(bits)
            eq.correct_biases(model, reference, batches, context=acts, check=ctx.cancel.raise_if_cancelled)
        points.append(simulated_point(ctx, model, data, weights, bits, cfg, output, method="fake", stage="variant",
                                      sub=level_dir("bits", bits), level=bits, level_name="bits", latency=latency,
                                      backend=backend, acts=acts, scheme=cfg.scheme()))
        eq.load_biases(model, float_biases)
    weights.apply(maths.FLOAT_BITS)
    report(ctx, 1.0, "done")
    return points
