"""Quantization: real int8 PTQ, dynamic int8, simulated sweeps, greedy mixed precision, per-layer
sensitivity and QAT. Importing this package imports every module in it, so each method file registers
itself (`engine.methods.registry.family_methods("quantize")`, and the task `quantize.<name>`); the family
declares itself here, once.

One entry point, `quantize(model, data, config)`, dispatches on the config's type (as torchao's
`quantize_` does); the job runner runs the same methods as tasks by name and plain dict.
"""

from engine.methods.quant.common import asymmetric_alias
from engine.methods.registry import import_family_modules, register_family

register_family("quantize", package=__name__, title="Quantize", from_checkpoint=True, cli_options=asymmetric_alias,
                description="quantize a checkpoint: int8, simulated sweeps, mixed precision, QAT")
import_family_modules(__name__, __path__)

from engine.methods.quant.common import QuantRun, quantize  # noqa: E402
from engine.methods.quant.dynamic_int8 import DynamicInt8Config  # noqa: E402
from engine.methods.quant.fake import FakeQuantConfig  # noqa: E402
from engine.methods.quant.mixed import MixedPrecisionConfig  # noqa: E402
from engine.methods.quant.ptq_int8 import PTQInt8Config  # noqa: E402
from engine.methods.quant.qat import QATConfig  # noqa: E402
from engine.methods.quant.sensitivity import SensitivityConfig  # noqa: E402

__all__ = ["DynamicInt8Config", "FakeQuantConfig", "MixedPrecisionConfig", "PTQInt8Config", "QATConfig",
           "QuantRun", "SensitivityConfig", "quantize"]
