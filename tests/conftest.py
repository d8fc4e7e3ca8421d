"""Shared fixtures: embedded datasets and small trained checkpoints, made once per test session."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from types import SimpleNamespace

import pytest

# Tests are CPU-only and must not touch the network.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Nothing a test runs writes into the repository: a store, a checkpoint made without --out, an upload go
# to a folder of this session's own (tests that need their own store point these at theirs).
_SESSION_DIR = tempfile.mkdtemp(prefix="compression-lab-tests-")
os.environ["COMPRESSION_LAB_STORE_DIR"] = _SESSION_DIR
os.environ["COMPRESSION_LAB_DB"] = os.path.join(_SESSION_DIR, "compression_lab.duckdb")
# Points a test stores are timed by the same protocol with three short rounds and a one-second budget (the
# `smoke` policy of engine/deploy/timing.py): the tests check what latency is recorded, not how steady it is;
# the protocol's own tests pass their policies explicitly.
os.environ.setdefault("COMPRESSION_LAB_TIMING", "smoke")


@pytest.fixture(scope="session")
def mnist5k():
    from engine.model.data import load_dataset

    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def digits():
    from engine.model.data import load_dataset

    return load_dataset("digits")


def _train_checkpoint(tmp_path_factory, arch: str, epochs: int, seed: int = 0) -> str:
    from engine.core.context import RunContext
    from engine.methods.tasks import run_task
    from engine.methods.train import TrainTask
    from engine.model.train import TrainConfig

    out = str(tmp_path_factory.mktemp(f"ckpt-{arch}") / arch)  # training refuses an existing directory
    cfg = TrainTask(dataset="mnist5k", model=arch, out=out, latency=False,
                    train=TrainConfig(epochs=epochs, seed=seed))
    run_task("train", cfg, RunContext())
    return out


@pytest.fixture(scope="session")
def teacher_checkpoint(tmp_path_factory) -> str:
    """cnn_l trained 2 epochs on mnist5k (about 97% test accuracy), as a checkpoint directory."""
    return _train_checkpoint(tmp_path_factory, "cnn_l", epochs=2)


@pytest.fixture(scope="session")
def student_checkpoint(tmp_path_factory) -> str:
    """cnn_s trained 2 epochs on mnist5k (about 94% test accuracy), as a checkpoint directory."""
    return _train_checkpoint(tmp_path_factory, "cnn_s", epochs=2)


@pytest.fixture
def engine_main(monkeypatch):
    """`python -m engine ARGS` run in this process: `engine_main(*args)` calls the entry point's `main(args)` and
    returns its exit code and what it printed, without paying a new process's imports (torch: seconds). Tests of
    what only a real process shows (signals, exit status as a shell sees it) start one instead."""
    from engine.cli.main import main

    monkeypatch.setenv("COLUMNS", "80")  # --help wraps as it does in a pipe, whatever terminal runs pytest

    def run(*args: str) -> SimpleNamespace:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's --help and its own refusals exit from inside main
                code = e.code
        return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())

    return run


@pytest.fixture(autouse=True)
def _deterministic_threads():
    import torch

    torch.manual_seed(0)
    yield
