"""Tasks: named, validated units of work that the CLI, the job runner and recipes all run.

A task is `run(config, ctx) -> list[Point]` plus its config class. A recipe from the browser or
the CLI is only a task name and a plain dict, validated by `Config.from_dict`: it never runs code.
Every method family registers its tasks here (`@register_task`); `train` and `measure` live here.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

from torch import nn

from engine.artifacts import SaveOptions, claim_output, default_out_dir, load_variant
from engine.checkpoint import CheckpointMeta, describe_lineage, load_checkpoint, read_meta, save_checkpoint
from engine.config import Config, param
from engine.context import RunContext
from engine.data import DATASETS, DEFAULT_ROOT, Dataset, load_dataset
from engine.errors import CheckpointError, ConfigError
from engine.measure import Measurement, ModelForm, measure
from engine.models import MODELS, build_model
from engine.point import Point
from engine.progress import scaled
from engine.registry import Registry
from engine.runtimes import RUNTIME_NAMES, Calibration, check_runtimes, task_scope, using
from engine.train import TrainConfig, fit, seed_everything


@dataclass(frozen=True)
class Task:
    name: str
    config: type[Config]
    run: Callable[[Config, RunContext], list[Point]]
    description: str


TASKS: Registry[Task] = Registry("task")

# packages whose import registers their tasks; loaded before any lookup, so the job runner can run a
# task by name without the caller having imported its family
FAMILIES = ("engine.quant", "engine.prune", "engine.distill", "engine.recipes", "engine.studies", "engine.whatif")


def load_families() -> None:
    for module in FAMILIES:
        importlib.import_module(module)


def get_task(name: str) -> Task:
    load_families()
    return TASKS.get(name)


def register_task(name: str, config: type[Config], description: str):
    def add(fn: Callable[[Config, RunContext], list[Point]]):
        TASKS.register(name)(Task(name, config, _on_runtime(fn), description))
        return fn

    return add


def _on_runtime(fn: Callable[[Config, RunContext], list[Point]]) -> Callable[[Config, RunContext], list[Point]]:
    """Runs the task with its config's `runtime` as the one every measure() inside it uses (engine/runtimes.py)."""

    @functools.wraps(fn)
    def run(cfg: Config, ctx: RunContext) -> list[Point]:
        with task_scope(cfg):
            return fn(cfg, ctx)

    return run


def run_task(name: str, config: Config | dict, ctx: RunContext) -> list[Point]:
    task = get_task(name)
    if isinstance(config, dict):
        config = task.config.from_dict(config)
    if not isinstance(config, task.config):
        raise ConfigError(f"task '{name}' takes a {task.config.__name__}, got {type(config).__name__}")
    return task.run(config, ctx)


# ---------------------------------------------------------------- shared pieces for tasks


def make_point(m: Measurement, *, family: str, method: str, stage: str, params: dict | None = None,
               level: float | None = None, level_name: str = "", role: str = "", input_checkpoint: str | None = "",
               artifact: str | None = "", accuracy_std: float | None = None, accuracy_runs: list | None = None,
               **extra) -> Point:
    """One evaluated model variant: the measure() fields plus what produced it (see engine/point.py)."""
    return Point(family=family, method=method, stage=stage, measurement=m, level=level, level_name=level_name,
                 role=role, input_checkpoint=str(input_checkpoint or ""), artifact=str(artifact or ""),
                 params=params or {}, accuracy_std=accuracy_std, accuracy_runs=accuracy_runs, extra=extra)


def measure_point(ctx: RunContext, model: nn.Module, data: Dataset, *, form: ModelForm | None = None,
                  latency: bool | dict = True, runtime: str | None = None, **fields) -> Point:
    """measure() a model, log the point to the run and return it (`fields` as make_point takes them)."""
    point = make_point(measure(model, data, form, latency=latency, runtime=runtime), **fields)
    ctx.log_point(point)
    return point


def check_dataset_name(name: str) -> None:
    if not name.startswith("imagefolder:") and name not in DATASETS:
        DATASETS.get(name)  # raises with the list of names


def open_checkpoint(directory: str, data_root: str = DEFAULT_ROOT) -> tuple[nn.Module, CheckpointMeta, Dataset]:
    """A float checkpoint's model and meta, with the dataset it was trained on (what methods start from)."""
    meta = read_meta(directory)
    if meta.weights_format != "float":
        raise CheckpointError(f"{directory} holds {meta.weights_format} weights (made by "
                              f"{describe_lineage(meta)}); compression methods start from a float checkpoint, "
                              f"so quantize last in a chain")
    model, meta = load_checkpoint(directory)
    return model, meta, dataset_of(meta, data_root)


def dataset_of(meta: CheckpointMeta, data_root: str = DEFAULT_ROOT) -> Dataset:
    image_size = meta.image_size if meta.dataset.startswith("imagefolder:") else None
    return load_dataset(meta.dataset, data_root, image_size=image_size)


