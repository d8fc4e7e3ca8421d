"""Recipes: a dataset, a model, an optional teacher and an ordered list of stages, run as one parent run.

A recipe is plain YAML or JSON (read with `yaml.safe_load`: no tag can build an object or run code):

    name: kd-then-prune
    dataset: digits
    teacher: {arch: cnn_l, latency: false, train: {epochs: 1}}    # an architecture to train ...
    model: cnn_s                                                    # ... or a checkpoint directory
    stages:
      - task: distill                        # a task of the registry; `config` is its config class's fields
        config: {method: kd, train_subset: 300, latency: false, train: {epochs: 1}}
      - name: prune
        task: prune.l1_unstructured          # takes the previous stage's artifact as its checkpoint
        config: {latency: false}
        sweep: {sparsities: [0.0, 0.5, 0.9]} # every list here is a sweep axis: one child run per value

`expand()` turns it into a DAG of `Unit`s (a task, its full config and the unit whose artifact feeds its
input field), validating every config before anything runs. Each unit has a stable key: the sha256 of
its task, its config without paths, the dataset and its upstream units' keys. The key is written into
the child run's name, so a later run of any recipe in the same store finds a finished unit and reuses
it (a teacher is trained once; a resumed recipe runs only the missing children). The driver
(`run_recipe`) hands ready units to an executor (engine/run/executors.py) and is the only writer of the
store; it runs as the task "recipe", so the CLI, the app's job runner and cancellation treat a recipe
like any other run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.core.config import Config, fields_with_role, param
from engine.core.context import RunContext
from engine.core.errors import Cancelled, CheckpointError, ConfigError, UserError, quoted
from engine.core.point import Point
from engine.core.progress import Progress, scaled
from engine.deploy.measure import prunable_weights
from engine.methods.base import FromCheckpoint
from engine.methods.measure import COMPRESSING
from engine.methods.prune.finetune import FinetuneConfig, finetune, finetune_training
from engine.methods.tasks import (
    TASKS,
    check_dataset_name,
    get_task,
    measure_point,
    open_checkpoint,
    register_task,
    save_float_variant,
)
from engine.methods.train import TrainTask
from engine.model.checkpoint import read_meta
from engine.model.outputs import claim_output, default_out_dir, is_checkpoint, safe_name
from engine.model.zoo import MODELS
from engine.run.executors import EXECUTORS, make_executor
from engine.run.jobs import SHUTDOWN_GRACE_S, StoreContext, create_run, resolve_task
from store.labels import NAME_MAX_CHARS

RECIPE_TASK = "recipe"
DEFAULT_OUT = "checkpoints/recipes"
MODEL, TEACHER, NONE = "model", "teacher", "none"  # the sources a stage may name besides earlier stages
STAGE_KEYS = ("name", "task", "config", "sweep", "from", "teacher")
RECIPE_KEYS = ("name", "dataset", "data_root", "out", "model", "teacher", "stages")
# the smallest useful recipe (train the default model), so RecipeTask() is valid like every task config
DEFAULT_RECIPE = {"dataset": "mnist5k", "model": "cnn_l", "stages": [{"task": "train"}]}


def input_field(task: str) -> str | None:
    """The config field a stage's `from:` feeds: the checkpoint a task starts from (distil: the student's start),
    as the task declares it (engine.methods.tasks.Task.input)."""
    return get_task(task).input


def runner_fields() -> list[str]:
    """The fields the runner sets, of every task: a recipe names the input checkpoints (role input) through
    `from:`/`teacher:` and the output folders (role output) through its `out`."""
    get_task(RECIPE_TASK)  # loads every task
    names: dict[str, None] = {}
    for _, task in TASKS.items():
        names.update(dict.fromkeys(sorted(fields_with_role(task.config, "input", "output"))))
    return list(names)


def key_ignores(task: str) -> frozenset[str]:
    """The fields a unit's key leaves out: where things are (output folders, the data root), not what is computed."""
    return fields_with_role(get_task(task).config, "output", "machine")


# ---------------------------------------------------------------- the document


