"""Quantization: real int8 PTQ, dynamic int8, simulated sweeps, greedy mixed precision, per-layer
sensitivity and QAT. Importing this package registers every method and its task (`quantize.<name>`).

One entry point, `quantize(model, data, config)`, dispatches on the config's type (as torchao's
`quantize_` does); the job runner runs the same methods as tasks by name and plain dict.
"""

from engine.quant import dynamic_int8, fake, mixed, ptq_int8, qat, sensitivity  # noqa: F401 - registers methods
from engine.quant.common import METHODS, QuantRun, quantize
from engine.quant.dynamic_int8 import DynamicInt8Config
from engine.quant.fake import FakeQuantConfig
from engine.quant.mixed import MixedPrecisionConfig
from engine.quant.ptq_int8 import PTQInt8Config
from engine.quant.qat import QATConfig
from engine.quant.sensitivity import SensitivityConfig

__all__ = ["METHODS", "DynamicInt8Config", "FakeQuantConfig", "MixedPrecisionConfig", "PTQInt8Config",
           "QATConfig", "QuantRun", "SensitivityConfig", "quantize"]
