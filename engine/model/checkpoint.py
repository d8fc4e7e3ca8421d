"""Checkpoint directories and safe loading of users' weights.

A checkpoint is a directory with `model.safetensors` (the state_dict) and `meta.json`: the
architecture and its arguments, the dataset, class names, the training config and any notes a
method adds. Users' own `.safetensors` or `.pt/.pth` state_dicts load into a registered
architecture with `torch.load(weights_only=True)`; nothing is ever unpickled beyond tensors.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from engine.core.errors import CheckpointError, ConfigError, quoted
from engine.model.data import DEFAULT_ROOT, Dataset, load_dataset, with_normalisation
from engine.model.reused_head import is_reused_head
from engine.model.zoo import MODELS, build_model, input_defaults

WEIGHTS = "model.safetensors"
META = "meta.json"
FORMAT_VERSION = 2  # 2: lineage steps and a weights format; 1: "history" (read as lineage)
READABLE_VERSIONS = (1, 2)
WEIGHT_FORMATS = ("float", "int8", "packed")  # how model.safetensors stores the weights (see README)
MAX_CLASSES = 100_000
MAX_IMAGE_SIZE = 1024


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
    # what produced it, oldest first: [{"family", "method", "params", "input_checkpoint"}, ...]
    lineage: list[dict] = field(default_factory=list)
    # "float": a plain state_dict; "int8": a converted int8 model; "packed": low-bit weights packed at
    # their width (see engine/deploy/formats.py); `quant` then says how to rebuild the model
    weights_format: str = "float"
    quant: dict = field(default_factory=dict)
    # the normalisation the model's images were given when it differs from the dataset's own (an
    # architecture by name on an image folder: its weights' mean/std); empty = the dataset's
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CheckpointMeta:
        """Validates meta.json like a config: types, limits and a known format version."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{META} must hold a JSON object, got {type(d).__name__}")
        missing = {"arch", "num_classes", "in_channels", "image_size", "dataset", "class_names"} - set(d)
        if missing:
            raise CheckpointError(f"{META} lacks {', '.join(sorted(missing))}")
        version = d.get("format_version", 1)
        if version not in READABLE_VERSIONS:
            raise CheckpointError(f"{META} has format_version {quoted(version)}; this code reads versions "
                                  f"{', '.join(map(str, READABLE_VERSIONS))} (a newer Compression Lab wrote it?)")
        d = dict(d)
        if "history" in d:  # format 1
            d.setdefault("lineage", d.pop("history"))
        _check_type("arch", d["arch"], str)
        if is_reused_head(d["arch"]):  # a composite's name carries its parts: a bad one is named before building
            try:
                MODELS.get(d["arch"])
            except ConfigError as e:
                raise CheckpointError(f"{META}: arch: {e}") from None
        _check_type("dataset", d["dataset"], str)
        for name, hi in (("num_classes", MAX_CLASSES), ("in_channels", 64), ("image_size", MAX_IMAGE_SIZE)):
            _check_type(name, d[name], int)
            if not 1 <= d[name] <= hi:
                raise CheckpointError(f"{META}: {name} must be in [1, {hi}], got {d[name]}")
        if not isinstance(d["class_names"], list) or not all(isinstance(c, str) for c in d["class_names"]):
            raise CheckpointError(f"{META}: class_names must be a list of names")
        if len(d["class_names"]) not in (0, d["num_classes"]):
            raise CheckpointError(f"{META}: class_names has {len(d['class_names'])} names for "
                                  f"{d['num_classes']} classes")
        if "width" in d:
            _check_type("width", d["width"], (int, float))
            if not 0 < d["width"] <= 16:
                raise CheckpointError(f"{META}: width must be in (0, 16], got {d['width']}")
        for name, kind in (("train_config", dict), ("lineage", list), ("quant", dict), ("layer_shapes", str),
                           ("weights_format", str)):
            if name in d:
                _check_type(name, d[name], kind)
        for name in ("mean", "std"):
            values = d.get(name, [])
            if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                       for v in values):
                raise CheckpointError(f"{META}: {name} must be a list of numbers, got {quoted(values)}")
            if values and len(values) != d["in_channels"]:
                raise CheckpointError(f"{META}: {name} has {len(values)} values for {d['in_channels']} channels")
        if len(d.get("mean", [])) != len(d.get("std", [])) or any(v <= 0 for v in d.get("std", [])):
            raise CheckpointError(f"{META}: mean and std must both be given, one per channel, std positive")
        if d.get("layer_shapes", "arch") not in ("arch", "shape"):
            raise CheckpointError(f"{META}: layer_shapes must be arch or shape, got {quoted(d['layer_shapes'])}")
        if d.get("weights_format", "float") not in WEIGHT_FORMATS:
            raise CheckpointError(f"{META}: weights_format must be one of {', '.join(WEIGHT_FORMATS)}, "
                                  f"got {quoted(d['weights_format'])}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def derived(self, *, family: str, method: str, params: dict, input_checkpoint: str, level: float | None = None,
                level_name: str = "", **changes) -> CheckpointMeta:
        """The meta of a model made from this one by a method: the same data, one lineage step more."""
        step = {"family": family, "method": method, "params": params, "input_checkpoint": input_checkpoint}
        if level is not None:
            step.update(level=level, level_name=level_name)
        return replace(self, lineage=[*self.lineage, step], created=time.time(), format_version=FORMAT_VERSION,
                       **changes)


