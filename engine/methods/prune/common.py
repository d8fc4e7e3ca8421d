"""What every pruning method shares: its base config, its one registration, the layers it may prune,
where it writes, and how one point is made.

A method is one file: a config (subclass of `PruneTask`, fields declared with `param(...)`), a
function `run(cfg, ctx) -> list[Point]` and `@prune_method(name, Config, description)` on it. That
registers the task `prune.<name>` and the method the `prune` command, `prune-methods` and the app
read; nothing else lists methods. Opening the checkpoint, claiming the output folder and saving a
variant are the shared ones of engine/methods/base.py.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from engine.core.config import Config
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Measurement, Point
from engine.deploy.measure import prunable_weights
from engine.methods import base
from engine.methods.prune.channels import first_conv
from engine.methods.tasks import make_point, open_checkpoint
from engine.model.checkpoint import CheckpointMeta
from engine.model.data import Dataset
from engine.model.zoo import MODELS

FAMILY = "prune"
DETERMINISTIC_NOTE = ("one-shot pruning without fine-tuning is deterministic: every repeat builds the same "
                      "model, so accuracy_std is 0 by nature, not by assumption")


@dataclass
class PruneTask(base.FromCheckpoint):
    """Fields every pruning method has (the checkpoint, where it saves, how it measures); each method adds its own."""


def task_name(method: str) -> str:
    return f"{FAMILY}.{method}"


Run = Callable[[PruneTask, RunContext], list[Point]]


def prune_method(name: str, config: type[PruneTask], description: str) -> Callable[[Run], Run]:
    """Registers `fn` as the pruning method `name`: the task prune.<name> and the family's method entry."""
    return base.checkpoint_method(FAMILY, name, config, description)


def open_for_pruning(cfg: PruneTask) -> tuple[nn.Module, CheckpointMeta, Dataset, str]:
    """The checkpoint's model (eval mode), meta, dataset and classifier module path."""
    model, meta, data = open_checkpoint(cfg.checkpoint, cfg.data_root)
    return model.eval(), meta, data, MODELS.get(meta.arch).classifier


def claim(cfg: PruneTask, method: str) -> AbstractContextManager[Path | None]:
    """The run's output directory, claimed before any work (None when cfg.save is off): see base.claim."""
    return base.claim(cfg, f"{FAMILY}-{method}", {"task": task_name(method), "input_checkpoint": cfg.checkpoint})


def save_pruned(ctx: RunContext, root: Path | None, sub: str, model: nn.Module, meta: CheckpointMeta,
                cfg: PruneTask, *, method: str, params: dict, level: float | None, level_name: str,
                by_shape: bool = False) -> str:
    """Saves a pruned model as root/sub with one more lineage step; "" when nothing is saved."""
    return base.save_float(ctx, root, sub, model, meta, cfg.checkpoint, family=FAMILY, method=method, params=params,
                           level=level, level_name=level_name, by_shape=by_shape)


def candidate_layers(model: nn.Module, classifier: str, keep_first_last: bool) -> list[tuple[str, nn.Module]]:
    """The Conv/Linear layers to prune; `keep_first_last` leaves the first conv and the classifier dense."""
    layers = prunable_weights(model)
    if keep_first_last:
        kept = {first_conv(model), classifier}
        layers = [(n, m) for n, m in layers if n not in kept]
    if not layers:
        raise ConfigError("no layer is left to prune: the model has only its first conv and classifier")
    return layers


def point_params(cfg: Config, drop: tuple[str, ...] = (), **values) -> dict:
    """The method's settings as they produced one point (paths, switches and the swept list left out)."""
    return base.method_params(cfg, drop, **values)


def pruning_point(ctx: RunContext, m: Measurement, cfg: PruneTask, *, method: str, stage: str, params: dict,
                  level: float | None, level_name: str, artifact: str = "", **fields) -> Point:
    """A pruning point (family prune, started from cfg.checkpoint), logged to the run."""
    point = make_point(m, family=FAMILY, method=method, stage=stage, params=params, level=level,
                       level_name=level_name, input_checkpoint=cfg.checkpoint, artifact=artifact, **fields)
    ctx.log_point(point)
    return point
