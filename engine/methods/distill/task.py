"""The "distill" task: a teacher checkpoint, a student architecture and a method in; the teacher's
baseline point and one point per trained student out, each student saved as a checkpoint directory.

Everything a user can get wrong is rejected before any training: an unknown method or setting,
a teacher trained on another dataset, a teacher and student that disagree on the classes, an output
directory that would overwrite an input, and layer names that do not exist (checked when the
method is built).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.core.config import Config, param
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Point
from engine.core.progress import Progress, scaled
from engine.deploy.runtimes import RUNTIME_NAMES
from engine.methods.distill.base import DISTILLERS, DistillSetup
from engine.methods.tasks import (
    check_dataset_name,
    measure_point,
    open_checkpoint,
    register_task,
    save_float_variant,
)
from engine.model.checkpoint import CheckpointMeta, normalisation, read_meta
from engine.model.data import DEFAULT_ROOT, Dataset
from engine.model.outputs import SaveOptions, claim_output, default_out_dir
from engine.model.train import TrainConfig, fit, pick_device, seed_everything
from engine.model.zoo import MODELS, build_model


@dataclass
class DistillTask(SaveOptions):
    teacher: str = param("", "teacher checkpoint directory (required: no default)", role="input")
    student: str = param("cnn_s", "student architecture from the zoo (see `models`), or timm:<name> / torchvision:<name>")
    method: str = param("kd", "distillation method (see `distill-methods`)", cli=False)
    # the method's own config (KDConfig, DKDConfig, ...); a mapping in recipes; missing settings take defaults
    settings: Any = param(None, "the method's settings, e.g. {temperature: 4.0}; missing = default", cli=False)
    dataset: str | None = param(None, "dataset to distil on (default: the teacher's; any other is rejected)")
    student_init: str | None = param(None, "start the student from this checkpoint, of the same architecture and classes "
                                                "(default: a fresh student)", role="input")
    width: float = param(1.0, "student width multiplier, where the architecture has one", lo=0.05, hi=16)
    train_subset: int | None = param(None, "train on this many training images (a seeded sample; default: all), for quick runs",
                                     lo=1, hi=10_000_000)
    data_root: str = param(DEFAULT_ROOT, "where torchvision datasets live", role="machine")
    latency: bool = param(True, "time the teacher and the students (--no-latency: latency fields stay empty)", role="runner")
    runtime: str = param("torch", "what runs every model measured (accuracy and latency): torch, or onnxruntime "
                                  "(engine/deploy/runtimes.py)", choices=RUNTIME_NAMES, role="runner")
    train: TrainConfig = param(default_factory=TrainConfig)  # the same budget for every method

    def __post_init__(self) -> None:
        self.settings = method_settings(self.method, self.settings)
        super().__post_init__()

    def validate(self) -> None:
        if not self.teacher:
            raise ConfigError("teacher must name a teacher checkpoint directory")
        MODELS.get(self.student)
        if self.dataset is not None:
            check_dataset_name(self.dataset)


def method_settings(method: str, settings: Any) -> Config:
    """The method's validated config: from a mapping (missing = default), None (all defaults) or an instance."""
    cls = DISTILLERS.get(method).config
    if settings is None:
        settings = {}
    if isinstance(settings, cls):
        return settings
    if isinstance(settings, Config):
        raise ConfigError(f"settings is a {type(settings).__name__} but method '{method}' takes a {cls.__name__}")
    try:
        return cls.from_dict(settings)
    except ConfigError as e:
        raise ConfigError(f"settings of method '{method}': {e}") from None


# ---------------------------------------------------------------- checks made before training


def check_teacher_dataset(teacher: CheckpointMeta, dataset: str) -> None:
    if teacher.dataset != dataset:
        raise ConfigError(f"the teacher was trained on '{teacher.dataset}', not on '{dataset}'; distil on "
                          f"'{teacher.dataset}' or pick a teacher trained on '{dataset}'")


def check_same_classes(teacher_classes: int, student_classes: int, student: str = "the student") -> None:
    if teacher_classes != student_classes:
        raise ConfigError(f"the teacher predicts {teacher_classes} classes but {student} predicts {student_classes}; "
                          f"teacher and student must have the same num_classes")


def check_student_init(init: CheckpointMeta, student_arch: str, teacher: CheckpointMeta) -> None:
    check_same_classes(teacher.num_classes, init.num_classes, "the student_init checkpoint")
    if init.arch != student_arch:
        raise ConfigError(f"student_init is a {init.arch} checkpoint but student is {student_arch}; "
                          f"set student to {init.arch}")
    if init.dataset != teacher.dataset:
        raise ConfigError(f"student_init was trained on '{init.dataset}' but the teacher on '{teacher.dataset}'")


def with_train_subset(data: Dataset, n: int, seed: int) -> Dataset:
    """The same dataset with `n` training images drawn with `seed` (val and test unchanged)."""
    if n > len(data.train):
        raise ConfigError(f"train_subset must be at most {len(data.train)} (the training images), got {n}")
    idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return dataclasses.replace(data, train=data.train.subset(idx))