@dataclass
class ModelSource:
    """A recipe's model or teacher: an architecture to train (with TrainTask's settings) or a checkpoint."""

    arch: str | None = None
    checkpoint: str | None = None
    settings: dict = field(default_factory=dict)  # TrainTask fields for `arch`: width, latency, train: {...}

    @classmethod
    def from_value(cls, where: str, value: Any) -> ModelSource:
        if isinstance(value, str):
            value = {"arch": value} if value in MODELS else {"checkpoint": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be an architecture name, a checkpoint directory or a mapping "
                              f"{{arch: ..., train: {{...}}}} / {{checkpoint: DIR}}, got {quoted(value)}")
        rest = {k: v for k, v in value.items() if k not in ("arch", "checkpoint")}
        arch, checkpoint = value.get("arch"), value.get("checkpoint")
        if (arch is None) == (checkpoint is None):
            raise ConfigError(f"{where} needs exactly one of arch (an architecture to train) or checkpoint "
                              f"(a checkpoint directory)")
        if checkpoint is not None:
            if rest:
                raise ConfigError(f"{where}: a checkpoint takes no training settings ({', '.join(rest)})")
            if not isinstance(checkpoint, str) or not is_checkpoint(checkpoint):
                raise ConfigError(f"{where}.checkpoint {quoted(checkpoint)} is not a checkpoint directory "
                                  f"(it needs weights and meta.json)")
            return cls(checkpoint=checkpoint)
        if not isinstance(arch, str) or arch not in MODELS:
            raise ConfigError(f"{where}.arch must be an architecture ({', '.join(MODELS.names())}), got {quoted(arch)}")
        for name in ("dataset", "model", *runner_fields(), "save"):
            if name in rest:
                raise ConfigError(f"{where}.{name} is set by the recipe, not here")
        try:
            TrainTask.from_dict({**rest, "model": arch})
        except ConfigError as e:
            raise ConfigError(f"{where} (train): {e}") from None
        return cls(arch=arch, settings=rest)

    def to_value(self) -> dict:
        if self.checkpoint is not None:
            return {"checkpoint": self.checkpoint}
        return {"arch": self.arch, **copy.deepcopy(self.settings)}


@dataclass
class Stage:
    """One step of a recipe: a registered task, its config, its sweep axes and where its inputs come from."""

    task: str
    name: str = ""
    config: dict = field(default_factory=dict)
    sweep: dict = field(default_factory=dict)  # the same shape as config; every leaf is a list of values
    source: str | None = None  # `from:` an earlier stage, model, teacher or none (default: the previous stage)
    teacher: str | None = None  # distill only: where the teacher comes from (default: the recipe's teacher)

    @classmethod
    def from_dict(cls, d: Any, index: int) -> Stage:
        where = f"stage {index + 1}"
        if not isinstance(d, dict):
            raise ConfigError(f"{where} must be a mapping with task, config, sweep, from; got {quoted(d)}")
        unknown = sorted(set(d) - set(STAGE_KEYS))
        if unknown:
            raise ConfigError(f"{where} has no field {', '.join(unknown)}; fields are: {', '.join(STAGE_KEYS)}")
        task = d.get("task")
        if not isinstance(task, str):
            raise ConfigError(f"{where}: task must name a task ({', '.join(task_names())}), got {quoted(task)}")
        name = d.get("name", task)
        if not isinstance(name, str) or not name or name in (MODEL, TEACHER, NONE):
            raise ConfigError(f"{where}: name must be text other than {MODEL}, {TEACHER} or {NONE}, got {quoted(name)}")
        where = f"stage '{name}'"
        if task not in task_names():
            raise ConfigError(f"{where}: unknown task {quoted(task)}; choose from: {', '.join(task_names())}")
        for key in ("config", "sweep"):
            if not isinstance(d.get(key, {}), dict):
                raise ConfigError(f"{where}: {key} must be a mapping of {task}'s fields, got {quoted(d[key])}")
        for key in ("from", "teacher"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise ConfigError(f"{where}: {key} must name an earlier stage, {MODEL}, {TEACHER} or {NONE}")
        if d.get("teacher") is not None and task != "distill":
            raise ConfigError(f"{where}: teacher applies to distill stages only")
        return cls(task=task, name=name, config=copy.deepcopy(d.get("config", {})),
                   sweep=copy.deepcopy(d.get("sweep", {})), source=d.get("from"), teacher=d.get("teacher"))

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "task": self.task, "config": copy.deepcopy(self.config)}
        if self.sweep:
            d["sweep"] = copy.deepcopy(self.sweep)
        if self.source is not None:
            d["from"] = self.source
        if self.teacher is not None:
            d["teacher"] = self.teacher
        return d