def _check_type(name: str, value, kind) -> None:
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, (int, float)))
    if not ok:
        want = {int: "a whole number", str: "text", dict: "an object", list: "a list"}.get(kind, "a number")
        raise CheckpointError(f"{META}: {name} must be {want}, got {quoted(value)}")


def describe_lineage(meta: CheckpointMeta) -> str:
    """'train -> kd -> global_unstructured (sparsity 0.5) -> ptq_int8': how the model was made."""
    words = []
    for step in meta.lineage:
        method = step.get("method", "?")
        level = step.get("level")
        words.append(f"{method} ({step.get('level_name', 'level')} {level:g})" if isinstance(level, int | float)
                     else str(method))
    return " -> ".join(words) or "(no recorded lineage)"


def state_dict_bytes(model: nn.Module) -> bytes:
    """The model's state_dict serialised as safetensors (what a checkpoint stores)."""
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return st_save(sd)


def save_checkpoint(directory: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """A float model as a checkpoint directory."""
    return write_checkpoint(directory, state_dict_bytes(model), meta)


def write_checkpoint(directory: str | Path, weights: bytes, meta: CheckpointMeta) -> Path:
    """A checkpoint directory from serialised weights of any format (meta.weights_format says which)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / WEIGHTS).write_bytes(weights)
    write_meta(d, meta)
    return d


def write_meta(directory: str | Path, meta: CheckpointMeta) -> Path:
    """The one writer of meta.json."""
    path = Path(directory) / META
    path.write_text(json.dumps(meta.to_dict(), indent=2))
    return path


Tag = TypeVar("Tag")


def saved_checkpoints(rows: Iterable[tuple[str, Tag]], float_only: bool = True
                      ) -> Iterator[tuple[str, Tag, CheckpointMeta]]:
    """(path, tag, meta) for each readable checkpoint directory among `rows` of (path, tag) (the tag is
    the caller's, e.g. the run that saved it), in the order given, each directory once (by its real
    path). Gone, unreadable or foreign folders are left out; so are int8 and packed ones with
    `float_only` (compression methods start from float weights; those are deployable ends)."""
    seen = set()
    for path, tag in rows:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            meta = read_meta(path)
        except Exception:  # noqa: BLE001 - a deleted or foreign folder is simply not offered
            continue
        if float_only and meta.weights_format != "float":
            continue
        yield str(path), tag, meta


def read_meta(directory: str | Path) -> CheckpointMeta:
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d} does not exist")
    if not (d / META).is_file() or not (d / WEIGHTS).is_file():
        raise CheckpointError(f"{d} is not a checkpoint: it needs {WEIGHTS} and {META}")
    try:
        return CheckpointMeta.from_dict(json.loads((d / META).read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{d / META} is not valid JSON: {e}") from None


def load_checkpoint(directory: str | Path) -> tuple[nn.Module, CheckpointMeta]:
    """A float checkpoint's model (eval mode) and meta; engine.model.outputs.load_variant reads every format."""
    meta = read_meta(directory)
    if meta.weights_format != "float":
        raise CheckpointError(f"{directory} holds {meta.weights_format} weights: open it with "
                              f"engine.model.outputs.load_variant")
    model = build_model(meta.arch, meta.num_classes, meta.in_channels, meta.image_size, meta.width)
    sd = read_state_dict((Path(directory) / WEIGHTS).read_bytes(), WEIGHTS)
    if meta.layer_shapes == "shape":
        resize_to_state_dict(model, sd)
    load_into(model, sd)
    return model.eval(), meta


# ---------------------------------------------------------------- users' weight files


UPLOAD_INSTEAD = ("upload a .safetensors file (safetensors.torch.save_file(model.state_dict(), path)) or a .pt "
                  "holding only the state_dict (torch.save(model.state_dict(), path))")


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
            # torch's own message advises turning weights_only off, which this tool never does
            found = re.search(r"GLOBAL ([\w.]{1,200})", str(e))
            if found:
                raise CheckpointError(
                    f"{filename} holds pickled Python objects ({found.group(1)}), not only tensors: a whole model "
                    f"or a training checkpoint saved with torch.save, and nothing is unpickled here (unpickling can "
                    f"run code): {UPLOAD_INSTEAD}") from None
            raise CheckpointError(f"{filename} is not a PyTorch state_dict file (it cannot be read as names and "
                                  f"tensors alone; nothing in it was unpickled): {UPLOAD_INSTEAD}") from None
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{filename} does not hold a state_dict (a mapping of names to tensors): "
                                  f"{UPLOAD_INSTEAD}")
        return obj
    raise CheckpointError(f"unsupported weights file '{filename}': use .safetensors, .pt or .pth")


