"""The "distill" task: a teacher checkpoint, a student architecture and a method in; trained
students out, each saved as a checkpoint directory and measured.

Everything a user can get wrong is rejected before any training: an unknown method or setting,
a teacher trained on another dataset, a teacher and student that disagree on the classes, and
layer names that do not exist (checked when the method is built).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

import engine.distill  # noqa: F401 - registers every method before a config names one
from engine.checkpoint import CheckpointMeta, load_checkpoint, read_meta, save_checkpoint
from engine.config import Config, check_range
from engine.context import RunContext
from engine.data import DEFAULT_ROOT, Dataset
from engine.distill.base import DISTILLERS, DistillSetup
from engine.errors import ConfigError
from engine.models import MODELS, build_model
from engine.progress import Progress, scaled
from engine.tasks import check_dataset_name, default_out_dir, measure_point, open_checkpoint, register_task
from engine.train import TrainConfig, evaluate, fit, pick_device, seed_everything


@dataclass
class DistillTask(Config):
    teacher: str = ""  # teacher checkpoint directory
    student: str = "cnn_s"  # student architecture from the zoo
    method: str = "kd"  # distillation method (see `python -m engine distill-methods`)
    params: dict = field(default_factory=dict)  # the method's settings, e.g. {"temperature": 4.0}; missing = default
    dataset: str | None = None  # defaults to the teacher's dataset; any other is rejected
    student_init: str | None = None  # start the student from this checkpoint (same architecture and classes)
    width: float = 1.0  # student width multiplier, where the architecture has one
    train_subset: int | None = None  # train on this many training images (a seeded sample), for quick runs
    data_root: str = DEFAULT_ROOT
    out: str | None = None  # checkpoint directory; default checkpoints/<student>-<dataset>-<method>-<time>
    latency: bool = True  # time the final students (off for quick tests)
    train: TrainConfig = field(default_factory=TrainConfig)  # the same budget for every method

    def validate(self) -> None:
        if not self.teacher:
            raise ConfigError("teacher must name a teacher checkpoint directory")
        MODELS.get(self.student)
        self.method_config()
        if self.dataset is not None:
            check_dataset_name(self.dataset)
        if self.train_subset is not None:
            check_range("train_subset", self.train_subset, 1, 10_000_000)

    def method_config(self) -> Config:
        """The method's own validated config, built from `params` (missing settings take defaults)."""
        cls = DISTILLERS.get(self.method).config
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(self.params) - known)
        if unknown:
            raise ConfigError(f"method '{self.method}' has no setting {', '.join(unknown)}; its settings are: "
                              f"{', '.join(sorted(known)) or 'none'}")
        return cls.from_dict(typed_params(cls, self.params))


def typed_params(cls: type[Config], params: dict) -> dict:
    """Checks each setting against its declared type (a recipe or --param may carry text);
    a comma-separated string is accepted for a list of layer names."""
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in params.items():
        hint = hints.get(name)
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if hint is float and not is_number:
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if hint is int and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ConfigError(f"{name} must be a whole number, got {value!r}")
        if hint is bool and not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        if typing.get_origin(hint) is tuple:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} must be a list of layer names, got {value!r}")
        out[name] = value
    return out


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


# ---------------------------------------------------------------- the task


@register_task("distill", DistillTask, "distil a teacher checkpoint into a student with one of the distillation methods")
def distill_task(cfg: DistillTask, ctx: RunContext) -> list[dict]:
    method_cfg = cfg.method_config()
    teacher_meta = read_meta(cfg.teacher)
    check_teacher_dataset(teacher_meta, cfg.dataset or teacher_meta.dataset)
    init_meta = read_meta(cfg.student_init) if cfg.student_init else None
    if init_meta is not None:
        check_student_init(init_meta, cfg.student, teacher_meta)
    teacher, _, data = open_checkpoint(cfg.teacher, cfg.data_root)
    check_same_classes(teacher_meta.num_classes, data.num_classes, f"the dataset '{data.name}'")
    train_data = with_train_subset(data, cfg.train_subset, cfg.train.seed) if cfg.train_subset else data
    c, h, _ = data.input_shape
    width = init_meta.width if init_meta is not None else cfg.width

    def new_student(seed: int):
        seed_everything(seed)
        return build_model(cfg.student, data.num_classes, c, h, width)

    student = load_checkpoint(cfg.student_init)[0] if cfg.student_init else new_student(cfg.train.seed)
    device = pick_device()
    setup = DistillSetup(student, teacher, MODELS.get(cfg.student), MODELS.get(teacher_meta.arch), train_data,
                         cfg.train, device, new_student)
    ctx.progress(Progress(0.0, "preparing the teacher"))
    distiller = DISTILLERS.get(cfg.method)(method_cfg, setup)
    ctx.log_event(f"{cfg.method}: {teacher_meta.arch} -> {cfg.student} on {data.name}, "
                  f"{len(train_data.train)} training images, {cfg.train.epochs} epochs")
    history = fit(distiller.model, train_data, cfg.train, step=distiller.step, extra_modules=distiller.extra_modules,
                  progress=scaled(ctx.progress, 0.0, 0.9), cancel=ctx.cancel, device=device)
    students = distiller.finish()
    for row in history:
        ctx.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    ctx.progress(Progress(0.9, "measuring"))
    teacher_accuracy = evaluate(teacher, data.test)["accuracy"]
    params = {**method_cfg.to_dict(), "teacher": cfg.teacher, "student": cfg.student,
              "student_init": cfg.student_init, "train_subset": cfg.train_subset, "train": cfg.train.to_dict()}
    out = Path(cfg.out or default_out_dir(cfg.student, data.name, cfg.method))
    points = []
    for i, model in enumerate(students, start=1):
        path = str(out / f"student{i}") if len(students) > 1 else str(out)
        meta = CheckpointMeta(
            arch=cfg.student, num_classes=data.num_classes, in_channels=c, image_size=h, dataset=data.name,
            class_names=data.class_names, width=width, train_config=cfg.train.to_dict(),
            layer_shapes=init_meta.layer_shapes if init_meta is not None and i == 1 else "arch",
            history=[*(init_meta.history if init_meta is not None and i == 1 else []),
                     {"method": cfg.method, "params": params}])
        save_checkpoint(path, model, meta)
        ctx.log_artifact(path, "checkpoint")
        extra = {"student_index": i} if len(students) > 1 else {}
        points.append(measure_point(ctx, model, data, method=cfg.method, params=params, stage="distilled",
                                    artifact=path, latency=cfg.latency, checkpoint=path, teacher=cfg.teacher,
                                    teacher_accuracy=teacher_accuracy, **extra))
    ctx.progress(Progress(1.0, "done"))
    return points
