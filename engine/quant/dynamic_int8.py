"""Dynamic int8 quantization, for Linear-heavy models: int8 weights, activations quantized on the fly.

The dynamic scheme of PyTorch's quantization (as used for BERT in Zafrir et al., "Q8BERT: Quantized
8Bit BERT", 2019): Linear weights are stored in int8 per channel, and each activation is quantized
with a range computed at run time, so there is no calibration. Convolutions stay in float.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.config import check_choice
from engine.context import RunContext
from engine.data import Dataset
from engine.quant.backend import ENGINES, INT8_BACKENDS
from engine.quant.common import QuantRun, fold_batchnorm, point_extras, quant_method, report
from engine.quant.ptq_int8 import measure_int8
from engine.tasks import measure_point


@dataclass
class DynamicInt8Config(QuantRun):
    engine: str = "x86"  # quantized kernels: x86 (fbgemm, or oneDNN where faster) | onednn | qnnpack
    backend: str = "fx"  # the int8 backend implementation (see engine/quant/backend.py)
    out: str | None = None  # also write the int8 model (torch.save of its state_dict) to this file

    def validate(self) -> None:
        check_choice("engine", self.engine, ENGINES)
        check_choice("backend", self.backend, INT8_BACKENDS.names())


@quant_method("dynamic_int8", DynamicInt8Config, "dynamic int8 quantization of Linear layers")
def dynamic_int8(model: nn.Module, data: Dataset, cfg: DynamicInt8Config, ctx: RunContext) -> list[dict]:
    folded = fold_batchnorm(model)
    params = cfg.method_params()
    report(ctx, 0.0, "measuring fp32")
    reference = measure_point(ctx, folded, data, method="dynamic_int8", params=params, stage="fp32",
                              latency=cfg.latency, **point_extras(cfg))
    report(ctx, 0.5, "quantizing Linear layers")
    int8 = INT8_BACKENDS.get(cfg.backend).dynamic(folded, cfg.engine)
    point = measure_int8(ctx, folded, data, int8, method="dynamic_int8", params=params, stage="int8",
                         latency=cfg.latency, out=cfg.out, float_expected=True, **point_extras(cfg))
    report(ctx, 1.0, "done")
    return [reference, point]
