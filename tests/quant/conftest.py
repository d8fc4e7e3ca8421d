"""Fixtures for the quantization tests: a tiny digits checkpoint, a recording context, a latency spy."""

from __future__ import annotations

import pytest

import engine.deploy.measure
import engine.methods.quant.common
from engine.core.context import RunContext


class RecordingContext(RunContext):
    """Keeps events, metrics and progress as the job runner's context would store them."""

    def __init__(self, cancel_after_points: int | None = None) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []
        self.metrics: list[tuple[int, dict]] = []
        self.fractions: list[float] = []
        self.cancel_after_points = cancel_after_points

    def progress(self, p) -> None:
        self.fractions.append(p.fraction)

    def log_point(self, point) -> None:
        super().log_point(point)
        if self.cancel_after_points is not None and len(self.points) >= self.cancel_after_points:
            self.cancel.cancel()

    def log_event(self, message: str, level: str = "info") -> None:
        self.events.append((level, message))

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.metrics.append((step, dict(metrics)))


@pytest.fixture
def ctx() -> RecordingContext:
    return RecordingContext()


@pytest.fixture
def cancelling_ctx():
    """make(n): a context that cancels its run once n points are logged."""
    return lambda n: RecordingContext(cancel_after_points=n)


@pytest.fixture
def latency_spy(monkeypatch):
    """Times for real (briefly: the suite's `smoke` policy) and records every module whose latency was measured."""
    real = engine.deploy.measure.measure_latency
    timed: list = []

    def spy(runner, example, batch_sizes=(1, 32), reference=None, policy=None):
        timed.append(runner)
        return real(runner, example, batch_sizes, reference=reference, policy=policy)

    monkeypatch.setattr(engine.deploy.measure, "measure_latency", spy)
    monkeypatch.setattr(engine.methods.quant.common, "measure_latency", spy)
    return timed


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> str:
    """cnn_s trained 1 epoch on the 8x8 digits: a checkpoint every method can run on in seconds."""
    from engine.methods.tasks import run_task
    from engine.methods.train import TrainTask
    from engine.model.train import TrainConfig

    out = str(tmp_path_factory.mktemp("quant-digits") / "cnn_s")
    run_task("train", TrainTask(dataset="digits", model="cnn_s", out=out, latency=False,
                                train=TrainConfig(epochs=1, lr=0.05)), RunContext())
    return out


@pytest.fixture(scope="session")
def digits_fake_run(digits_checkpoint, tmp_path_factory):
    """`quantize.fake` at 2, 4 and 32 bits on the digits checkpoint, saved: (points, out directory)."""
    out = str(tmp_path_factory.mktemp("quant-fake") / "run")
    points = run_task_quietly("quantize.fake", {"checkpoint": digits_checkpoint, "bits": [2, 4, 32],
                                                "latency": False, "out": out})
    return points, out


@pytest.fixture(scope="session")
def digits_int8_run(digits_checkpoint, tmp_path_factory):
    """`quantize.ptq_int8` on the digits checkpoint, saved: (points, out directory)."""
    out = str(tmp_path_factory.mktemp("quant-int8") / "run")
    points = run_task_quietly("quantize.ptq_int8", {"checkpoint": digits_checkpoint, "calib_batches": 2,
                                                    "latency": False, "out": out})
    return points, out


def run_task_quietly(name: str, recipe: dict):
    from engine.methods.tasks import run_task

    return run_task(name, recipe, RunContext())