@dataclass
class Recipe:
    """A validated recipe: building one expands it, so every stage's config is checked before anything runs."""

    dataset: str
    model: ModelSource
    stages: list[Stage]
    teacher: ModelSource | None = None
    name: str = "recipe"
    out: str = DEFAULT_OUT  # each unit writes <out>/<stage>-<key>
    data_root: str | None = None  # for every task that reads a dataset (default: the tasks' own)

    def __post_init__(self) -> None:
        self.units = expand(self)

    @classmethod
    def from_dict(cls, d: Any) -> Recipe:
        if not isinstance(d, dict):
            raise ConfigError(f"a recipe must be a mapping with dataset, model and stages, got {type(d).__name__}")
        unknown = sorted(set(d) - set(RECIPE_KEYS))
        if unknown:
            raise ConfigError(f"recipe has no field {', '.join(unknown)}; fields are: {', '.join(RECIPE_KEYS)}")
        for key in ("dataset", "model", "stages"):
            if key not in d:
                raise ConfigError(f"recipe: {key} is required")
        for key in ("dataset", "name", "out", "data_root"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise ConfigError(f"recipe: {key} must be text, got {quoted(d[key])}")
        try:
            check_dataset_name(d["dataset"])
        except ConfigError as e:
            raise ConfigError(f"recipe: {e}") from None
        if not isinstance(d["stages"], list) or not d["stages"]:
            raise ConfigError("recipe: stages must be a non-empty list")
        stages = [Stage.from_dict(s, i) for i, s in enumerate(d["stages"])]
        teacher = ModelSource.from_value(TEACHER, d["teacher"]) if d.get("teacher") is not None else None
        return cls(dataset=d["dataset"], model=ModelSource.from_value(MODEL, d["model"]), stages=stages,
                   teacher=teacher, name=d.get("name") or "recipe", out=d.get("out") or DEFAULT_OUT,
                   data_root=d.get("data_root"))

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "dataset": self.dataset, "model": self.model.to_value()}
        if self.teacher is not None:
            d["teacher"] = self.teacher.to_value()
        d["out"] = self.out
        if self.data_root is not None:
            d["data_root"] = self.data_root
        d["stages"] = [s.to_dict() for s in self.stages]
        return d

    def grid(self) -> dict[str, int]:
        """Units per stage (the implicit `model`/`teacher` training first), as `validate` prints it."""
        counts: dict[str, int] = {}
        for u in self.units:
            counts[u.stage] = counts.get(u.stage, 0) + 1
        return counts


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of text; a bigger file is a mistake or an attack
MAX_RECIPE_VALUES = 100_000  # values once YAML aliases (*name) are expanded: stops a "billion laughs"
MAX_RECIPE_UNITS = 10_000  # child runs one recipe may expand to, checked before a grid is expanded


def load_recipe(source: str | Path) -> Recipe:
    """A recipe from a file path or from YAML/JSON text; YAML tags that would build objects are refused."""
    text = str(source)
    if isinstance(source, Path) or ("\n" not in text and (text.endswith((".yaml", ".yml", ".json"))
                                                          or Path(text).is_file())):
        try:
            if Path(source).stat().st_size > MAX_RECIPE_BYTES:
                raise UserError(f"the recipe {source} is larger than {MAX_RECIPE_BYTES:,} bytes; a recipe is a "
                                f"short YAML or JSON file")
            raw = Path(source).read_bytes()
        except OSError as e:
            raise UserError(f"cannot read the recipe {source}: {e.strerror or e}") from None
        text = decode_recipe(raw, str(source))
    return Recipe.from_dict(parse_recipe(text))


