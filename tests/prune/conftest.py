"""Pruning fixtures: a tiny checkpoint on the 8x8 digits, for methods that train from scratch."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> str:
    """cnn_s trained 2 epochs on scikit-learn's 8x8 digits (seconds, not minutes)."""
    from engine.context import RunContext
    from engine.tasks import TrainTask, run_task
    from engine.train import TrainConfig

    out = str(tmp_path_factory.mktemp("ckpt-digits-cnn_s"))
    run_task("train", TrainTask(dataset="digits", model="cnn_s", out=out, latency=False,
                                train=TrainConfig(epochs=2, seed=0)), RunContext())
    return out
