"""The ONNX model that stands for a deployed form, and an ONNX Runtime runner for it.

`onnx_for_form(model, form, data, calibration)` makes the ONNX model of a model deployed as a form; the
`onnxruntime` runtime (engine/deploy/runtimes.py, which imports this module only when a model runs on
ONNX Runtime) times it through `OrtRunner`, and engine/deploy/onnx_export.py exports a checkpoint with it
and checks the file against PyTorch. This module imports no other deploy module: the ONNX toolchain
(onnx, onnxscript, onnxruntime) loads inside the functions that need it.

What the ONNX model is:
- float checkpoints (trained, pruned, structured, distilled): the float model in fp32. Logits agree
  with PyTorch to float rounding (about 1e-6).
- int8 checkpoints: the float structure (BatchNorm folded, holding the dequantized int8 weights),
  quantized by `onnxruntime.quantization.quantize_static` into a QDQ model: per-channel int8 weights
  (7-bit range, `reduce_range`, so AVX2 CPUs without VNNI cannot saturate their int16 sums; torch's x86
  engine keeps its activations to 7 bits for the same reason), uint8 activations calibrated (MinMax) on
  the same calibration split as the checkpoint (the calib_batches, calib_batch_size and seed of the
  step that made it). It is not bit-identical to torch.ao's int8 model (another quantizer and other
  kernels): compare the accuracies. A model quantize_static cannot handle is refused with a message.
  Dynamic int8 checkpoints use `quantize_dynamic` (per-channel int8 weights of MatMul/Gemm).
- packed (simulated low-bit) checkpoints: the float model holding the dequantized weights (and the
  stored activation fake-quant, as float ops). ONNX has no sub-8-bit kernels: it runs in fp32, as the
  simulated model does in PyTorch, and stays `simulated`.

The exporter is torch.onnx's TorchScript-based one (`dynamo=False`, opset 18, dynamic batch size):
on this project's 2-core CPU it exports cnn_s in 0.4 s and resnet18 in 2 s, where the torch.export-based
exporter (`dynamo=True`, with onnxscript) takes 15 s and 9 s for the same graphs with the same logits;
the runtime measures every point of a sweep through an export, so that matters. Both work offline
for the zoo; `exporter="dynamo"` selects the other one (torch deprecates the TorchScript exporter, so
this is where to switch when it goes). An export failure names the operator ONNX lacks, on one line.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from engine.core.errors import ConfigError, UserError

if TYPE_CHECKING:
    from engine.deploy.measure import ModelForm
    from engine.deploy.runtimes import Calibration
    from engine.model.data import Dataset

OPSET = 18
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_EXPORTER = "torchscript"
INPUT, OUTPUT = "input", "logits"
FLOAT_TOLERANCE = 1e-4  # largest logit difference a float export may show
# one export or quantization at a time: they swap process-wide state (file descriptor 2, warning filters,
# the root logger's level), which two threads (the app, background jobs) must not interleave
_LOCK = threading.RLock()


class OnnxExportError(UserError):
    """A model cannot be exported to ONNX, or an int8 model cannot be made a QDQ model."""


# ---------------------------------------------------------------- running ONNX with ONNX Runtime


class OrtRunner(nn.Module):
    """An ONNX Runtime session as a module: logits of a float32 batch, computed by onnxruntime."""

    def __init__(self, onnx_model: bytes, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        self.threads = options.intra_op_num_threads
        self.session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


# ---------------------------------------------------------------- torch -> ONNX


@contextlib.contextmanager
def _stderr_to(sink) -> Iterator[None]:
    """Sends what C++ writes on file descriptor 2 to `sink` (the TorchScript exporter dumps its whole
    graph there when it fails, whatever logging is set to)."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _unsupported_op(e: BaseException) -> str | None:
    """The operator an exporter error names, e.g. 'aten::fft_fft2' or 'aten._linalg_svd'."""
    text = str(e)
    for pattern in (r"operator '([\w:.]+)'", r"OpOverload\(op='([\w.]+)'", r"target=torch\.ops\.([\w.]+)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1)
    return None


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def to_onnx(module: nn.Module, example: Tensor, *, exporter: str = DEFAULT_EXPORTER, name: str = "") -> bytes:
    """`module` (eval mode, CPU) as an ONNX model with input 'input' and output 'logits', batch size free."""
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {', '.join(EXPORTERS)}; got {exporter!r}")
    module = module.eval().to("cpu")
    example = example.to("cpu", torch.float32)
    what = name or type(module).__name__
    try:
        with _LOCK, warnings.catch_warnings(), tempfile.TemporaryFile(mode="w+") as sink:
            warnings.simplefilter("ignore")  # the exporters' deprecation and tracer notices
            if exporter == "torchscript":
                with _stderr_to(sink), torch.no_grad():
                    target = io.BytesIO()
                    torch.onnx.export(module, (example,), target, dynamo=False, opset_version=OPSET,
                                      input_names=[INPUT], output_names=[OUTPUT],
                                      dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
                    return target.getvalue()
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET, verbose=False,
                                        input_names=[INPUT], output_names=[OUTPUT], optimize=True,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
            return program.model_proto.SerializeToString()
    except Exception as e:  # noqa: BLE001 - exporters raise many kinds; the user gets one line
        op = _unsupported_op(e)
        if op:
            raise OnnxExportError(f"{what} cannot be exported to ONNX: the operator {op} has no ONNX "
                                  f"equivalent at opset {OPSET} ({exporter} exporter)") from None
        raise OnnxExportError(f"{what} cannot be exported to ONNX ({exporter} exporter): {_first_line(e)}") from None


# ---------------------------------------------------------------- int8 as ONNX


class _Batches:
    """onnxruntime.quantization's CalibrationDataReader protocol over a list of batches."""

    def __init__(self, batches: list[Tensor]):
        self._it = iter(batches)

    def get_next(self) -> dict | None:
        x = next(self._it, None)
        return None if x is None else {INPUT: x.to(torch.float32).contiguous().numpy()}


def _quantize_files(float_model: bytes, quantize, what: str) -> bytes:
    """Runs an onnxruntime.quantization function on files in a temporary directory (its API is files)."""
    import logging

    from onnxruntime.quantization import quant_pre_process

    root_logger = logging.getLogger()
    with _LOCK, tempfile.TemporaryDirectory() as d:
        level = root_logger.level
        src, pre, dst = (os.path.join(d, f) for f in ("float.onnx", "pre.onnx", "int8.onnx"))
        Path(src).write_bytes(float_model)
        try:
            root_logger.setLevel(logging.ERROR)  # quantize_* log advice on the root logger
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(src, pre)  # shape inference and graph optimisation (folds BatchNorm)
                quantize(pre, dst)
            return Path(dst).read_bytes()
        except Exception as e:  # noqa: BLE001 - the quantizer raises many kinds
            raise OnnxExportError(f"{what} cannot be made an ONNX int8 model by onnxruntime.quantization "
                                  f"({_first_line(e)}); it is refused: measure it on torch, or export the "
                                  f"float checkpoint it came from") from None
        finally:
            root_logger.setLevel(level)


def quantize_qdq(float_model: bytes, batches: list[Tensor], what: str = "the int8 model") -> bytes:
    """A QDQ int8 model: per-channel int8 weights (reduce_range), uint8 activations calibrated (MinMax)
    on `batches`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not batches:
        raise OnnxExportError(f"{what}: the calibration split is empty, so no QDQ model can be calibrated")

    def run(src: str, dst: str) -> None:
        quantize_static(src, dst, _Batches(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)

    return _quantize_files(float_model, run, what)


def quantize_dynamic_onnx(float_model: bytes, what: str = "the dynamic int8 model") -> bytes:
    """Dynamic int8: per-channel int8 weights of MatMul/Gemm, activations quantized as they come."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def run(src: str, dst: str) -> None:
        quantize_dynamic(src, dst, op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                         weight_type=QuantType.QInt8)

    return _quantize_files(float_model, run, what)


# ---------------------------------------------------------------- the ONNX model of a deployed form


@dataclass
class OnnxModel:
    data: bytes  # the serialised ONNX model
    kind: str  # what it computes, in words: "fp32", "int8 QDQ (per-channel weights)", ...
    int8: str = ""  # "static" (QDQ), "dynamic", or "" for a float graph


def int8_mode(form: ModelForm) -> str:
    """'static' or 'dynamic' when the form runs a torch.ao or PT2E int8 model, else ''."""
    if form.runner is None or form.simulated:
        return ""
    if "int8 PT2E" in form.backend:  # a torch.export program (engine/deploy/pt2e.py): static, like FX's
        return "static"
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.quantized.dynamic as nnqd

    modules = list(form.runner.modules())
    if any(isinstance(m, nnqd.Linear) for m in modules):
        return "dynamic"
    if any(isinstance(m, (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnq.Linear, nnq.Quantize)) for m in modules):
        return "static"
    return ""


def onnx_for_form(model: nn.Module, form: ModelForm, data: Dataset, calibration: Calibration,
                  exporter: str = DEFAULT_EXPORTER) -> OnnxModel:
    """The ONNX model that stands for `model` deployed as `form` (see the module docstring); a static int8
    form is calibrated on `calibration`'s split of `data`."""
    example = data.test.tensors()[0][:2]
    name = str(getattr(model, "arch", "") or type(model).__name__)
    mode = int8_mode(form)
    if mode:
        float_model = to_onnx(model, example, exporter=exporter, name=name)  # the float structure, dequantized
        if mode == "dynamic":
            return OnnxModel(quantize_dynamic_onnx(float_model, f"the dynamic int8 {name}"),
                             "int8 dynamic (per-channel MatMul/Gemm weights)", "dynamic")
        batches = calibration.split(data)
        return OnnxModel(quantize_qdq(float_model, batches, f"the int8 {name}"),
                         "int8 QDQ (per-channel weights)", "static")
    onnx = to_onnx(form.runner or model, example, exporter=exporter, name=name)
    if form.simulated:
        return OnnxModel(onnx, "fp32 (simulated low-bit weights, dequantized; no low-bit kernel ran)")
    return OnnxModel(onnx, "fp32")
