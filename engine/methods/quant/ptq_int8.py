"""Real int8 post-training static quantization: a CPU speedup, measured on the int8 model.

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference" (CVPR 2018). BatchNorm is folded, conv+relu fused, weights quantized per channel,
activation ranges calibrated on N batches of the calibration split (seed 000 used about 10), then
converted by the int8 backend (engine/deploy/int8.py). The run records the fp32 reference
(baseline) and the int8 model (variant, 8 bits), both measured by engine.deploy.measure, so the speedup is
read off two measured points; the int8 model is saved as an `int8` checkpoint (engine/deploy/formats.py).

With `max_drop`, layers are kept in float, the most sensitive first, until the int8 model loses at most that
many points of validation accuracy (engine/methods/quant/accuracy_aware.py: INC's accuracy criterion, NNCF's
quantize_with_accuracy_control); the checkpoint's meta.quant lists them as `keep_float`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Point
from engine.deploy import formats
from engine.deploy import measure as measuring
from engine.deploy.equalize import RELU6_POLICIES
from engine.deploy.int8 import ENGINES, INT8_BACKENDS, Int8Backend, Int8ConversionError, Int8Model
from engine.deploy.measure import ModelForm
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant.accuracy_aware import correct, drop_points, keep_layers_float, logits_of
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
    max_drop: float | None = param(None, "top-1 accuracy the int8 model may lose against fp32 on the validation "
                                         "split, as a fraction like mixed's --max-drop (0.005 = half a point); "
                                         "layers are kept float, most sensitive first, until it holds (default: "
                                         "every layer int8)", lo=0, hi=1)

    def validate(self) -> None:
        super().validate()
        if self.max_drop is not None and self.fallback == "dynamic_int8":
            raise ConfigError("max_drop keeps layers of the static int8 model in float; it cannot be combined with "
                              "fallback=dynamic_int8")
        if self.bias_correction and self.backend != "fx":  # it reads the int8 weights of FX's quantized modules
            raise ConfigError(f"bias_correction needs backend fx; got backend {self.backend!r}")


class KeepingFloat:
    """A backend whose static conversions keep `keep` in float, so bias correction's two conversions both do."""

    def __init__(self, backend: Int8Backend, keep: Sequence[str]):
        self.backend, self.keep = backend, tuple(keep)

    def static(self, model: nn.Module, calibration, engine: str, cancel=None) -> Int8Model:
        return self.backend.static(model, calibration, engine, cancel, keep_float=self.keep)


class QuietContext(RunContext):
    """The run's cancel token and its warnings, without the info events of every trial conversion."""

    def __init__(self, ctx: RunContext):
        super().__init__(ctx.cancel)
        self.outer = ctx

    def log_event(self, message: str, level: str = "info") -> None:
        if level != "info":
            self.outer.log_event(message, level)


def convert_static(folded: nn.Module, batches: list[Tensor], backend: Int8Backend, cfg: PTQInt8Config,
                   ctx: RunContext, keep_float: Sequence[str] = ()) -> Int8Model:
    """One static int8 conversion with `keep_float` in float (bias corrected first when cfg asks)."""
    target = KeepingFloat(backend, keep_float) if keep_float else backend
    source, dequantized = (int8_bias_corrected(folded, batches, target, cfg.engine, ctx) if cfg.bias_correction
                           else (folded, None))
    int8 = target.static(source, batches, cfg.engine, ctx.cancel)
    if dequantized is not None:
        check_same_int8_weights(int8.runner.module, dequantized, ctx)
    return int8


def int8_point(ctx: RunContext, folded: nn.Module, data: Dataset, int8: Int8Model, output: Output, *, method: str,
               params: dict, mode: str, engine: str, backend: str, latency: bool, sub: str = "",
               float_expected: bool = False, keep_float: Sequence[str] | None = None, **extra) -> Point:
    """The int8 variant: accuracy and latency from the int8 runner, sizes from its weights; saved as an
    int8 checkpoint in output.root / sub (its meta.quant listing `keep_float`, the layers kept float on purpose)."""
    if int8.float_layers:
        ctx.log_event(f"{len(int8.float_layers)} layer(s) stay in float: {', '.join(int8.float_layers[:8])}",
                      "info" if float_expected else "warning")
    quant = formats.int8_quant_meta(mode, engine, backend, int8.backend)
    if keep_float is not None:  # a max_drop run: its point says which layers it kept float, even none
        extra["keep_float"] = list(keep_float)
        if keep_float:
            quant["keep_float"] = list(keep_float)
    artifact = output.save(ctx, sub, int8.artifact, method=method, params=params, level=8, level_name="bits",
                           weights_format="int8", quant=quant)
    form = ModelForm(runner=int8.runner, backend=int8.backend, weight_bits=int8.weight_bits,
                     quant_groups=int8.layer_groups, artifact=int8.artifact)
    return measure_point(ctx, folded, data, form=form, latency=latency, family="quantize", method=method,
                         stage="variant", params=params, level=8, level_name="bits",
                         input_checkpoint=output.input_checkpoint, artifact=artifact,
                         int8_layers=len(int8.layer_groups), float_layers=int8.float_layers, **int8.extra, **extra)


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
    extra: dict = {}
    try:
        if cfg.max_drop is None:
            int8 = convert_static(folded, batches, backend, cfg, ctx)
        else:
            int8, extra = within_max_drop(folded, data, batches, backend, cfg, ctx)
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
                       engine=cfg.engine, backend=cfg.backend, latency=cfg.latency,
                       float_expected=cfg.max_drop is not None, **extra)
    report(ctx, 1.0, "done")
    return [reference, point]