def run_params(cfg: DistillTask) -> dict:
    """What produced a student: the method's settings, the student and the training budget."""
    return {**cfg.settings.to_dict(), "teacher": cfg.teacher, "student": cfg.student, "width": cfg.width,
            "student_init": cfg.student_init, "train_subset": cfg.train_subset, "train": cfg.train.to_dict()}


# ---------------------------------------------------------------- the task


@register_task("distill", DistillTask, "distil a teacher checkpoint into a student with one of the distillation methods",
               input="student_init")
def distill_task(cfg: DistillTask, ctx: RunContext) -> list[Point]:
    teacher_meta = read_meta(cfg.teacher)
    check_teacher_dataset(teacher_meta, cfg.dataset or teacher_meta.dataset)
    init_meta = read_meta(cfg.student_init) if cfg.student_init else None
    if init_meta is not None:
        check_student_init(init_meta, cfg.student, teacher_meta)
    teacher, _, data = open_checkpoint(cfg.teacher, cfg.data_root)
    check_same_classes(teacher_meta.num_classes, data.num_classes, f"the dataset '{data.name}'")
    train_data = with_train_subset(data, cfg.train_subset, cfg.train.seed) if cfg.train_subset else data
    out = cfg.out or default_out_dir(cfg.student, data.name, f"distill-{cfg.method}")
    claim = (claim_output(out, [cfg.teacher, cfg.student_init], cfg.overwrite,
                          describe={"task": "distill", "method": cfg.method}) if cfg.save else contextlib.nullcontext())
    with claim:
        return _distill(cfg, ctx, teacher, teacher_meta, init_meta, data, train_data, Path(out))


def _distill(cfg: DistillTask, ctx: RunContext, teacher: torch.nn.Module, teacher_meta: CheckpointMeta,
             init_meta: CheckpointMeta | None, data: Dataset, train_data: Dataset, out: Path) -> list[Point]:
    c, h, _ = data.input_shape
    width = init_meta.width if init_meta is not None else cfg.width
    params = run_params(cfg)

    def new_student(seed: int):
        seed_everything(seed)
        return build_model(cfg.student, data.num_classes, c, h, width)

    student = open_checkpoint(cfg.student_init, cfg.data_root)[0] if cfg.student_init else new_student(cfg.train.seed)
    device = pick_device()
    setup = DistillSetup(student, teacher, MODELS.get(cfg.student), MODELS.get(teacher_meta.arch), train_data,
                         cfg.train, device, new_student, teacher_width=teacher_meta.width)
    ctx.progress(Progress(0.0, "preparing the teacher"))
    distiller = DISTILLERS.get(cfg.method)(cfg.settings, setup)
    ctx.log_event(f"{cfg.method}: {teacher_meta.arch} -> {cfg.student} on {data.name}, "
                  f"{len(train_data.train)} training images, {cfg.train.epochs} epochs")
    history = fit(distiller.model, train_data, cfg.train, step=distiller.step, extra_modules=distiller.extra_modules,
                  progress=scaled(ctx.progress, 0.0, 0.9), cancel=ctx.cancel, device=device)
    students = distiller.finish()
    for row in history:
        ctx.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    ctx.progress(Progress(0.9, "measuring the teacher and the students"))
    common = {"family": "distill", "method": cfg.method, "params": params, "input_checkpoint": cfg.teacher,
              "latency": cfg.latency}
    teacher_point = measure_point(ctx, teacher, data, stage="baseline", role="teacher", artifact=cfg.teacher,
                                  **common)
    fresh = CheckpointMeta(arch=cfg.student, num_classes=data.num_classes, in_channels=c, image_size=h,
                           dataset=data.name, class_names=data.class_names, width=width, **normalisation(data))
    points = [teacher_point]
    for i, model in enumerate(students, start=1):
        artifact = ""
        if cfg.save:
            # the run's student continues student_init's lineage; dml's other students start fresh
            base = init_meta if init_meta is not None and i == 1 else fresh
            changes = {"train_config": cfg.train.to_dict()}
            arch = getattr(model, "arch", cfg.student)
            if arch != cfg.student:  # a student of its own architecture (simkd's conv: backbone + teacher head)
                changes["arch"] = arch
                if teacher_meta.layer_shapes == "shape":  # the head it carries is the pruned teacher's
                    changes["layer_shapes"] = "shape"
            path = out / f"student{i}" if len(students) > 1 else out
            artifact = save_float_variant(str(path), model, dataclasses.replace(base, **changes),
                                          family="distill", method=cfg.method, params=params,
                                          input_checkpoint=cfg.teacher)
            ctx.log_artifact(artifact, "checkpoint")
        extra = {"student_index": i} if len(students) > 1 else {}
        points.append(measure_point(ctx, model, data, stage="variant", role="student", artifact=artifact,
                                    teacher_accuracy=teacher_point.accuracy, **extra, **common))
    ctx.progress(Progress(1.0, "done"))
    return points
