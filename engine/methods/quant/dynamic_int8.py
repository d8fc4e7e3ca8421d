"""Dynamic int8 quantization, for Linear-heavy models: int8 weights, activations quantized on the fly.

The dynamic scheme of PyTorch's quantization (as used for BERT in Zafrir et al., "Q8BERT: Quantized
8Bit BERT", 2019): Linear weights are stored in int8 per channel, and each activation is quantized
with a range computed at run time, so there is no calibration. Convolutions stay in float. The run
records the fp32 reference (baseline) and the int8 model (variant, saved as an `int8` checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.point import Point
from engine.deploy.int8 import ENGINES, INT8_BACKENDS
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant.common import Output, QuantRun, baseline_point, quant_method, report
from engine.methods.quant.ptq_int8 import int8_point
from engine.model.data import Dataset
from engine.model.outputs import SaveOptions


@dataclass
class DynamicInt8Config(SaveOptions, QuantRun):
    engine: str = param("x86", "quantized kernels: x86 (fbgemm, or oneDNN where faster), onednn or qnnpack",
                        choices=ENGINES)
    backend: str = param("fx", "the int8 backend implementation (see engine/deploy/int8.py)",
                         choices=tuple(INT8_BACKENDS.names()))


@quant_method("dynamic_int8", DynamicInt8Config, "dynamic int8 quantization of Linear layers")
def dynamic_int8(model: nn.Module, data: Dataset, cfg: DynamicInt8Config, ctx: RunContext,
                 output: Output) -> list[Point]:
    folded = fold_batchnorm(model)
    report(ctx, 0.0, "measuring fp32")
    reference = baseline_point(ctx, folded, data, cfg, output, method="dynamic_int8", latency=cfg.latency)
    report(ctx, 0.5, "quantizing Linear layers")
    int8 = INT8_BACKENDS.get(cfg.backend).dynamic(folded, cfg.engine)
    point = int8_point(ctx, folded, data, int8, output, method="dynamic_int8", params=cfg.method_params(),
                       mode="dynamic", engine=cfg.engine, backend=cfg.backend, latency=cfg.latency,
                       float_expected=True)
    report(ctx, 1.0, "done")
    return [reference, point]
