"""Checkpoint directories and safe loading of users' weights.

A checkpoint is a directory with `model.safetensors` (the state_dict) and `meta.json`: the
architecture and its arguments, the dataset, class names, the training config and any notes a
method adds. Users' own `.safetensors` or `.pt/.pth` state_dicts load into a registered
architecture with `torch.load(weights_only=True)`; nothing is ever unpickled beyond tensors.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from engine.errors import CheckpointError
from engine.models import build_model

WEIGHTS = "model.safetensors"
META = "meta.json"
FORMAT_VERSION = 1


@dataclass
class CheckpointMeta:
    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    dataset: str
    class_names: list[str]
    width: float = 1.0
    train_config: dict = field(default_factory=dict)
    # "shape" = rebuild modules from the stored tensor shapes (structurally pruned models)
    layer_shapes: str = "arch"
    history: list[dict] = field(default_factory=list)  # what produced it: [{"method": ..., "params": ...}]
    created: float = field(default_factory=time.time)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CheckpointMeta:
        known = {f for f in cls.__dataclass_fields__}
        missing = {"arch", "num_classes", "in_channels", "image_size", "dataset", "class_names"} - set(d)
        if missing:
            raise CheckpointError(f"{META} lacks {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in d.items() if k in known})


def state_dict_bytes(model: nn.Module) -> bytes:
    """The model's state_dict serialised as safetensors (what a checkpoint stores)."""
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return st_save(sd)


def save_checkpoint(directory: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / WEIGHTS).write_bytes(state_dict_bytes(model))
    (d / META).write_text(json.dumps(meta.to_dict(), indent=2))
    return d


def read_meta(directory: str | Path) -> CheckpointMeta:
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d} does not exist")
    if not (d / META).is_file() or not (d / WEIGHTS).is_file():
        raise CheckpointError(f"{d} is not a checkpoint: it needs {WEIGHTS} and {META}")
    try:
        return CheckpointMeta.from_dict(json.loads((d / META).read_text()))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{d / META} is not valid JSON: {e}") from None


def load_checkpoint(directory: str | Path) -> tuple[nn.Module, CheckpointMeta]:
    meta = read_meta(directory)
    model = build_model(meta.arch, meta.num_classes, meta.in_channels, meta.image_size, meta.width)
    sd = read_state_dict((Path(directory) / WEIGHTS).read_bytes(), WEIGHTS)
    if meta.layer_shapes == "shape":
        resize_to_state_dict(model, sd)
    load_into(model, sd)
    return model.eval(), meta


# ---------------------------------------------------------------- users' weight files


def read_state_dict(data: bytes, filename: str) -> dict[str, torch.Tensor]:
    """Parses a user's weights file, chosen by its extension: .safetensors, or .pt/.pth state_dict.

    `filename` is only inspected for its suffix; it never becomes a path.
    """
    suffix = Path(filename).suffix.lower()
    if suffix == ".safetensors":
        try:
            return st_load(data)
        except Exception as e:  # noqa: BLE001 - safetensors raises several kinds
            raise CheckpointError(f"{filename} is not a valid safetensors file: {e}") from None
    if suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - weights_only refuses with several exception types
            raise CheckpointError(
                f"{filename} could not be loaded as a plain state_dict (only tensors are accepted, "
                f"nothing is unpickled): {str(e).splitlines()[0]}") from None
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{filename} does not hold a state_dict (a mapping of names to tensors)")
        return obj
    raise CheckpointError(f"unsupported weights file '{filename}': use .safetensors, .pt or .pth")


def load_into(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Loads a state_dict strictly; a mismatch names the layers that do not fit."""
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    own = model.state_dict()
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise CheckpointError("shape mismatch in " + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
        raise CheckpointError("weights do not match the architecture: " + "; ".join(parts))
    model.load_state_dict(sd)


def resize_to_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Rebuilds Conv/BN/Linear modules whose stored shapes differ (e.g. after channel pruning)."""
    for name, module in list(model.named_modules()):
        w = sd.get(f"{name}.weight")
        if w is None:
            continue
        new: nn.Module | None = None
        if isinstance(module, nn.Conv2d) and w.shape != module.weight.shape:
            groups = module.groups if module.groups == 1 else w.shape[0]  # depthwise stays depthwise
            new = nn.Conv2d(w.shape[1] * groups, w.shape[0], module.kernel_size, module.stride, module.padding,
                            module.dilation, groups, module.bias is not None)
        elif isinstance(module, nn.BatchNorm2d) and w.shape != module.weight.shape:
            new = nn.BatchNorm2d(w.shape[0], module.eps, module.momentum)
        elif isinstance(module, nn.Linear) and w.shape != module.weight.shape:
            new = nn.Linear(w.shape[1], w.shape[0], module.bias is not None)
        if new is not None:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, new)


def load_user_weights(arch: str, data: bytes, filename: str, *, num_classes: int, in_channels: int,
                      image_size: int, width: float = 1.0) -> nn.Module:
    """Builds a registered architecture and loads a user's weights into it."""
    model = build_model(arch, num_classes, in_channels, image_size, width)
    load_into(model, read_state_dict(data, filename))
    return model.eval()
