"""What every pruning task shares: its base config, the layers it may prune, and saving results."""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from engine.checkpoint import CheckpointMeta, save_checkpoint
from engine.config import Config, check_range
from engine.data import DEFAULT_ROOT, Dataset
from engine.errors import ConfigError
from engine.measure import prunable_weights
from engine.models import MODELS
from engine.prune.channels import first_conv
from engine.tasks import open_checkpoint

DETERMINISTIC_NOTE = ("one-shot pruning without fine-tuning is deterministic: every repeat builds the same "
                      "model, so accuracy_std is 0 by nature, not by assumption")


@dataclass
class PruneTask(Config):
    """Fields every pruning task has; each method adds its own."""

    checkpoint: str = ""  # checkpoint directory of the model to prune
    data_root: str = DEFAULT_ROOT  # where torchvision datasets live
    seed: int = 0  # repeat r uses seed + r (fine-tuning order, lottery-ticket initialisation)
    latency: bool = True  # time each distinct deployed model (off for quick runs)
    out: str | None = None  # save each pruned model as a checkpoint directory under this folder

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint must name a checkpoint directory")
        check_range("seed", self.seed, 0, 2**31 - 1)


def open_for_pruning(cfg: PruneTask) -> tuple[nn.Module, CheckpointMeta, Dataset, str]:
    """The checkpoint's model (eval mode), meta, dataset and classifier module path."""
    model, meta, data = open_checkpoint(cfg.checkpoint, cfg.data_root)
    return model.eval(), meta, data, MODELS.get(meta.arch).classifier


def candidate_layers(model: nn.Module, classifier: str, keep_first_last: bool) -> list[tuple[str, nn.Module]]:
    """The Conv/Linear layers to prune; `keep_first_last` leaves the first conv and the classifier dense."""
    layers = prunable_weights(model)
    if keep_first_last:
        kept = {first_conv(model), classifier}
        layers = [(n, m) for n, m in layers if n not in kept]
    if not layers:
        raise ConfigError("no layer is left to prune: the model has only its first conv and classifier")
    return layers


def point_params(cfg: PruneTask, drop: tuple[str, ...] = (), **values) -> dict:
    """The method's parameters as they produced one point (paths and switches left out)."""
    skip = {"checkpoint", "data_root", "latency", "out", *drop}
    return {**{k: v for k, v in cfg.to_dict().items() if k not in skip}, **values}


def save_variant(model: nn.Module, meta: CheckpointMeta, cfg: PruneTask, name: str, *, method: str,
                 params: dict, by_shape: bool) -> str | None:
    """Saves a pruned model under cfg.out/name (None when cfg.out is unset); returns the directory."""
    if not cfg.out:
        return None
    out = Path(cfg.out) / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    new_meta = dataclasses.replace(
        meta, layer_shapes="shape" if by_shape or meta.layer_shapes == "shape" else meta.layer_shapes,
        history=[*meta.history, {"method": method, "params": params, "source": cfg.checkpoint}],
        created=time.time())
    save_checkpoint(out, model, new_meta)
    return str(out)
