"""ONNX export of any checkpoint, checked against PyTorch by running ONNX Runtime on the test split.

`export_checkpoint(directory, out)` loads a checkpoint of any weights format (engine.deploy.formats.load_variant),
makes the ONNX model that stands for it (engine.deploy.onnx.onnx_for_form, also what the `onnxruntime`
runtime runs; the module docstring there says what that model is for float, int8 and packed checkpoints),
runs it with ONNX Runtime on every test image, and compares with what PyTorch runs for that checkpoint: the
largest absolute logit difference and both accuracies.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from engine.core.errors import ConfigError
from engine.deploy.formats import load_variant
from engine.deploy.onnx import DEFAULT_EXPORTER, FLOAT_TOLERANCE, OPSET, OrtRunner, onnx_for_form
from engine.deploy.runtimes import Calibration
from engine.model.checkpoint import META, WEIGHTS, dataset_of
from engine.model.data import DEFAULT_ROOT
from engine.model.train import scores

# ---------------------------------------------------------------- a checkpoint, exported and checked


@dataclass
class OnnxExport:
    path: str | None  # where the file was written; None when `out` was not given
    data: bytes = field(repr=False)  # the ONNX model
    file_name: str  # a name for the file, e.g. "cnn_s-digits-sparsity-0.500.onnx"
    max_abs_diff: float  # largest |logit difference| between ONNX Runtime and PyTorch, over the test split
    accuracy_torch: float  # test accuracy of what PyTorch runs for this checkpoint
    accuracy_ort: float  # test accuracy of the ONNX model on ONNX Runtime
    images: int  # test images compared
    kind: str  # what the ONNX model computes
    weights_format: str  # the checkpoint's: float, int8 or packed
    simulated: bool  # the checkpoint's low-bit weights are simulated (the ONNX model runs them in fp32)
    exporter: str
    opset: int = OPSET
    check: str = ""  # the comparison in words

    def to_dict(self) -> dict:
        """Everything but the model bytes (for --json and the store)."""
        d = asdict(self)
        d.pop("data")
        d["file_bytes"] = len(self.data)
        return d


def _logits(runner: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    with torch.inference_mode():
        return torch.cat([runner(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])


def default_file_name(directory: str | Path) -> str:
    """'<checkpoint directory name>.onnx', prefixed by its parent's name for a sweep level's sub-directory."""
    d = Path(directory).resolve()
    name = d.name if not re.match(r"^[a-z_]+-[\d.]+$", d.name) else f"{d.parent.name}-{d.name}"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name or "model") + ".onnx"


def check_out(out: str | Path, directory: str | Path, overwrite: bool = False) -> Path:
    """Refuses an output file that exists (unless `overwrite`), is a directory, or is the checkpoint's own file."""
    target = Path(out).expanduser().resolve()
    source = Path(directory).expanduser().resolve()
    if target in (source / WEIGHTS, source / META) or target == source:
        raise ConfigError(f"out {out} is the checkpoint's own file; choose another path")
    if target.is_dir():
        raise ConfigError(f"out {out} is a directory; give a file name such as model.onnx")
    if target.exists() and not overwrite:
        raise ConfigError(f"out {out} already exists; choose another file, or pass --overwrite to replace it")
    if not target.parent.is_dir():
        raise ConfigError(f"out {out}: the folder {target.parent} does not exist")
    return target


def export_checkpoint(directory: str, out: str | None = None, *, exporter: str = DEFAULT_EXPORTER,
                      data_root: str = DEFAULT_ROOT, overwrite: bool = False) -> OnnxExport:
    """Exports a checkpoint of any weights format to ONNX and checks it on the test split.

    Writes the file to `out` when given (an existing file only with `overwrite`); either way the bytes are
    in `.data`. Raises OnnxExportError (a UserError, one line) naming the operator ONNX lacks, or why an
    int8 model could not be made a QDQ model."""
    target = check_out(out, directory, overwrite) if out else None
    model, form, meta = load_variant(directory)
    data = dataset_of(meta, data_root)
    onnx = onnx_for_form(model, form, data, Calibration.of_checkpoint(meta), exporter)
    x, y = data.test.tensors()
    reference = _logits((form.runner or model).eval(), x)
    got = _logits(OrtRunner(onnx.data), x)
    diff = float((reference - got).abs().max()) if len(y) else math.nan
    acc_torch, acc_ort = scores(reference, y)["accuracy"], scores(got, y)["accuracy"]
    against = "torch.ao's int8 model" if onnx.int8 else "PyTorch"
    check = f"max |logit difference| {diff:.3g} against {against} over {len(y)} test images"
    if not onnx.int8:
        check += f" ({'within' if diff <= FLOAT_TOLERANCE else 'ABOVE'} {FLOAT_TOLERANCE:g})"
    if target is not None:
        target.write_bytes(onnx.data)
    return OnnxExport(path=str(target) if target else None, data=onnx.data, file_name=default_file_name(directory),
                      max_abs_diff=diff, accuracy_torch=acc_torch, accuracy_ort=acc_ort, images=len(y),
                      kind=onnx.kind, weights_format=meta.weights_format, simulated=form.simulated,
                      exporter=exporter, check=check)
