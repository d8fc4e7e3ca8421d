"""Fixtures for the distillation tests, all on `digits` (8x8, 1,293 training images) to stay fast:
a trained teacher and student made once per session, untrained checkpoints for the rejection
cases, and one shared run per method."""

from __future__ import annotations

import pytest

from engine.core.context import RunContext
from engine.model.checkpoint import CheckpointMeta, save_checkpoint
from engine.model.zoo import build_model


class RecordingContext(RunContext):
    """Keeps every metric row and artifact, as the job runner's context would store them."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int, dict]] = []
        self.artifacts: list[str] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_artifact(self, path: str, kind: str) -> None:
        self.artifacts.append(path)


def make_checkpoint(directory, arch: str, dataset: str, num_classes: int, side: int) -> str:
    """An untrained checkpoint: enough for checks that must fail before any training."""
    model = build_model(arch, num_classes, 1, side)
    meta = CheckpointMeta(arch=arch, num_classes=num_classes, in_channels=1, image_size=side, dataset=dataset,
                          class_names=[str(i) for i in range(num_classes)])
    save_checkpoint(directory, model, meta)
    return str(directory)


def train_on_digits(tmp_path_factory, arch: str, epochs: int) -> str:
    from engine.methods.tasks import run_task
    from engine.methods.train import TrainTask
    from engine.model.train import TrainConfig

    out = tmp_path_factory.mktemp(f"digits-{arch}") / "checkpoint"
    run_task("train", TrainTask(dataset="digits", model=arch, out=str(out), latency=False,
                                train=TrainConfig(epochs=epochs)), RunContext())
    return str(out)


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory) -> str:
    """cnn_l trained 2 epochs on digits (about 98% test accuracy), as a checkpoint directory."""
    return train_on_digits(tmp_path_factory, "cnn_l", epochs=2)


@pytest.fixture(scope="session")
def digits_student(tmp_path_factory) -> str:
    """cnn_s trained 1 epoch on digits, as a checkpoint directory (for warm starts)."""
    return train_on_digits(tmp_path_factory, "cnn_s", epochs=1)


@pytest.fixture(scope="session")
def checkpoint_maker():
    """make_checkpoint(directory, arch, dataset, num_classes, side) -> directory (untrained weights)."""
    return make_checkpoint


@pytest.fixture(scope="session")
def five_class_student(tmp_path_factory) -> str:
    """A cnn_s checkpoint on digits with 5 classes (untrained): it cannot learn a 10-class teacher."""
    return make_checkpoint(tmp_path_factory.mktemp("five-class"), "cnn_s", "digits", 5, 8)


@pytest.fixture
def recording_context() -> RecordingContext:
    return RecordingContext()


class MethodRuns:
    """One run per method (one epoch on digits' 1,293 training images), made on first use and shared.

    Each entry holds the points, the context, and what the teacher went through: the mode it was
    in every time it ran, and the teacher module itself (to check its weights and gradients).
    """

    def __init__(self, teacher_checkpoint: str, root) -> None:
        self.teacher_checkpoint = teacher_checkpoint
        self.root = root
        self.done: dict[tuple, dict] = {}

    def get(self, method: str, settings: dict | None = None) -> dict:
        """The run of `method` with `settings` (default: the method's defaults, as a user runs it)."""
        key = (method, tuple(sorted((settings or {}).items())))
        if key not in self.done:
            self.done[key] = self._run(method, settings or {}, f"{method}-{len(self.done)}")
        return self.done[key]

    def _run(self, method: str, settings: dict, name: str) -> dict:
        import engine.methods.distill.task as task_module
        from engine.methods.distill import DistillTask
        from engine.methods.tasks import open_checkpoint, run_task
        from engine.model.train import TrainConfig

        seen: dict = {"modes": [], "teachers": []}

        def spy(directory, data_root):
            model, meta, data = open_checkpoint(directory, data_root)
            if directory == self.teacher_checkpoint:
                model.register_forward_pre_hook(lambda m, args: seen["modes"].append(m.training))
                seen["teachers"].append(model)
            return model, meta, data

        cfg = DistillTask(teacher=self.teacher_checkpoint, student="cnn_s", method=method, settings=settings,
                          out=str(self.root / name), latency=False, train=TrainConfig(epochs=1, batch_size=32))
        ctx = RecordingContext()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(task_module, "open_checkpoint", spy)
            points = run_task("distill", cfg, ctx)
        return {"points": points, "ctx": ctx, **seen}


@pytest.fixture(scope="module")
def method_runs(digits_teacher, tmp_path_factory) -> MethodRuns:
    return MethodRuns(digits_teacher, tmp_path_factory.mktemp("distill-runs"))
