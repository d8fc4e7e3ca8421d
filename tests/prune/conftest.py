"""Pruning fixtures: a tiny checkpoint on the 8x8 digits, and a way to run a method as a list of dicts."""

from __future__ import annotations

import pytest

from engine.core.context import RunContext
from engine.methods.tasks import run_task


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> str:
    """cnn_s trained 2 epochs on scikit-learn's 8x8 digits (seconds, not minutes; about 97% accuracy)."""
    from engine.methods.train import TrainTask
    from engine.model.train import TrainConfig

    out = str(tmp_path_factory.mktemp("prune-digits") / "cnn_s")  # a new directory: train refuses an existing one
    run_task("train", TrainTask(dataset="digits", model="cnn_s", out=out, latency=False,
                                train=TrainConfig(epochs=2, seed=0)), RunContext())
    return out


@pytest.fixture
def prune(digits_checkpoint):
    """prune(method, **settings) -> the points as flat dicts, on the digits checkpoint, untimed.

    Nothing is saved unless the settings give an `out` (saving is the default, and the default
    directory is under the working directory)."""

    def run(method: str, ctx: RunContext | None = None, **settings) -> list[dict]:
        cfg = {"checkpoint": digits_checkpoint, "latency": False, "save": "out" in settings, **settings}
        return [p.to_dict() for p in run_task(f"prune.{method}", cfg, ctx or RunContext())]

    return run