def load_into(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Loads a state_dict strictly; a mismatch names the layers that do not fit."""
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    own = model.state_dict()
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"  # in the model's order: first layer first
             for k, v in own.items() if k in sd and sd[k].shape != v.shape]
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
    fit_attention_heads(model)


def fit_attention_heads(model: nn.Module) -> None:
    """Sets each attention block's head count from its (pruned) qkv layer: timm's Attention reshapes by
    num_heads and head_dim and projects attn_dim = num_heads * head_dim channels."""
    for m in model.modules():
        qkv, head_dim = getattr(m, "qkv", None), getattr(m, "head_dim", None)
        if isinstance(qkv, nn.Linear) and isinstance(head_dim, int) and hasattr(m, "num_heads") and head_dim > 0:
            m.num_heads = qkv.out_features // (3 * head_dim)
            if hasattr(m, "attn_dim"):
                m.attn_dim = m.num_heads * head_dim


def load_user_weights(arch: str, data: bytes, filename: str, *, num_classes: int, in_channels: int,
                      image_size: int, width: float = 1.0) -> nn.Module:
    """Builds a registered architecture and loads a user's weights into it."""
    model = build_model(arch, num_classes, in_channels, image_size, width)
    load_into(model, read_state_dict(data, filename))
    return model.eval()


def dataset_of(meta: CheckpointMeta, data_root: str = DEFAULT_ROOT) -> Dataset:
    """The dataset a checkpoint was trained on (imagefolder data at the checkpoint's image size, normalised as
    its meta records)."""
    image_size = meta.image_size if meta.dataset.startswith("imagefolder:") else None
    data = load_dataset(meta.dataset, data_root, image_size=image_size)
    if meta.mean:
        return with_normalisation(data, tuple(meta.mean), tuple(meta.std))
    return data


def model_data(arch: str, dataset: str, data_root: str = DEFAULT_ROOT, download: bool = False,
               image_size: int | None = None) -> Dataset:
    """The dataset as `arch` takes it: an image folder at the architecture's own side (unless image_size is
    given) and its own normalisation, for an architecture by name; any other data as it comes."""
    own = input_defaults(arch)
    folder = dataset.startswith("imagefolder:")
    if own is None or not folder:
        return load_dataset(dataset, data_root, download, image_size)
    data = load_dataset(dataset, data_root, download, image_size or own.image_size)
    return with_normalisation(data, own.mean, own.std)


def normalisation(data: Dataset) -> dict:
    """The meta fields (mean, std) recording a normalisation that is not the dataset's own; {} otherwise."""
    norm = data.info.get("normalisation")
    return {"mean": list(norm["mean"]), "std": list(norm["std"])} if norm else {}