def decode_recipe(raw: bytes, source: str) -> str:
    """A recipe file's bytes as text; one that is not UTF-8 is a UserError naming `source`, the byte and where."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        utf16 = " (it looks like UTF-16)" if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else ""
        raise UserError(f"cannot read the recipe {source}: it is not UTF-8 text{utf16}, byte 0x{raw[e.start]:02x} "
                        f"at offset {e.start:,}; save it as UTF-8") from None


def parse_recipe(text: str) -> Any:
    """The plain document in YAML or JSON text (yaml's SafeLoader: no tag builds an object or runs code),
    refused when it is longer than MAX_RECIPE_BYTES or holds more than MAX_RECIPE_VALUES values once its
    aliases are expanded; the values are counted on the parsed graph, before anything is copied."""
    if len(text) > MAX_RECIPE_BYTES:
        raise ConfigError(f"the recipe is {len(text):,} characters long; at most {MAX_RECIPE_BYTES:,} are allowed")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        if "python/" in str(e) or "could not determine a constructor" in str(e):
            problem = f"{problem}: recipes hold plain values only, no !!python or other object tags"
        raise ConfigError(f"the recipe is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError("the recipe is nested too deeply to read (lists or mappings inside each other hundreds of "
                          "levels down)") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values `node` holds with every alias written out; each node is counted once (memoised), so a
    few hundred bytes of nested aliases cost no more to check than to parse."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise ConfigError("the recipe refers to itself through a YAML alias (*name inside the &name it names)")
    open_nodes.add(id(node))
    children = [] if isinstance(node, yaml.ScalarNode) else (
        node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv])
    size = 1
    for child in children:
        size += _expanded_size(child, sizes, open_nodes)
        if size > MAX_RECIPE_VALUES:
            raise ConfigError(f"the recipe holds more than {MAX_RECIPE_VALUES:,} values once its YAML aliases "
                              f"(*name) are expanded; write the values out, or use fewer nested aliases")
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


def task_names() -> list[str]:
    get_task("train")  # loads every family, so their tasks are listed
    return [n for n in TASKS.names() if n != RECIPE_TASK]


# ---------------------------------------------------------------- expansion into units


@dataclass(frozen=True)
class Unit:
    """One child run: a task with its full config; `inputs` maps an input field to the unit that feeds it."""

    key: str
    stage: str
    task: str
    config: dict  # input fields hold "@<unit key>" until the upstream unit has finished
    inputs: dict[str, str]  # config field -> upstream unit key
    axes: dict  # the swept values that made this unit (its own and upstream): its run's `sweep`
    arch: str | None  # the architecture of what it produces (None when not known before running)
    feeds: bool = False  # another unit takes its artifact

    def config_with(self, paths: dict[str, str]) -> dict:
        """The config with each input field set to its upstream unit's artifact."""
        return {**self.config, **{f: paths[k] for f, k in self.inputs.items()}}

    def run_name(self, recipe: str) -> str:
        """What lists show, e.g. "kd-prune/prune sparsities=0.5"; never read back (the stage, sweep and key
        are the run's own fields)."""
        swept = " ".join(f"{k}={_short(v)}" for k, v in self.axes.items())
        name = f"{recipe}/{self.stage}{' ' + swept if swept else ''}"
        return name if len(name) <= NAME_MAX_CHARS else name[:NAME_MAX_CHARS - 3] + "..."


def _short(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


def unit_key(task: str, config: dict, dataset: str, inputs: dict[str, str]) -> str:
    """sha256 of what the unit computes: task, config (paths and input fields left out), dataset, upstream keys."""
    ignored = key_ignores(task)
    body = {k: v for k, v in config.items() if k not in ignored and k not in inputs}
    if body.get("runtime") in ("torch", ["torch"], ("torch",)):
        del body["runtime"]  # the default since runtimes came: units stored before then keep their keys
    doc = {"task": task, "config": body, "dataset": dataset, "inputs": dict(sorted(inputs.items()))}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Output:
    """What a stage (or the recipe's model/teacher) hands on: a unit's artifact, or a fixed checkpoint."""

    key: str | None = None
    path: str | None = None
    arch: str | None = None
    axes: dict = field(default_factory=dict)


def expand(recipe: Recipe) -> list[Unit]:
    """Every unit of the recipe in an order where each unit comes after the units it takes input from."""
    units: dict[str, Unit] = {}
    outputs: dict[str, list[_Output]] = {}
    names: list[str] = []

    def trained(source: str) -> list[_Output]:
        spec = recipe.model if source == MODEL else recipe.teacher
        if spec is None:
            raise ConfigError(f"the recipe has no {source}")
        if spec.checkpoint is not None:
            return [_Output(path=spec.checkpoint, arch=read_meta(spec.checkpoint).arch)]
        values = {**spec.settings, "model": spec.arch, "dataset": recipe.dataset}
        return [add(source, "train", values, {}, {}, spec.arch, where=source)]

    def add(stage: str, task: str, values: dict, ins: dict[str, _Output], axes: dict, arch: str | None,
            where: str) -> _Output:
        cls = get_task(task).config
        values = dict(values)
        fixed = {f: o.path for f, o in ins.items() if o.key is None}
        linked = {f: o.key for f, o in ins.items() if o.key is not None}
        values.update(fixed)
        values.update({f: f"@{k}" for f, k in linked.items()})
        names_of = {f.name for f in dataclasses.fields(cls)}
        if recipe.data_root is not None and "data_root" in names_of:
            values.setdefault("data_root", recipe.data_root)
        try:
            config = cls.from_dict(values).to_dict()
        except ConfigError as e:
            raise ConfigError(f"{where} ({task}): {e}") from None
        for f, k in linked.items():
            check_feed(units[k], task, f, where)
        if task in ("train", "distill"):
            arch = config["model" if task == "train" else "student"]
        key = unit_key(task, config, recipe.dataset, linked)
        if key not in units:
            if "out" in names_of:
                config.update(out=str(Path(recipe.out) / f"{safe_name(stage)}-{key[:16]}"), overwrite=True)
            for k in linked.values():
                units[k] = dataclasses.replace(units[k], feeds=True)
            units[key] = Unit(key, stage, task, config, linked, axes, arch)
        return _Output(key=key, arch=arch, axes=axes)

    def sources(stage: Stage, name: str | None, field_name: str) -> list[_Output]:
        if name in (MODEL, TEACHER):
            return trained(name)
        if name not in outputs:
            earlier = ", ".join([MODEL, *([TEACHER] if recipe.teacher else []), *names]) or MODEL
            raise ConfigError(f"stage '{stage.name}': {field_name} '{name}' is not an earlier stage; "
                              f"choose from: {earlier}")
        return outputs[name]

    for stage in recipe.stages:
        where = f"stage '{stage.name}'"
        if stage.name in outputs:
            raise ConfigError(f"{where}: the name is used by an earlier stage; give each stage its own name")
        for name in (*runner_fields(), "dataset"):
            if name in stage.config or name in stage.sweep:
                how = {"checkpoint": "from:", "student_init": "from:", "teacher": "teacher:",
                       "dataset": "the recipe's dataset"}.get(name, f"the recipe's out ({recipe.out})")
                raise ConfigError(f"{where}: {name} is set by the runner; use {how}")
        grid = sweep_grid(stage, get_task(stage.task).config)
        field_in = input_field(stage.task)
        default = NONE if field_in is None else (names[-1] if names else MODEL)
        source = stage.source or default
        if field_in is None and source != NONE:
            raise ConfigError(f"{where}: {stage.task} takes no input checkpoint, so from must be {NONE}")
        students: list[_Output | None]
        if source == NONE:
            students = [None]
        elif stage.task == "distill" and source == MODEL and recipe.model.arch is not None:
            students = [_Output(arch=recipe.model.arch)]  # a fresh student of the model's architecture
        else:
            students = sources(stage, source, "from")
        teachers: list[_Output | None] = [None]
        if stage.task == "distill":
            teacher_name = stage.teacher or (TEACHER if recipe.teacher is not None else None)
            if teacher_name is None:
                raise ConfigError(f"{where}: distill needs a teacher: give the recipe a teacher, or name a stage "
                                  f"(or {MODEL}) with teacher:")
            teachers = sources(stage, teacher_name, "teacher")
        count = len(students) * len(teachers) * len(grid)
        if len(units) + count > MAX_RECIPE_UNITS:
            raise ConfigError(f"{where}: {len(students):,} inputs x {len(teachers):,} teachers x {len(grid):,} sweep "
                              f"points make {count:,} units ({len(units) + count:,} in the recipe so far); at most "
                              f"{MAX_RECIPE_UNITS:,} are allowed: sweep fewer values or split the recipe")
        produced = []
        for student, teacher, (overrides, axes) in itertools.product(students, teachers, grid):
            values = _merge(stage.config, overrides)
            ins: dict[str, _Output] = {}
            arch = student.arch if student is not None else None
            if stage.task in ("train", "distill"):
                values["dataset"] = recipe.dataset
            if stage.task == "distill":
                ins["teacher"] = teacher
                given = values.get("student")
                if student is not None:
                    if given is not None and student.arch is not None and given != student.arch:
                        raise ConfigError(f"{where}: student is {given} but its input ({source}) is a "
                                          f"{student.arch}; drop student, or set from: {NONE} for a fresh student")
                    if student.arch is not None:
                        values["student"] = student.arch
                    if student.key is not None or student.path is not None:
                        ins["student_init"] = student
                    elif source == MODEL:
                        values.setdefault("width", recipe.model.settings.get("width", 1.0))
            elif stage.task == "train" and recipe.model.arch is not None:
                values.setdefault("model", recipe.model.arch)  # a train stage trains the recipe's model by default
            elif student is not None:
                ins[field_in] = student
            upstream_axes = {k: v for o in (student, teacher) if o is not None for k, v in o.axes.items()}
            produced.append(add(stage.name, stage.task, values, ins, {**upstream_axes, **axes}, arch, where))
        outputs[stage.name] = produced
        names.append(stage.name)
    return list(units.values())


def check_feed(upstream: Unit, task: str, field_name: str, where: str) -> None:
    """Refuses, before anything runs, an input that cannot exist or cannot be started from."""
    up = f"stage '{upstream.stage}' ({upstream.task})"
    if upstream.task != "measure" and "save" not in upstream.config:
        raise ConfigError(f"{where} takes its {field_name} from {up}, which saves no model; choose another from:")
    if not upstream.config.get("save", True):
        raise ConfigError(f"{where} takes its {field_name} from {up}, which has save: false; a stage that feeds "
                          f"another must save its model")
    quantized = getattr(get_task(upstream.task).config, "output_weights", "float") != "float"
    if upstream.task.startswith("quantize.") and quantized and task != "measure":
        raise ConfigError(f"{where} takes its {field_name} from {up}: a quantized model; compression methods start "
                          f"from a float checkpoint, so quantize last in a chain (or pick another stage with from:)")


def sweep_grid(stage: Stage, cls: type[Config]) -> list[tuple[dict, dict]]:
    """(config overrides, {dotted name: value}) for each point of the stage's sweep grid."""
    axes = list(_leaves(stage.sweep, ()))
    if not axes:
        return [({}, {})]
    for path, values in axes:
        if not isinstance(values, list) or not values:
            raise ConfigError(f"stage '{stage.name}': sweep.{'.'.join(path)} must be a non-empty list of values, "
                              f"got {quoted(values)}")
        _field_hint(stage, cls, path)
    size = 1
    for _, values in axes:
        size *= len(values)
    if size > MAX_RECIPE_UNITS:
        sizes = " x ".join(f"{len(values):,} {'.'.join(path)}" for path, values in axes)
        raise ConfigError(f"stage '{stage.name}': the sweep makes {size:,} units ({sizes}); at most "
                          f"{MAX_RECIPE_UNITS:,} are allowed: sweep fewer values or split the recipe")
    points = []
    for combo in itertools.product(*(values for _, values in axes)):
        overrides: dict = {}
        named = {}
        for (path, _), value in zip(axes, combo, strict=True):
            named[".".join(path)] = value
            if _is_list_hint(_field_hint(stage, cls, path)) and not isinstance(value, list):
                value = [value]  # a list-valued field (sparsities, bits) swept one value per child
            node = overrides
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        points.append((overrides, named))
    return points


def _leaves(d: dict, prefix: tuple[str, ...]):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, (*prefix, str(k)))
        else:
            yield (*prefix, str(k)), v


def _field_hint(stage: Stage, cls: type[Config], path: tuple[str, ...]) -> Any:
    hint: Any = cls
    for part in path:
        config_cls = _config_of(hint)
        if config_cls is None:  # inside a free-form mapping (distill settings): any value
            return Any
        hints = typing.get_type_hints(config_cls)
        if part not in hints:
            fields = ", ".join(f.name for f in dataclasses.fields(config_cls))
            raise ConfigError(f"stage '{stage.name}': sweep.{'.'.join(path)}: {config_cls.__name__} has no field "
                              f"{part}; fields are: {fields}")
        hint = hints[part]
    return hint


def _config_of(hint: Any) -> type[Config] | None:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return next((a for a in args if isinstance(a, type) and issubclass(a, Config)), None)


def _is_list_hint(hint: Any) -> bool:
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else [hint]
    return any(typing.get_origin(a) in (list, tuple) for a in args)


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


# ---------------------------------------------------------------- finding finished units (resume and reuse)


def unit_output(points: list[dict]) -> str:
    """The artifact a unit hands on: its first compressed variant's (a distilled student, a pruning level),
    else the last point's that has one (a trained model, a measured checkpoint)."""
    for p in points:
        if p.get("stage") == "variant" and p.get("artifact") and p.get("role") != "teacher":
            return str(p["artifact"])
    with_artifact = [p for p in points if p.get("artifact")]
    return str(with_artifact[-1]["artifact"]) if with_artifact else ""


def finished_units(store, units: list[Unit]) -> dict[str, tuple[str, list[dict]]]:
    """{unit key: (run id, points)} for each unit that a finished run in the store already computed (found by
    its `unit_key`), and whose artifact still exists where another unit needs it. The newest such run wins."""
    wanted = {u.key: u for u in units} | {u.key[:16]: u for u in units}  # 16 hex: units stored before schema 5
    found: dict[str, tuple[str, list[dict]]] = {}
    runs = store.list_runs(status="finished", unit_keys=[u.key for u in units])
    for run_id, key, kind in zip(runs["run_id"], runs["unit_key"], runs["kind"], strict=True):
        unit = wanted.get(str(key))
        if unit is None or unit.key in found or kind != unit.task:
            continue
        points = store.run_points(run_id)
        if unit.feeds and not is_checkpoint(unit_output(points) or "/nonexistent"):
            continue  # its model was deleted: run it again
        found[unit.key] = (run_id, points)
    return found


def as_point(d: dict) -> Point:
    """A stored point (store.run_points) back as a Point; the store's own columns are dropped."""
    return Point.from_dict({k: v for k, v in d.items() if k not in ("point_id", "run_id", "created_at")})


# ---------------------------------------------------------------- the recipe task: the driver


@dataclass
class RecipeTask(Config):
    recipe: dict[str, Any] = param(default_factory=lambda: copy.deepcopy(DEFAULT_RECIPE),
                                   help="the recipe document (see examples/)", cli=False)
    executor: str = param("local", "where the units run: local (this process) or ray (a Ray cluster; "
                                   "pip install -r requirements-ray.txt)")
    workers: int = param(1, "units the local executor runs at once (PyTorch already uses every core)", lo=1, hi=64)
    ray_address: str | None = param(None, "ray: the cluster to use: auto (the one `ray start` runs on this "
                                          "machine), ray://HEAD:10001 (Ray Client); default: start a local Ray")
    ray_cpus: float = param(1.0, "ray: CPUs each unit declares (and the threads it uses)", lo=0.1, hi=1024)
    ray_gpus: float = param(0.0, "ray: GPUs each unit declares (a unit with none sees no GPU; a fraction shares "
                                 "one)", lo=0.0, hi=64)
    ray_shared: bool = param(False, "ray: the recipe's out is on storage every node mounts at the same path: "
                                    "workers write checkpoints there instead of sending them back as bytes")

    def validate(self) -> None:
        EXECUTORS.get(self.executor).check_available()
        if self.executor != "ray":
            given = [f for f, default in RAY_DEFAULTS.items() if getattr(self, f) != default]
            if given:
                raise ConfigError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to the ray executor "
                                  f"only (executor is {self.executor})")
        Recipe.from_dict(self.recipe)

    def executor_options(self) -> dict[str, Any]:
        """The chosen executor's own options, for engine.run.executors.make_executor."""
        if self.executor != "ray":
            return {}
        return {"address": self.ray_address or None, "cpus": self.ray_cpus, "gpus": self.ray_gpus,
                "shared": self.ray_shared}


