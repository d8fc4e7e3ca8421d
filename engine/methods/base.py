"""What every method that starts from a checkpoint shares: its run settings, one registration, opening
the checkpoint and claiming the output folder before any work, and saving and measuring a variant.

A family's base config subclasses `CheckpointRun` (the input and how it is measured) or
`FromCheckpoint` (that, plus where the variants are saved). A method's task does

    with started(cfg, task="prune.l1_unstructured") as run:  # checkpoint opened, output folder claimed
        ...                                                   # run.model, run.meta, run.data, run.root
        artifact = run.save_float(ctx, "sparsity-0.5", model, family="prune", method=..., params=...)
        return [measure_point(ctx, model, run.data, ...)]

and `@checkpoint_method(family, name, Config, description)` registers it as the family's method and as
the task `<family>.<name>`, whose `checkpoint` a recipe's `from:` feeds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from engine.core.config import ROLES, Config, fields_with_role, param
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Point
from engine.deploy.runtimes import RUNTIME_NAMES
from engine.methods.registry import register_method
from engine.methods.tasks import open_checkpoint, register_task, save_float_variant
from engine.model.checkpoint import CheckpointMeta, read_meta
from engine.model.data import DEFAULT_ROOT, Dataset
from engine.model.outputs import SaveOptions, claim_output, default_out_dir


@dataclass
class CheckpointRun(Config):
    """What a method that starts from a checkpoint is given: the checkpoint, and how it is measured."""

    checkpoint: str = param("", "checkpoint directory to start from (a float checkpoint; required)", role="input")
    data_root: str = param(DEFAULT_ROOT, "where torchvision datasets live", role="machine")
    latency: bool = param(True, "time the models measured (--no-latency: latency fields stay empty)", role="runner")
    runtime: str = param("torch", "what runs every model measured (accuracy and latency): torch, or onnxruntime "
                                  "(engine/deploy/runtimes.py)", choices=RUNTIME_NAMES, role="runner")


@dataclass
class FromCheckpoint(CheckpointRun, SaveOptions):
    """A method that starts from a checkpoint and saves its variants (out, save, overwrite come first)."""

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint must name a checkpoint directory")


def method_params(cfg: Config, drop: tuple[str, ...] = (), **values) -> dict:
    """The settings that describe the method, as a point's `params` records them: every field without a
    role (no paths, no switches of how it runs), less `drop` (a swept list), plus `values`."""
    skip = {*fields_with_role(type(cfg), *ROLES), *drop}
    return {**{k: v for k, v in cfg.to_dict().items() if k not in skip}, **values}


Run = Callable[[Config, RunContext], list[Point]]


def checkpoint_method(family: str, name: str, config: type[CheckpointRun], description: str) -> Callable[[Run], Run]:
    """Registers `fn(cfg, ctx) -> list[Point]` as the method `name` of `family` and as the task `<family>.<name>`."""

    def add(fn: Run) -> Run:
        task = f"{family}.{name}"
        register_task(task, config, description, input="checkpoint")(fn)
        register_method(family, name, config, description, task)
        return fn

    return add


@dataclass
class Started:
    """An opened input checkpoint and the claimed output folder (root None: nothing is saved)."""

    cfg: CheckpointRun
    model: nn.Module
    meta: CheckpointMeta
    data: Dataset
    root: Path | None

    def save_float(self, ctx: RunContext, sub: str, model: nn.Module, **step) -> str:
        """Saves a float variant under the output folder (see `save_float`)."""
        return save_float(ctx, self.root, sub, model, self.meta, self.cfg.checkpoint, **step)


def save_float(ctx: RunContext, root: Path | None, sub: str, model: nn.Module, meta: CheckpointMeta,
               input_checkpoint: str, *, family: str, method: str, params: dict, level: float | None = None,
               level_name: str = "", by_shape: bool = False) -> str:
    """Saves a float model made from `meta`'s as root/sub (root itself when sub is '') with one more lineage
    step, logs it as the run's artifact and returns its path; '' when nothing is saved (root None)."""
    if root is None:
        return ""
    path = str(root / sub) if sub else str(root)
    save_float_variant(path, model, meta, family=family, method=method, params=params,
                       input_checkpoint=input_checkpoint, level=level, level_name=level_name, by_shape=by_shape)
    ctx.log_artifact(path, "checkpoint")
    return path


def claim(cfg: CheckpointRun, tag: str, describe: dict) -> contextlib.AbstractContextManager[Path | None]:
    """The run's output folder, claimed before any work (None when the config does not save).

    Refuses an existing folder (unless overwrite and this tool made it) and any folder that is, is
    inside, or contains the input checkpoint. The default folder is checkpoints/<model>-<dataset>-<tag>-<time>."""
    if not (isinstance(cfg, SaveOptions) and cfg.save):
        return contextlib.nullcontext(None)
    meta = read_meta(cfg.checkpoint)
    out = cfg.out or default_out_dir(meta.arch, meta.dataset, tag)
    return claim_output(out, [cfg.checkpoint], cfg.overwrite, describe=describe)


@contextlib.contextmanager
def started(cfg: CheckpointRun, *, task: str, tag: str | None = None, describe: dict | None = None
            ) -> Iterator[Started]:
    """Claims the output folder (see `claim`), then opens the input checkpoint (a float one) and its dataset."""
    if not cfg.checkpoint:
        raise ConfigError("checkpoint must name a checkpoint directory")
    with claim(cfg, tag or task.replace(".", "-"), describe or {"task": task, "input_checkpoint": cfg.checkpoint}) \
            as root:
        model, meta, data = open_checkpoint(cfg.checkpoint, cfg.data_root)
        yield Started(cfg, model, meta, data, root)
