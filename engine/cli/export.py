"""`python -m engine export --checkpoint DIR --format onnx [--out FILE]`: a checkpoint as an ONNX file.

The export is checked before it is written: ONNX Runtime runs it on the test split and the largest
logit difference from PyTorch and both accuracies are printed (engine/deploy/onnx.py). Options are
generated from `ExportConfig` like every other command's.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from engine.cli.common import print_json
from engine.core.config import Config, param
from engine.core.errors import ConfigError
from engine.core.options import OptionSet
from engine.deploy.onnx_export import default_file_name, export_checkpoint
from engine.model.data import DEFAULT_ROOT

FORMATS = ("onnx",)


@dataclass
class ExportConfig(Config):
    checkpoint: str = param("", "checkpoint directory to export (float, pruned, distilled, int8 or packed)", role="input")
    format: str = param("onnx", "the file format", choices=FORMATS)
    out: str | None = param(None, "the file to write (default: <checkpoint directory>.onnx beside it)", role="output")
    overwrite: bool = param(False, "replace --out if it exists", role="output")
    exporter: str = param("torchscript", "torch.onnx exporter: torchscript (dynamo=False, fast) or dynamo "
                                         "(torch.export-based)", choices=("torchscript", "dynamo"))
    data_root: str = param(DEFAULT_ROOT, "where torchvision datasets live (the test split checks the export)", role="machine")

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint must name a checkpoint directory")


EXPORT_OPTIONS = OptionSet.of({"export": ExportConfig})


def default_out(checkpoint: str) -> str:
    """<checkpoint directory>.onnx, beside the directory (a sweep level gets its run's name in front)."""
    return str(Path(checkpoint).expanduser().resolve().parent / default_file_name(checkpoint))


def cmd_export(args: argparse.Namespace) -> None:
    cfg = ExportConfig.from_dict(EXPORT_OPTIONS.values(args, "export"))
    result = export_checkpoint(cfg.checkpoint, cfg.out or default_out(cfg.checkpoint), exporter=cfg.exporter,
                               data_root=cfg.data_root, overwrite=cfg.overwrite)
    if args.json:
        print_json(result.to_dict())
        return
    print(f"wrote {result.path} ({len(result.data):,} B, ONNX opset {result.opset}, {result.kind}"
          f"{'; simulated low-bit weights run in fp32' if result.simulated else ''})")
    print(f"check: {result.check}")
    print(f"accuracy: PyTorch {result.accuracy_torch:.4f}, ONNX Runtime {result.accuracy_ort:.4f}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX, checked with ONNX Runtime on the test split")
    EXPORT_OPTIONS.add_to(p)
    p.add_argument("--json", action="store_true", help="print the result as strict JSON (NaN as null)")
    p.set_defaults(func=cmd_export)
