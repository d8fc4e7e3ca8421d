"""Cross-layer equalization as a stage before any quantization, and the steps `fake` and `ptq_int8` share
when asked to equalize (`--equalize`) or to correct biases (`--bias-correction`).

Nagel, van Baalen, Blankevoort & Welling, "Data-Free Quantization Through Weight Equalization and Bias
Correction" (ICCV 2019); the maths are in engine/deploy/equalize.py. The `equalize` method folds
BatchNorm, equalizes the folded layers and saves the result as a float checkpoint of the same
architecture (each BatchNorm left holding only the folded bias), so `equalize -> ptq_int8` or
`equalize -> fake` in a recipe quantizes the equalized weights. It records the input (`baseline`)
and the equalized model (`variant`), both float: their accuracies differ only by round-off.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Point
from engine.deploy import equalize as eq
from engine.deploy.int8 import Int8Backend
from engine.deploy.quantized import _conv_bn_pairs, fold_batchnorm
from engine.methods.base import save_float
from engine.methods.quant.common import Output, QuantRun, baseline_point, quant_method, report
from engine.methods.tasks import measure_point
from engine.model.data import Dataset
from engine.model.outputs import SaveOptions

EQUALIZE_HELP = ("cross-layer equalization (Nagel et al. 2019) of the BatchNorm-folded model before quantizing: "
                 "consecutive layers' channel ranges made equal, the float model's outputs unchanged")
BIAS_CORRECTION_HELP = ("empirical bias correction (Nagel et al. 2019): each quantized layer's mean output shift on "
                        "the calibration batches is subtracted from its bias, layer by layer")
RELU6_HELP = ("with equalization, a ReLU6 between two layers: keep (it ends the chain; the float model is unchanged) "
              "or replace (by ReLU, as the paper does for MobileNetV2; the float model changes slightly and cannot "
              "be saved as this architecture, so it needs --no-save)")


def equalize_folded(model: nn.Module, relu6: str, ctx: RunContext, *, saving: bool) -> eq.Equalization:
    """Equalizes a BatchNorm-folded model in place and says so on the run; refuses to replace a ReLU6 in a
    run that saves, since a checkpoint of the architecture reloads with the ReLU6."""
    pairs = eq.equalization_pairs(model, relu6)
    relu6s = sorted({r for p in pairs for r in p.relu6})
    if relu6s and saving:
        raise ConfigError(f"relu6=replace would replace {len(relu6s)} ReLU6 module(s) by ReLU ({relu6s[0]}, ...), "
                          f"which a saved checkpoint of this architecture cannot record (it reloads with ReLU6); "
                          f"run with --no-save, or use relu6=keep")
    result = eq.equalize(model, pairs)
    ctx.log_event(result.describe() + (" (the float baseline is measured after the replacement)"
                                       if result.replaced_relu6 else ""))
    return result


def int8_bias_corrected(folded: nn.Module, batches: list[Tensor], backend: Int8Backend, engine: str,
                        ctx: RunContext) -> tuple[nn.Module, dict[str, Tensor]]:
    """The folded model with biases corrected for the int8 weights the backend makes of it.

    A first conversion gives the int8 weights; a float copy holding their dequantized values is bias
    corrected against the float model on the calibration batches (activations in float: the correction
    is for the weights' rounding, as in the paper); the corrected biases go into a copy of the float model,
    which the caller converts again. Weight quantization does not look at biases, so the second conversion
    makes the same int8 weights; the returned dequantized weights let the caller check that."""
    probe = backend.static(folded, batches, engine, ctx.cancel)
    qmodel = probe.runner.module
    dequantized = {n: qmodel.get_submodule(n).weight().dequantize() for n in probe.layer_groups}
    emulated = copy.deepcopy(folded)
    with torch.no_grad():
        for name, w in dequantized.items():
            emulated.get_submodule(name).weight.copy_(w)
    reference = eq.output_means(folded, eq.biased_layers(folded), batches)
    shifts = eq.correct_biases(emulated, reference, batches, check=ctx.cancel.raise_if_cancelled)
    corrected = copy.deepcopy(folded)
    eq.load_biases(corrected, {n: emulated.get_submodule(n).bias.detach() for n in shifts})
    ctx.log_event(f"bias correction: {len(shifts)} layer(s) corrected for their int8 weights on {len(batches)} "
                  f"calibration batch(es)")
    return corrected, dequantized


def check_same_int8_weights(int8_module: nn.Module, dequantized: dict[str, Tensor], ctx: RunContext) -> None:
    """Warns if the final conversion's int8 weights are not the ones the biases were corrected for."""
    differ = [n for n, w in dequantized.items()
              if not torch.equal(int8_module.get_submodule(n).weight().dequantize(), w)]
    if differ:
        ctx.log_event(f"bias correction: {len(differ)} layer(s) got other int8 weights in the final conversion than "
                      f"the correction assumed ({', '.join(differ[:4])})", "warning")


# ---------------------------------------------------------------- the method


@dataclass
class EqualizeConfig(SaveOptions, QuantRun):
    output_weights: ClassVar[str] = "float"  # an equalized float checkpoint: any method may start from it

    relu6: str = param("keep", RELU6_HELP, choices=eq.RELU6_POLICIES)


@quant_method("equalize", EqualizeConfig, "cross-layer equalization: a float checkpoint whose layers quantize better")
def equalize_checkpoint(model: nn.Module, data: Dataset, cfg: EqualizeConfig, ctx: RunContext,
                        output: Output) -> list[Point]:
    saving = output.root is not None
    folded = fold_batchnorm(model)
    report(ctx, 0.0, "measuring the input")
    points = [baseline_point(ctx, folded, data, cfg, output, method="equalize", latency=cfg.latency)]
    report(ctx, 0.4, "equalizing")
    result = equalize_folded(folded, cfg.relu6, ctx, saving=saving)
    measured, artifact = folded, ""
    if saving:
        measured = eq.unfold_into(model, folded, _conv_bn_pairs(model))
        artifact = save_float(ctx, output.root, "", measured, output.meta, output.input_checkpoint,
                              family="quantize", method="equalize", params=cfg.method_params(),
                              by_shape=bool(output.arch_shapes))
    report(ctx, 0.7, "measuring the equalized model")
    points.append(measure_point(ctx, measured, data, latency=cfg.latency, family="quantize", method="equalize",
                                stage="variant", params=cfg.method_params(), input_checkpoint=output.input_checkpoint,
                                artifact=artifact, equalized_pairs=len(result.pairs),
                                replaced_relu6=len(result.replaced_relu6), sweeps=result.sweeps))
    report(ctx, 1.0, "done")
    return points