RAY_DEFAULTS = {"ray_address": None, "ray_cpus": 1.0, "ray_gpus": 0.0, "ray_shared": False}


@dataclass
class UnitResult:
    unit: Unit
    status: str  # finished | reused | failed | cancelled | interrupted | skipped (an input failed)
    run_id: str | None = None
    artifact: str = ""
    error: str | None = None
    points: list[Point] = field(default_factory=list)


@register_task(RECIPE_TASK, RecipeTask, "run a recipe: chained tasks with sweep axes; finished children are reused")
def recipe_task(cfg: RecipeTask, ctx: RunContext) -> list[Point]:
    if not isinstance(ctx, StoreContext):
        raise UserError("a recipe runs in a run store (its children are runs): run it with engine.run.jobs.run_sync "
                        "or the job runner")
    recipe = Recipe.from_dict(cfg.recipe)
    executor = make_executor(cfg.executor, ctx.store, workers=cfg.workers, **cfg.executor_options())
    try:
        results = run_recipe(recipe, ctx, executor)
    finally:
        executor.shutdown()
    return [p for r in results for p in r.points]


@dataclass
class UnitTally:
    """Units done out of every unit planned, over one recipe or several run as one (a study): the run's progress.
    A study plans all its recipes' units before the first runs, so its progress never goes back."""

    planned: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    _last: float = 0.0

    def report(self, ctx, stage: str) -> None:
        total = len(self.planned | self.done)
        done = len(self.done)
        self._last = max(self._last, done / total if total else 1.0)  # a plan may grow: the bar never goes back
        ctx.progress(Progress(self._last, f"{done}/{total} units done: {stage}"))


