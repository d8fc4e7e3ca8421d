"""Runtimes: what runs a model when it is measured, for accuracy and latency alike.

- `torch`: the deployed form as it is: PyTorch eager for float models, the torch.ao int8 model for
  int8 checkpoints, the float model with dequantized weights for simulated (packed) low-bit ones.
- `onnxruntime`: that form exported to ONNX (engine/deploy/onnx.py) and run by an ONNX Runtime
  `InferenceSession` on the CPU (CPUExecutionProvider, all graph optimisations, sequential execution)
  with `intra_op_num_threads = torch.get_num_threads()`, so both runtimes get the same cores. The ONNX
  model per weights format:
  - float (trained, pruned, structured, distilled): the float model, in fp32;
  - int8, static: a QDQ model made by `onnxruntime.quantization.quantize_static` from the same
    calibration split the int8 checkpoint was calibrated on, per-channel weights; refused with a
    message if that fails;
  - int8, dynamic: `quantize_dynamic` (per-channel int8 weights of MatMul/Gemm, activations on the fly);
  - packed (simulated low-bit weights): the float model holding the dequantized weights (and the
    stored activation fake-quant, as float ops): ONNX Runtime runs it in fp32, no low-bit kernel, so
    the point stays `simulated`.
- `torch_bf16`: a float form in bfloat16, weights and compute (engine/deploy/bf16.py), on CPUs with
  AVX512-BF16 or AMX-BF16; refused with the reason elsewhere, and for int8 and simulated checkpoints.
  Its size counts 16-bit parameters, and it is timed beside the task's fp32 baseline (a speed-up).

Accuracy is computed from the runtime's own logits (int8 models differ between runtimes), and
latency is timed by the same helper as torch's (engine.deploy.measure.measure_latency: batch 1 and 32, the
same warm-up and limits), so the two are comparable. `file_bytes` on onnxruntime is the size of the
ONNX model that ran.

A task's `runtime` setting reaches every `measure()` call inside it through `task_scope` (a context
variable), so a method needs no code of its own to be measured on another runtime. A latency dict
that a method timed once on torch and passes to `measure()` for many points is torch's: on another
runtime every point is timed on that runtime instead.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from engine.core.errors import ConfigError, quoted
from engine.core.registry import Registry
from engine.deploy.bf16 import bf16_form
from engine.model.data import calibration_batches

if TYPE_CHECKING:
    from engine.deploy.measure import ModelForm
    from engine.model.checkpoint import CheckpointMeta
    from engine.model.data import Dataset

DEFAULT_RUNTIME = "torch"


# ---------------------------------------------------------------- the calibration split of int8 models


@dataclass(frozen=True)
class Calibration:
    """Which calibration batches set int8 activation ranges (ptq_int8's and qat's defaults)."""

    batches: int = 10
    batch_size: int = 32
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict | None) -> Calibration:
        """From a config's or a lineage step's settings: calib_batches, calib_batch_size and seed."""
        params = params if isinstance(params, dict) else {}

        def pick(key: str, default: int) -> int:
            value = params.get(key)
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= (0 if key == "seed" else 1)
            return value if ok else default

        return cls(pick("calib_batches", cls.batches), pick("calib_batch_size", cls.batch_size),
                   pick("seed", cls.seed))

    @classmethod
    def of_checkpoint(cls, meta: CheckpointMeta) -> Calibration:
        """The calibration of the step that made the checkpoint's weights (the last lineage step)."""
        last = meta.lineage[-1] if meta.lineage else {}
        return cls.from_params(last.get("params"))

    def split(self, data: Dataset) -> list[Tensor]:
        """The calibration batches themselves (engine.methods.quant.common.calibration_batches)."""
        return calibration_batches(data, self.batches, self.batch_size, self.seed)


# ---------------------------------------------------------------- which runtime is active

_RUNTIME: ContextVar[str] = ContextVar("runtime", default=DEFAULT_RUNTIME)
_CALIBRATION: ContextVar[Calibration | None] = ContextVar("calibration", default=None)


def active() -> str:
    """The runtime measure() uses when it is not told one: the running task's, else torch."""
    return _RUNTIME.get()


def calibration() -> Calibration:
    """The calibration split an int8 model made for another runtime is calibrated on."""
    return _CALIBRATION.get() or Calibration()


