"""Per-layer sensitivity: the accuracy when one layer at a time is quantized to b bits.

The layer-wise sensitivity analysis that precedes mixed-precision choices (as in HAWQ, Dong et al.,
ICCV 2019, measured here directly rather than through the Hessian): every other layer stays in
float, so each point isolates what quantizing that one layer costs.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.point import Point
from engine.deploy import qmaths as maths
from engine.deploy.measure import ModelForm, measure
from engine.deploy.quantized import fold_batchnorm
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
)
from engine.methods.tasks import make_point
from engine.model.data import Dataset


@dataclass
class SensitivityConfig(SimulatedRun):
    bits: tuple[int, ...] = param((2, 4), "widths each layer is tried at, alone, each in [2, 32]")

    def validate(self) -> None:
        check_bits_list("bits", self.bits)


@quant_method("sensitivity", SensitivityConfig, "per-layer sensitivity: one layer at a time at b bits (no artifacts)")
def layer_sensitivity(model: nn.Module, data: Dataset, cfg: SensitivityConfig, ctx: RunContext,
                      output: Output) -> list[Point]:
    model = fold_batchnorm(model)
    latency = float_latency(model, data, cfg.latency)
    weights = LayerWeights(model, cfg.quantizer())
    params = cfg.method_params()
    report(ctx, 0.0, "fp32 reference")
    reference = baseline_point(ctx, model, data, cfg, output, method="sensitivity", latency=latency, layer="",
                               accuracy_drop=0.0)
    points = [reference]
    runs = [(name, b) for name in weights.layers for b in cfg.bits]
    for i, (name, bits) in enumerate(runs):
        report(ctx, (i + 1) / (len(runs) + 1), f"{name} at {bits} bits")
        assignment = {name: bits}
        weights.apply(assignment)
        form = ModelForm(backend=simulated_backend(f"int{bits} {name}"), weight_bits=weights.assignment(assignment),
                         quant_groups=weights.groups(assignment), simulated=bits < maths.FLOAT_BITS)
        m = measure(model, data, form, latency=latency)
        point = make_point(m, family="quantize", method="sensitivity", stage="variant", params=params, level=bits,
                           level_name="bits", input_checkpoint=output.input_checkpoint, layer=name,
                           accuracy_drop=reference.accuracy - m.accuracy)
        ctx.log_point(point)
        points.append(point)
    weights.apply(maths.FLOAT_BITS)
    report(ctx, 1.0, "done")
    return points
