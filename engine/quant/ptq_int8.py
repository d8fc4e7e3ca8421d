"""Real int8 post-training static quantization: a CPU speedup, measured on the int8 model.

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference" (CVPR 2018). BatchNorm is folded, conv+relu fused, weights quantized per channel,
activation ranges calibrated on N batches of the calibration split (seed 000 used about 10), then
converted by the int8 backend (engine/quant/backend.py). The run records the fp32 reference and the
int8 model, both measured by engine.measure, so the speedup is read off two measured points.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from engine.config import check_choice, check_range
from engine.context import RunContext
from engine.data import Dataset
from engine.measure import ModelForm
from engine.quant.backend import ENGINES, INT8_BACKENDS, Int8ConversionError, Int8Model
from engine.quant.common import (
    QuantRun,
    calibration_batches,
    fold_batchnorm,
    point_extras,
    quant_method,
    report,
)
from engine.tasks import measure_point

FALLBACKS = ("error", "dynamic_int8")


@dataclass
class PTQInt8Config(QuantRun):
    engine: str = "x86"  # quantized kernels: x86 (fbgemm, or oneDNN where faster) | onednn | qnnpack
    backend: str = "fx"  # the int8 backend implementation (see engine/quant/backend.py)
    calib_batches: int = 10  # N batches of the calibration split that set the activation ranges
    calib_batch_size: int = 32
    fallback: str = "error"  # when the backend cannot convert the model: error | dynamic_int8 (recorded)
    out: str | None = None  # also write the int8 model (torch.save of its state_dict) to this file

    def validate(self) -> None:
        check_choice("engine", self.engine, ENGINES)
        check_choice("backend", self.backend, INT8_BACKENDS.names())
        check_range("calib_batches", self.calib_batches, 1, 10_000)
        check_range("calib_batch_size", self.calib_batch_size, 1, 4096)
        check_choice("fallback", self.fallback, FALLBACKS)


def measure_int8(ctx: RunContext, folded: nn.Module, data: Dataset, int8: Int8Model, *, method: str, params: dict,
                 stage: str, latency: bool, out: str | None = None, float_expected: bool = False,
                 **extra) -> dict:
    """The point of an int8 model: accuracy and latency from the int8 runner, sizes from its weights."""
    if int8.float_layers:
        ctx.log_event(f"{len(int8.float_layers)} layer(s) stay in float: {', '.join(int8.float_layers[:8])}",
                      "info" if float_expected else "warning")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(int8.artifact)
        ctx.log_artifact(out, "int8_model")
    form = ModelForm(runner=int8.runner, backend=int8.backend, weight_bits=int8.weight_bits,
                     quant_groups=int8.layer_groups, artifact=int8.artifact)
    return measure_point(ctx, folded, data, method=method, params=params, form=form, stage=stage, artifact=out,
                         latency=latency, int8_layers=len(int8.layer_groups), float_layers=int8.float_layers,
                         **extra)


@quant_method("ptq_int8", PTQInt8Config, "real int8 post-training static quantization (CPU speedup)")
def ptq_int8(model: nn.Module, data: Dataset, cfg: PTQInt8Config, ctx: RunContext) -> list[dict]:
    folded = fold_batchnorm(model)
    params = cfg.method_params()
    report(ctx, 0.0, "measuring fp32")
    reference = measure_point(ctx, folded, data, method="ptq_int8", params=params, stage="fp32",
                              latency=cfg.latency, **point_extras(cfg))
    report(ctx, 0.4, f"calibrating on {cfg.calib_batches} batches")
    batches = calibration_batches(data, cfg.calib_batches, cfg.calib_batch_size, cfg.seed)
    backend = INT8_BACKENDS.get(cfg.backend)
    try:
        int8 = backend.static(folded, batches, cfg.engine, ctx.cancel)
    except Int8ConversionError as e:
        if cfg.fallback != "dynamic_int8":
            raise
        ctx.log_event(f"static int8 failed, falling back to dynamic int8 (Linear layers only): {e}", "warning")
        int8 = backend.dynamic(folded, cfg.engine)
        int8.backend += " (fallback: static int8 failed)"
        params = {**params, "fallback_reason": str(e)}
    report(ctx, 0.7, "measuring int8")
    point = measure_int8(ctx, folded, data, int8, method="ptq_int8", params=params, stage="int8",
                         latency=cfg.latency, out=cfg.out, **point_extras(cfg))
    report(ctx, 1.0, "done")
    return [reference, point]