def within_max_drop(folded: nn.Module, data: Dataset, batches: list[Tensor], backend: Int8Backend,
                    cfg: PTQInt8Config, ctx: RunContext) -> tuple[Int8Model, dict]:
    """The int8 model with the fewest layers kept float (most sensitive first) that is within cfg.max_drop (a
    fraction; the search and the events work in points) of fp32 on the validation split, and the point's extra fields saying how it was found."""
    quiet = QuietContext(ctx)
    trial = backend.search_form()  # e.g. PT2E uncompiled: no compile per trial
    found = keep_layers_float(folded, data, lambda keep: convert_static(folded, batches, trial, cfg, quiet, keep),
                              100 * cfg.max_drop, lambda f, m: report(ctx, 0.45 + 0.25 * f, m))  # in points
    kept, drop = found.search.kept, found.search.drop
    final, all_int8 = found.final, found.all_int8
    met, conversions = found.search.met, found.conversions
    if trial is not backend:  # the final model (and the all-int8 one it is timed beside) in the chosen form
        final = convert_static(folded, batches, backend, cfg, quiet, kept)
        all_int8 = convert_static(folded, batches, backend, cfg, quiet, ()) if cfg.latency and kept else final
        searched, drop = drop, val_drop(folded, final, data)
        met, conversions = drop <= 100 * cfg.max_drop, conversions + 1 + (all_int8 is not final)
        ctx.log_event(f"max_drop: the search's trial conversions ran as {trial.name} (the same quantization, "
                      f"uncompiled); the final model, {backend.name}, loses {drop:.2f} points on the validation split "
                      f"({searched:.2f} uncompiled)", "info" if drop <= 100 * cfg.max_drop else "warning")
    if not kept:
        ctx.log_event(f"max_drop {100 * cfg.max_drop:g} points: the all-int8 model loses {drop:.2f} points on the validation "
                      f"split; no layer kept float")
    elif met:
        ctx.log_event(f"max_drop {100 * cfg.max_drop:g} points: kept {len(kept)} layer(s) float ({', '.join(kept)}); validation "
                      f"drop {found.start_drop:.2f} -> {drop:.2f} points after {conversions} conversions")
    else:
        ctx.log_event(f"max_drop {100 * cfg.max_drop:g} points not reached: with every quantized layer kept float "
                      f"({len(kept)}) the model still loses {drop:.2f} points on the validation split (all-int8: "
                      f"{found.start_drop:.2f}; ops other than Conv/Linear, e.g. additions and pooling, still run on int8 "
                      f"activations); "
                      f"{conversions} conversions", "warning")
    if cfg.bias_correction:
        ctx.log_event(f"bias correction: applied in each of the {found.conversions} conversions, for the layers "
                      f"each left in int8")
    extra = {"keep_float": kept, "val_drop": drop, "val_drop_all_int8": found.start_drop,
             "max_drop_met": met, "conversions": conversions}
    if cfg.latency and kept:  # the cost of the float layers: the final model timed beside the all-int8 one
        timed = measuring.measure_latency(final.runner, data.test.tensors()[0][:32], reference=all_int8.runner)
        extra.update({f"speedup_vs_all_int8_b{b}": timed[f"speedup_b{b}"] for b in (1, 32)
                      if f"speedup_b{b}" in timed})
    return final, extra


def val_drop(folded: nn.Module, int8: Int8Model, data: Dataset) -> float:
    """Points of top-1 validation accuracy `int8` loses against `folded`, counted as the search counts them."""
    x, y = data.val.tensors()
    return drop_points(correct(logits_of(folded, x), y), correct(logits_of(int8.runner, x), y), len(y))