def run_recipe(recipe: Recipe, ctx, executor, tally: UnitTally | None = None) -> list[UnitResult]:
    """Runs the units not already in the store as children of ctx's run; ready units go to the executor together.

    A failed unit's dependants are skipped and its siblings go on; the run then fails naming them. The
    parent's cancel token cancels every child still running (finished children keep their points).
    `tally` counts the units of a run made of several recipes (a study) for its progress.
    """
    store, parent = ctx.store, ctx.run_id
    units = recipe.units
    tally = tally if tally is not None else UnitTally()
    tally.planned.update(u.key for u in units)
    results: dict[str, UnitResult] = {}
    for key, (run_id, points) in finished_units(store, units).items():
        unit = next(u for u in units if u.key == key)
        results[key] = UnitResult(unit, "reused", run_id, unit_output(points),
                                  points=[_tagged(as_point(p), unit, run_id, reused=True) for p in points])
        ctx.log_event(f"{unit.run_name(recipe.name)}: reusing finished run {run_id}")
    total = len(units)
    ctx.log_event(f"recipe {recipe.name}: {total} unit(s), {len(results)} already in the store")
    if results:
        tally.done.update(results)
        tally.report(ctx, "reused from the store")
    running: dict[Any, Unit] = {}  # handle -> unit
    try:
        while True:
            ctx.cancel.raise_if_cancelled()
            for unit in units:
                if unit.key in results or unit.key in {u.key for u in running.values()}:
                    continue
                ups = [results.get(k) for k in unit.inputs.values()]
                if any(r is not None and r.status not in ("finished", "reused") for r in ups):
                    results[unit.key] = UnitResult(unit, "skipped", error="an input unit did not finish")
                    continue
                if any(r is None for r in ups):
                    continue
                handle = _submit(store, executor, recipe, unit, {k: results[k].artifact for k in unit.inputs.values()},
                                 parent, results)
                if handle is not None:
                    running[handle] = unit
            if not running:
                break
            for outcome in executor.wait(list(running), timeout=0.5):
                unit = running.pop(outcome.handle)
                results[unit.key] = _result(store, unit, outcome)
                if outcome.status == "finished" and unit.feeds and not results[unit.key].artifact:
                    results[unit.key].status = "failed"
                    results[unit.key].error = "it saved no checkpoint for the next stage"
                if results[unit.key].status in ("finished", "reused"):
                    tally.done.add(unit.key)
                tally.report(ctx, unit.stage)
    except BaseException as e:
        _stop(store, executor, running, e)
        raise
    bad = [r for r in results.values() if r.status not in ("finished", "reused")]
    if bad:
        listed = "; ".join(f"{r.unit.run_name(recipe.name)}: {r.status}{': ' + r.error if r.error else ''}"
                           for r in bad[:5])
        raise UserError(f"{len(bad)} of {total} recipe units did not finish ({listed}{'; ...' if len(bad) > 5 else ''})"
                        f"; the other units' results are in the store, and running the recipe again runs only these")
    return [results[u.key] for u in units]


