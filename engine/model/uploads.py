"""A user's own weights, uploaded in the browser, as a checkpoint the methods can start from.

The file's bytes are parsed as safetensors or as a plain state_dict (`torch.load(weights_only=True)`:
nothing is unpickled), loaded strictly into a zoo architecture, or a timm/torchvision one by name
(`timm:vit_tiny_patch16_224`, engine/model/named.py: an image folder is then read at that model's own
side and normalisation, which the checkpoint records), built for the chosen dataset, and saved
as a float checkpoint under `checkpoints/uploads/`. The folder is named by the architecture, the dataset
and the bytes' hash: the uploaded file's name is only inspected for its extension and never becomes a
path. Uploading the same bytes again reuses the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

from engine.core.errors import CheckpointError
from engine.model.checkpoint import (
    CheckpointMeta,
    load_user_weights,
    model_data,
    normalisation,
    read_meta,
    save_checkpoint,
)
from engine.model.data import DEFAULT_ROOT
from engine.model.outputs import CHECKPOINT_ROOT, MARKER, safe_name

UPLOAD_DIR = "uploads"
SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def upload_root() -> Path:
    return Path(CHECKPOINT_ROOT) / UPLOAD_DIR


def import_weights(data: bytes, filename: str, arch: str, dataset: str, *, width: float = 1.0,
                   image_size: int | None = None, data_root: str = DEFAULT_ROOT, root: str | Path | None = None) -> str:
    """Saves uploaded weights for `arch` trained on `dataset` as a checkpoint; returns its directory."""
    suffix = Path(str(filename)).suffix.lower()
    if suffix not in SUFFIXES:
        raise CheckpointError(f"unsupported weights file type '{suffix or 'none'}': upload .safetensors, .pt or .pth")
    if not data:
        raise CheckpointError("the uploaded file is empty")
    digest = hashlib.sha256(data).hexdigest()
    safe_dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.split(":", 1)[0])
    size = f"-{image_size}px" if image_size else ""  # the same bytes at another side are another checkpoint
    directory = Path(root or upload_root()) / f"{safe_name(arch)}-{safe_dataset}-w{width:g}{size}-{digest[:16]}"
    if (directory / "meta.json").is_file():
        meta = read_meta(directory)
        if meta.arch == arch and meta.dataset == dataset and (image_size is None or meta.image_size == image_size):
            return str(directory)
    ds = model_data(arch, dataset, data_root, image_size=image_size if dataset.startswith("imagefolder:") else None)
    c, h, _ = ds.input_shape
    model = load_user_weights(arch, data, f"upload{suffix}", num_classes=ds.num_classes, in_channels=c,
                              image_size=h, width=width)
    meta = CheckpointMeta(arch=arch, num_classes=ds.num_classes, in_channels=c, image_size=h, dataset=dataset,
                          class_names=list(ds.class_names), width=width, **normalisation(ds),
                          lineage=[{"family": "import", "method": "upload",
                                    "params": {"sha256": digest, "file_type": suffix}}])
    save_checkpoint(directory, model, meta)
    (directory / MARKER).write_text(json.dumps({"created": time.time(), "task": "upload"}))
    return str(directory)