def save_float_variant(directory: str, model: nn.Module, meta: CheckpointMeta, *, family: str, method: str,
                       params: dict, input_checkpoint: str, level: float | None = None, level_name: str = "",
                       by_shape: bool = False) -> str:
    """Saves a float model made from `meta`'s model as a checkpoint with one more lineage step."""
    layer_shapes = "shape" if by_shape or meta.layer_shapes == "shape" else meta.layer_shapes
    new = meta.derived(family=family, method=method, params=params, input_checkpoint=input_checkpoint,
                       level=level, level_name=level_name, layer_shapes=layer_shapes)
    save_checkpoint(directory, model, new)
    return directory


# ---------------------------------------------------------------- train


@dataclass
class TrainTask(SaveOptions):
    dataset: str = param("mnist5k", "dataset name or imagefolder:<path> (see `datasets`)")
    model: str = param("cnn_l", "architecture from the zoo (see `models`)")
    width: float = param(1.0, "width multiplier where the architecture has one", lo=0.05, hi=16)
    data_root: str = param(DEFAULT_ROOT, "where torchvision datasets live")
    download: bool = param(False, "download a missing torchvision dataset")
    image_size: int | None = param(None, "resize imagefolder images to this side (default 64)", lo=4, hi=1024)
    latency: bool = param(True, "time the final model (--no-latency: latency fields stay empty)")
    runtime: str = param("torch", "what runs the model when it is measured (accuracy and latency)",
                         choices=RUNTIME_NAMES)
    train: TrainConfig = param(default_factory=TrainConfig)

    def validate(self) -> None:
        check_dataset_name(self.dataset)
        MODELS.get(self.model)


@register_task("train", TrainTask, "train a model from the zoo on a dataset and save a checkpoint")
def train_task(cfg: TrainTask, ctx: RunContext) -> list[Point]:
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.download, cfg.image_size)
    out = cfg.out or default_out_dir(cfg.model, data.name)
    c, h, _ = data.input_shape
    with claim_output(out, [], cfg.overwrite, describe={"task": "train"}) if cfg.save else nullcontext():
        seed_everything(cfg.train.seed)
        model = build_model(cfg.model, data.num_classes, c, h, cfg.width)
        ctx.log_event(f"training {cfg.model} on {data.name}: {len(data.train)} train / {len(data.val)} val images")
        history = fit(model, data, cfg.train, progress=scaled(ctx.progress, 0.0, 0.95), cancel=ctx.cancel)
        for row in history:
            ctx.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        artifact = ""
        if cfg.save:
            meta = CheckpointMeta(arch=cfg.model, num_classes=data.num_classes, in_channels=c, image_size=h,
                                  dataset=data.name, class_names=data.class_names, width=cfg.width,
                                  train_config=cfg.train.to_dict(),
                                  lineage=[{"family": "train", "method": "train", "params": cfg.to_dict(),
                                            "input_checkpoint": ""}])
            save_checkpoint(out, model, meta)
            ctx.log_artifact(out, "checkpoint")
            artifact = out
    return [measure_point(ctx, model, data, family="train", method="train", stage="baseline",
                          params=cfg.train.to_dict(), artifact=artifact, latency=cfg.latency)]


@dataclass
class MeasureTask(Config):
    checkpoint: str = param("", "checkpoint directory (any format a method writes)")
    data_root: str = param(DEFAULT_ROOT, "where torchvision datasets live")
    latency: bool = param(True, "time the model (--no-latency: latency fields stay empty)")
    runtime: tuple[str, ...] = param(("torch",), "runtimes that run the model, one point each: torch, onnxruntime "
                                                 "or torch,onnxruntime")

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint must name a checkpoint directory")
        check_runtimes("runtime", self.runtime)


COMPRESSING = ("quantize", "prune", "distill")


@register_task("measure", MeasureTask, "measure a checkpoint: accuracy, size, MACs, latency")
def measure_task(cfg: MeasureTask, ctx: RunContext) -> list[Point]:
    model, form, meta = load_variant(cfg.checkpoint)
    data = dataset_of(meta, cfg.data_root)
    compressed = any(step.get("family") in COMPRESSING for step in meta.lineage)
    last = meta.lineage[-1] if meta.lineage else {}
    with using(calibration=Calibration.of_checkpoint(meta)):  # an int8 model on another runtime: its own split
        return [measure_point(ctx, model, data, form=form, family="measure", method="measure",
                              stage="variant" if compressed else "baseline", level=last.get("level"),
                              level_name=last.get("level_name", ""), input_checkpoint=cfg.checkpoint,
                              artifact=cfg.checkpoint, latency=cfg.latency, runtime=runtime, lineage=meta.lineage,
                              lineage_text=describe_lineage(meta), weights_format=meta.weights_format)
                for runtime in cfg.runtime]
