"""Tasks: named, validated units of work that the CLI, the job runner and recipes all run.

A task is `run(config, ctx) -> list[Point]` plus its config class. A recipe from the browser or
the CLI is only a task name and a plain dict, validated by `Config.from_dict`: it never runs code.
Every method family registers its tasks here (`@register_task`); `train` and `measure` live here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from engine.core.config import Config
from engine.core.context import RunContext
from engine.core.errors import CheckpointError, ConfigError
from engine.core.point import Measurement, Point
from engine.core.registry import Registry
from engine.deploy.measure import ModelForm, measure
from engine.deploy.runtimes import task_scope
from engine.methods.registry import discover_families
from engine.model.checkpoint import (
    CheckpointMeta,
    dataset_of,
    describe_lineage,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from engine.model.data import DATASETS, DEFAULT_ROOT, Dataset


@dataclass(frozen=True)
class Task:
    name: str
    config: type[Config]
    run: Callable[[Config, RunContext], list[Point]]
    description: str
    input: str | None = None  # the config field naming the checkpoint it starts from (what a recipe's `from:` feeds)


TASKS: Registry[Task] = Registry("task")

# modules whose import registers tasks that belong to no method family; the families' tasks are found by
# discover_families. Loaded before any lookup, so the job runner can run a task by name without the
# caller having imported it. The run layer's own tasks (recipe, study) register when that layer is imported
# (engine/run/__init__.py), as everything that runs a task by name is in it or above it.
TASK_MODULES = ("engine.methods.train", "engine.methods.measure", "engine.methods.whatif", "engine.methods.remeasure")


def load_families() -> None:
    discover_families()
    for module in TASK_MODULES:
        importlib.import_module(module)


def get_task(name: str) -> Task:
    load_families()
    return TASKS.get(name)


def register_task(name: str, config: type[Config], description: str, input: str | None = None):  # noqa: A002
    """Registers `fn(config, ctx) -> list[Point]` as the task `name`. `input` is the config field a recipe's
    `from:` feeds; by default the config's one field with role input, if it has exactly one."""
    if input is None:
        inputs = [f.name for f in dataclasses.fields(config) if f.metadata.get("role") == "input"]
        input = inputs[0] if len(inputs) == 1 else None  # noqa: A001

    def add(fn: Callable[[Config, RunContext], list[Point]]):
        TASKS.register(name)(Task(name, config, _on_runtime(fn), description, input))
        return fn

    return add


def _on_runtime(fn: Callable[[Config, RunContext], list[Point]]) -> Callable[[Config, RunContext], list[Point]]:
    """Runs the task with its config's `runtime` as the one every measure() inside it uses (engine/deploy/runtimes.py)."""

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
    """One evaluated model variant: the measure() fields plus what produced it (see engine/core/point.py)."""
    return Point(family=family, method=method, stage=stage, measurement=m, level=level, level_name=level_name,
                 role=role, input_checkpoint=str(input_checkpoint or ""), artifact=str(artifact or ""),
                 params=params or {}, accuracy_std=accuracy_std, accuracy_runs=accuracy_runs, extra=extra)


def measure_point(ctx: RunContext, model: nn.Module, data: Dataset, *, form: ModelForm | None = None,
                  latency: bool | dict = True, runtime: str | None = None, **fields) -> Point:
    """measure() a model, log the point to the run and return it (`fields` as make_point takes them).

    The run's first baseline point becomes its latency reference: every later point of the run is timed
    beside it, round by round, and carries its speed-up over it (engine/deploy/timing.py)."""
    reference = getattr(ctx, "latency_reference", None)
    point = make_point(measure(model, data, form, latency=latency, runtime=runtime, reference=reference), **fields)
    if fields.get("stage") == "baseline" and reference is None and latency is True:
        ctx.latency_reference = ((form.runner if form is not None else None) or model).eval()
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


def save_float_variant(directory: str, model: nn.Module, meta: CheckpointMeta, *, family: str, method: str,
                       params: dict, input_checkpoint: str, level: float | None = None, level_name: str = "",
                       by_shape: bool = False) -> str:
    """Saves a float model made from `meta`'s model as a checkpoint with one more lineage step."""
    layer_shapes = "shape" if by_shape or meta.layer_shapes == "shape" else meta.layer_shapes
    new = meta.derived(family=family, method=method, params=params, input_checkpoint=input_checkpoint,
                       level=level, level_name=level_name, layer_shapes=layer_shapes)
    save_checkpoint(directory, model, new)
    return directory


