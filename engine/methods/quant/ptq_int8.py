"""Real int8 post-training static quantization: a CPU speedup, measured on the int8 model.

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference" (CVPR 2018). BatchNorm is folded, conv+relu fused, weights quantized per channel,
activation ranges calibrated on N batches of the calibration split (seed 000 used about 10), then
converted by the int8 backend (engine/deploy/int8.py). The run records the fp32 reference
(baseline) and the int8 model (variant, 8 bits), both measured by engine.deploy.measure, so the speedup is
read off two measured points; the int8 model is saved as an `int8` checkpoint (engine/deploy/formats.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.point import Point
from engine.deploy import formats
from engine.deploy.equalize import RELU6_POLICIES
from engine.deploy.int8 import ENGINES, INT8_BACKENDS, Int8ConversionError, Int8Model
from engine.deploy.measure import ModelForm
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant.common import Output, QuantRun, baseline_point, quant_method, report
from engine.methods.quant.equalize import (
    BIAS_CORRECTION_HELP,
    EQUALIZE_HELP,
    RELU6_HELP,
    check_same_int8_weights,
    equalize_folded,
    int8_bias_corrected,
)
from engine.methods.tasks import measure_point
from engine.model.data import Dataset, calibration_batches
from engine.model.outputs import SaveOptions

FALLBACKS = ("error", "dynamic_int8")


@dataclass
class PTQInt8Config(SaveOptions, QuantRun):
    engine: str = param("x86", "quantized kernels: x86 (fbgemm, or oneDNN where faster), onednn or qnnpack",
                        choices=ENGINES)
    backend: str = param("fx", "the int8 backend implementation (see engine/deploy/int8.py)",
                         choices=tuple(INT8_BACKENDS.names()))
    calib_batches: int = param(10, "batches of the calibration split that set the activation ranges", lo=1,
                               hi=10_000)
    calib_batch_size: int = param(32, "images per calibration batch", lo=1, hi=4096)
    fallback: str = param("error", "when the backend cannot convert the model: error, or dynamic_int8 (recorded "
                                   "on the run)", choices=FALLBACKS)
    equalize: bool = param(False, EQUALIZE_HELP)
    relu6: str = param("keep", RELU6_HELP, choices=RELU6_POLICIES)
    bias_correction: bool = param(False, BIAS_CORRECTION_HELP + " (for the int8 weights a first conversion makes; "
                                                                "the model is then converted again)")


def int8_point(ctx: RunContext, folded: nn.Module, data: Dataset, int8: Int8Model, output: Output, *, method: str,
               params: dict, mode: str, engine: str, backend: str, latency: bool, sub: str = "",
               float_expected: bool = False, **extra) -> Point:
    """The int8 variant: accuracy and latency from the int8 runner, sizes from its weights; saved as an
    int8 checkpoint in output.root / sub."""
    if int8.float_layers:
        ctx.log_event(f"{len(int8.float_layers)} layer(s) stay in float: {', '.join(int8.float_layers[:8])}",
                      "info" if float_expected else "warning")
    quant = formats.int8_quant_meta(mode, engine, backend, int8.backend)
    artifact = output.save(ctx, sub, int8.artifact, method=method, params=params, level=8, level_name="bits",
                           weights_format="int8", quant=quant)
    form = ModelForm(runner=int8.runner, backend=int8.backend, weight_bits=int8.weight_bits,
                     quant_groups=int8.layer_groups, artifact=int8.artifact)
    return measure_point(ctx, folded, data, form=form, latency=latency, family="quantize", method=method,
                         stage="variant", params=params, level=8, level_name="bits",
                         input_checkpoint=output.input_checkpoint, artifact=artifact,
                         int8_layers=len(int8.layer_groups), float_layers=int8.float_layers, **extra)


@quant_method("ptq_int8", PTQInt8Config, "real int8 post-training static quantization (CPU speedup)")
def ptq_int8(model: nn.Module, data: Dataset, cfg: PTQInt8Config, ctx: RunContext, output: Output) -> list[Point]:
    folded = fold_batchnorm(model)
    if cfg.equalize:  # before calibration, so the activation ranges are those of the equalized model
        equalize_folded(folded, cfg.relu6, ctx, saving=output.root is not None)
    params = cfg.method_params()
    report(ctx, 0.0, "measuring fp32")
    reference = baseline_point(ctx, folded, data, cfg, output, method="ptq_int8", latency=cfg.latency)
    report(ctx, 0.4, f"calibrating on {cfg.calib_batches} batches")
    batches = calibration_batches(data, cfg.calib_batches, cfg.calib_batch_size, cfg.seed)
    backend = INT8_BACKENDS.get(cfg.backend)
    mode = "static"
    try:
        source, dequantized = (int8_bias_corrected(folded, batches, backend, cfg.engine, ctx) if cfg.bias_correction
                               else (folded, None))
        int8 = backend.static(source, batches, cfg.engine, ctx.cancel)
        if dequantized is not None:
            check_same_int8_weights(int8.runner.module, dequantized, ctx)
    except Int8ConversionError as e:
        if cfg.fallback != "dynamic_int8":
            raise
        if cfg.bias_correction:
            ctx.log_event("bias correction is not applied to the dynamic int8 fallback", "warning")
        ctx.log_event(f"static int8 failed, falling back to dynamic int8 (Linear layers only): {e}", "warning")
        int8 = backend.dynamic(folded, cfg.engine)
        int8.backend += " (fallback: static int8 failed)"
        params = {**params, "fallback_reason": str(e)}
        mode = "dynamic"
    report(ctx, 0.7, "measuring int8")
    point = int8_point(ctx, folded, data, int8, output, method="ptq_int8", params=params, mode=mode,
                       engine=cfg.engine, backend=cfg.backend, latency=cfg.latency)
    report(ctx, 1.0, "done")
    return [reference, point]