@contextlib.contextmanager
def using(runtime: str | None = None, calibration: Calibration | None = None) -> Iterator[None]:
    """Within the block, measure() runs on `runtime` and int8 models calibrate on `calibration`
    (either left as it is when None)."""
    if runtime is not None:
        check_runtime(runtime)
    tokens = []
    try:
        if runtime is not None:
            tokens.append((_RUNTIME, _RUNTIME.set(runtime)))
        if calibration is not None:
            tokens.append((_CALIBRATION, _CALIBRATION.set(calibration)))
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def task_scope(cfg: Any) -> contextlib.AbstractContextManager[None]:
    """The scope a task runs in: its config's `runtime` (when it has one runtime) and the calibration
    settings it names (calib_batches, calib_batch_size, seed)."""
    runtime = getattr(cfg, "runtime", None)
    to_dict = getattr(cfg, "to_dict", None)
    params = to_dict() if callable(to_dict) else {}
    return using(runtime if isinstance(runtime, str) else None, Calibration.from_params(params))


def check_runtime(name: str) -> None:
    if name not in RUNTIME_NAMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIME_NAMES)}; got {quoted(name)}")


def check_runtimes(field: str, names: tuple[str, ...]) -> None:
    """A list of runtimes: each known, none twice, at least one."""
    if not names:
        raise ConfigError(f"{field} must name at least one runtime: {', '.join(RUNTIME_NAMES)}")
    for name in names:
        if name not in RUNTIME_NAMES:
            raise ConfigError(f"{field} must list runtimes from {', '.join(RUNTIME_NAMES)}; got {quoted(name)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{field} lists a runtime twice: {', '.join(names)}")


# ---------------------------------------------------------------- the runtimes


class Runtime(ABC):
    name: str
    description: str

    @abstractmethod
    def deploy(self, model: nn.Module, form: ModelForm, data: Dataset) -> ModelForm:
        """The form that runs on this runtime: its runner computes the logits and is what latency times;
        storage (weight bits, groups) stays the checkpoint's, `artifact` is what this runtime loads."""


RUNTIMES: Registry[Runtime] = Registry("runtime")


class TorchRuntime(Runtime):
    name = "torch"
    description = "PyTorch eager (float), torch.ao (int8), on the CPU"

    def deploy(self, model: nn.Module, form: ModelForm, data: Dataset) -> ModelForm:
        return form


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    description = "ONNX Runtime (CPUExecutionProvider): fp32, QDQ int8 for int8 checkpoints"

    def deploy(self, model: nn.Module, form: ModelForm, data: Dataset) -> ModelForm:
        # the ONNX toolchain (onnx, onnxscript, onnxruntime) loads only when a model runs on ONNX Runtime
        from engine.deploy import onnx as onnx_export

        onnx = onnx_export.onnx_for_form(model, form, data, calibration())
        return replace(form, runner=onnx_export.OrtRunner(onnx.data),
                       backend=f"onnxruntime {onnx_export.ort_version()} {onnx.kind}",
                       artifact=onnx.data)


class TorchBf16Runtime(Runtime):
    name = "torch_bf16"
    description = "PyTorch eager in bfloat16 (weights and compute), float models on CPUs with BF16 or AMX"

    def deploy(self, model: nn.Module, form: ModelForm, data: Dataset) -> ModelForm:
        return bf16_form(model, form)


RUNTIMES.register("torch")(TorchRuntime())
RUNTIMES.register("onnxruntime")(OnnxRuntime())
RUNTIMES.register("torch_bf16")(TorchBf16Runtime())
# runtimes whose forms are timed beside the task's torch baseline (same process, same eager dispatcher), so
# their points carry a speed-up over it; ONNX Runtime's are timed on their own
PAIRED_RUNTIMES = ("torch", "torch_bf16")
RUNTIME_NAMES: tuple[str, ...] = tuple(RUNTIMES.names())  # what a `runtime` setting may name


def deploy(runtime: str, model: nn.Module, form: ModelForm, data: Dataset) -> ModelForm:
    """The form that `runtime` runs for a model deployed as `form` (see the module docstring)."""
    check_runtime(runtime)
    return RUNTIMES.get(runtime).deploy(model, form, data)
