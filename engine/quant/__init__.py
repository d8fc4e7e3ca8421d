"""Quantization: real int8 PTQ, dynamic int8, simulated sweeps, greedy mixed precision, per-layer
sensitivity and QAT. Importing this package imports every module in it, so each method file registers
itself (`engine.methods.family_methods("quantize")`, and the task `quantize.<name>`).

One entry point, `quantize(model, data, config)`, dispatches on the config's type (as torchao's
`quantize_` does); the job runner runs the same methods as tasks by name and plain dict.
"""

from engine.methods import import_family_modules

import_family_modules(__name__, __path__)

from engine.quant.common import QuantRun, quantize  # noqa: E402
from engine.quant.dynamic_int8 import DynamicInt8Config  # noqa: E402
from engine.quant.fake import FakeQuantConfig  # noqa: E402
from engine.quant.mixed import MixedPrecisionConfig  # noqa: E402
from engine.quant.ptq_int8 import PTQInt8Config  # noqa: E402
from engine.quant.qat import QATConfig  # noqa: E402
from engine.quant.sensitivity import SensitivityConfig  # noqa: E402

__all__ = ["DynamicInt8Config", "FakeQuantConfig", "MixedPrecisionConfig", "PTQInt8Config", "QATConfig",
           "QuantRun", "SensitivityConfig", "quantize"]