def _stop(store, executor, running: dict, error: BaseException) -> None:
    """Cancels every running child. A user's cancel waits for them to stop; a shutdown (SIGTERM, Ctrl-C)
    waits SHUTDOWN_GRACE_S and then records the ones still inside a step as interrupted, as the job runner does."""
    reason = None if isinstance(error, Cancelled) else (
        "the process received SIGTERM" if isinstance(error, SystemExit) else "interrupted by Ctrl-C"
        if isinstance(error, KeyboardInterrupt) else f"the recipe driver failed: {type(error).__name__}")
    for handle in running:
        executor.cancel(handle, reason)
    deadline = None if reason is None else time.monotonic() + SHUTDOWN_GRACE_S
    while running and (deadline is None or time.monotonic() < deadline):
        for outcome in executor.wait(list(running), timeout=0.5):
            _result(store, running.pop(outcome.handle), outcome)
    for handle in running:
        store.end_run(executor.run_id(handle), "interrupted", message=f"interrupted: {reason}")


def _submit(store, executor, recipe: Recipe, unit: Unit, paths: dict[str, str], parent: str,
            results: dict[str, UnitResult]):
    try:
        _, cfg = resolve_task(unit.task, unit.config_with(paths))
    except UserError as e:  # e.g. an upstream artifact another task cannot start from
        results[unit.key] = UnitResult(unit, "failed", error=str(e))
        store.log_event(parent, f"{unit.run_name(recipe.name)}: {e}", "error")
        return None
    run_id = create_run(store, unit.task, cfg, name=unit.run_name(recipe.name), parent=parent, stage=unit.stage,
                        sweep=unit.axes, unit_key=unit.key)
    if not executor.records_live:
        store.start_run(run_id)
    return executor.submit(unit, cfg, run_id)


