"""Tasks: named, validated units of work that the CLI and the job runner both run.

A task is `run(config, ctx) -> list[point]` plus its config class. A recipe from the browser or
the CLI is only a task name and a plain dict, validated by `Config.from_dict`: it never runs code.
Every method family registers its tasks here (`@register_task`).
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from engine.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from engine.config import Config, check_range
from engine.context import RunContext
from engine.data import DATASETS, DEFAULT_ROOT, Dataset, load_dataset
from engine.errors import ConfigError
from engine.measure import Measurement, ModelForm, measure
from engine.models import MODELS, build_model
from engine.progress import scaled
from engine.registry import Registry
from engine.train import TrainConfig, fit, seed_everything

CHECKPOINT_ROOT = "checkpoints"


@dataclass(frozen=True)
class Task:
    name: str
    config: type[Config]
    run: Callable[[Config, RunContext], list[dict]]
    description: str


TASKS: Registry[Task] = Registry("task")

# packages whose import registers their tasks; loaded before any lookup, so the job runner can run a
# task by name without the caller having imported its family
FAMILIES = ("engine.quant", "engine.prune", "engine.distill")


def get_task(name: str) -> Task:
    for module in FAMILIES:
        importlib.import_module(module)
    return TASKS.get(name)


def register_task(name: str, config: type[Config], description: str):
    def add(fn: Callable[[Config, RunContext], list[dict]]):
        TASKS.register(name)(Task(name, config, fn, description))
        return fn

    return add


def run_task(name: str, config: Config | dict, ctx: RunContext) -> list[dict]:
    task = get_task(name)
    if isinstance(config, dict):
        config = task.config.from_dict(config)
    if not isinstance(config, task.config):
        raise ConfigError(f"task '{name}' takes a {task.config.__name__}, got {type(config).__name__}")
    return task.run(config, ctx)


# ---------------------------------------------------------------- shared pieces for tasks


def make_point(m: Measurement, *, method: str, params: dict, stage: str = "final",
               artifact: str | None = None, **extra) -> dict:
    """One evaluated model variant: the measure() fields plus what produced it."""
    return {**m.to_dict(), "method": method, "params": params, "stage": stage, "artifact": artifact, **extra}


def measure_point(ctx: RunContext, model: nn.Module, data: Dataset, *, method: str, params: dict,
                  form: ModelForm | None = None, stage: str = "final", artifact: str | None = None,
                  latency: bool | dict = True, **extra) -> dict:
    """measure() a model, log the point to the run and return it."""
    point = make_point(measure(model, data, form, latency=latency), method=method, params=params, stage=stage,
                       artifact=artifact, **extra)
    ctx.log_point(point)
    return point


def check_dataset_name(name: str) -> None:
    if not name.startswith("imagefolder:") and name not in DATASETS:
        DATASETS.get(name)  # raises with the list of names


def default_out_dir(model: str, dataset: str, tag: str = "") -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.split(":", 1)[0])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(Path(CHECKPOINT_ROOT) / f"{model}-{safe}{'-' + tag if tag else ''}-{stamp}")


def open_checkpoint(directory: str, data_root: str = DEFAULT_ROOT) -> tuple[nn.Module, CheckpointMeta, Dataset]:
    """A checkpoint's model and meta, with the dataset it was trained on."""
    model, meta = load_checkpoint(directory)
    image_size = meta.image_size if meta.dataset.startswith("imagefolder:") else None
    data = load_dataset(meta.dataset, data_root, image_size=image_size)
    return model, meta, data


# ---------------------------------------------------------------- train


@dataclass
class TrainTask(Config):
    dataset: str = "mnist5k"  # registry name or imagefolder:<path>
    model: str = "cnn_l"  # architecture name from the zoo
    width: float = 1.0  # width multiplier where the architecture has one
    data_root: str = DEFAULT_ROOT  # where torchvision datasets live
    download: bool = False  # fetch a torchvision dataset that is missing
    image_size: int | None = None  # imagefolder images are resized to this (default 64)
    out: str | None = None  # checkpoint directory; default checkpoints/<model>-<dataset>-<time>
    latency: bool = True  # time the final model (off for quick tests)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        check_dataset_name(self.dataset)
        MODELS.get(self.model)
        if self.image_size is not None:
            check_range("image_size", self.image_size, 4, 1024)


@register_task("train", TrainTask, "train a model from the zoo on a dataset and save a checkpoint")
def train_task(cfg: TrainTask, ctx: RunContext) -> list[dict]:
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.download, cfg.image_size)
    c, h, _ = data.input_shape
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, data.num_classes, c, h, cfg.width)
    ctx.log_event(f"training {cfg.model} on {data.name}: {len(data.train)} train / {len(data.val)} val images")
    history = fit(model, data, cfg.train, progress=scaled(ctx.progress, 0.0, 0.95), cancel=ctx.cancel)
    for row in history:
        ctx.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    out = cfg.out or default_out_dir(cfg.model, data.name)
    meta = CheckpointMeta(arch=cfg.model, num_classes=data.num_classes, in_channels=c, image_size=h,
                          dataset=data.name, class_names=data.class_names, width=cfg.width,
                          train_config=cfg.train.to_dict(), history=[{"method": "train", "params": cfg.to_dict()}])
    save_checkpoint(out, model, meta)
    ctx.log_artifact(out, "checkpoint")
    point = measure_point(ctx, model, data, method="train", params=cfg.train.to_dict(), stage="trained",
                          artifact=out, latency=cfg.latency, checkpoint=out)
    return [point]


@dataclass
class MeasureTask(Config):
    checkpoint: str = ""  # checkpoint directory
    data_root: str = DEFAULT_ROOT
    latency: bool = True

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint must name a checkpoint directory")


@register_task("measure", MeasureTask, "measure a checkpoint: accuracy, size, MACs, latency")
def measure_task(cfg: MeasureTask, ctx: RunContext) -> list[dict]:
    model, meta, data = open_checkpoint(cfg.checkpoint, cfg.data_root)
    return [measure_point(ctx, model, data, method="measure", params={}, stage="measured",
                          artifact=cfg.checkpoint, latency=cfg.latency, checkpoint=cfg.checkpoint)]
