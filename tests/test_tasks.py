"""Tasks: every method family's tasks are reachable by name, and configs round-trip through dicts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.config import Config
from engine.errors import ConfigError
from engine.tasks import TASKS, TrainTask, get_task


def test_family_tasks_are_found_by_name_without_importing_the_family():
    code = "from engine.tasks import get_task; print(get_task('distill').name, get_task('prune.structured').name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["distill", "prune.structured"]


def test_every_task_has_a_config_class_that_round_trips_when_default_constructible():
    get_task("train")  # loads every family
    assert len(TASKS.names()) >= 10
    for name, task in TASKS.items():
        assert issubclass(task.config, Config), name
        try:
            cfg = task.config()
        except ConfigError:
            continue  # needs a checkpoint or similar: covered by the family's own tests
        assert task.config.from_dict(cfg.to_dict()) == cfg, name


def test_train_task_round_trips_with_its_nested_train_config():
    cfg = TrainTask(dataset="digits", model="cnn_s")
    again = TrainTask.from_dict(cfg.to_dict())
    assert again == cfg and again.train.epochs == cfg.train.epochs


def test_unknown_task_and_unknown_field_are_named():
    with pytest.raises(ConfigError, match="unknown task 'compress'"):
        get_task("compress")
    with pytest.raises(ConfigError, match="has no field colour"):
        TrainTask.from_dict({"colour": "red"})