def _result(store, unit: Unit, outcome) -> UnitResult:
    """Records an outcome the executor did not record itself (a remote worker), and turns it into a result."""
    if not outcome.recorded:
        for p in outcome.points:
            store.add_point(outcome.run_id, p)
        for path in outcome.artifacts:
            store.add_artifact(outcome.run_id, path, "checkpoint")
        store.end_run(outcome.run_id, outcome.status, message=outcome.status, error=outcome.error,
                      traceback=outcome.traceback)
    dicts = [p.to_dict() for p in outcome.points]
    return UnitResult(unit, outcome.status, outcome.run_id, unit_output(dicts), outcome.error,
                      [_tagged(p, unit, outcome.run_id, reused=False) for p in outcome.points])


def _tagged(point: Point, unit: Unit, run_id: str, reused: bool) -> Point:
    """The point with where it sits in the recipe (for the CLI's listing; the store keeps the plain point)."""
    return point.replace(extra={**point.extra, "recipe_stage": unit.stage, "recipe_key": unit.key[:16],
                                "run_id": run_id, "reused": reused})


# ---------------------------------------------------------------- finetune: a thin task for recipes


@dataclass
class FinetuneTask(FromCheckpoint):
    """Fine-tunes the checkpoint (pruned weights stay zero)."""

    finetune: FinetuneConfig = param(default_factory=lambda: FinetuneConfig(mode="last", train=finetune_training()))

    def validate(self) -> None:
        super().validate()
        if self.finetune.mode == "none":
            raise ConfigError("finetune.mode must be last or all for a finetune stage, got none")


@register_task("finetune", FinetuneTask, "fine-tune a checkpoint (the classifier or every layer), keeping zeros at zero")
def finetune_task(cfg: FinetuneTask, ctx: RunContext) -> list[Point]:
    meta = read_meta(cfg.checkpoint)
    out = cfg.out or default_out_dir(meta.arch, meta.dataset, "finetune")
    claim = (claim_output(out, [cfg.checkpoint], cfg.overwrite, describe={"task": "finetune"}) if cfg.save
             else contextlib.nullcontext())
    with claim:
        model, meta, data = open_checkpoint(cfg.checkpoint, cfg.data_root)
        if meta.weights_format != "float":
            raise CheckpointError(f"{cfg.checkpoint} is not a float checkpoint")
        masks = {name: m.weight.detach() != 0 for name, m in prunable_weights(model)}
        history = finetune(model, data, cfg.finetune, classifier=MODELS.get(meta.arch).classifier, masks=masks,
                           progress=scaled(ctx.progress, 0.0, 0.9), cancel=ctx.cancel)
        for row in history:
            ctx.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        last = next((s for s in reversed(meta.lineage) if s.get("level") is not None), {})
        params = cfg.finetune.to_dict()
        artifact = ""
        if cfg.save:
            artifact = save_float_variant(out, model.eval(), meta, family="train", method="finetune", params=params,
                                          input_checkpoint=cfg.checkpoint)
            ctx.log_artifact(artifact, "checkpoint")
        compressed = any(step.get("family") in COMPRESSING for step in meta.lineage)
        return [measure_point(ctx, model.eval(), data, family="train", method="finetune",
                              stage="variant" if compressed else "baseline", params=params, level=last.get("level"),
                              level_name=last.get("level_name", ""), input_checkpoint=cfg.checkpoint,
                              artifact=artifact, latency=cfg.latency)]
