"""Tasks: every method family's tasks are reachable by name, configs round-trip through dicts, and
every command's options are generated from those configs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.methods.tasks import TASKS, get_task
from engine.methods.train import TrainTask


def test_family_tasks_are_found_by_name_without_importing_the_family():
    code = "from engine.methods.tasks import get_task; print(get_task('distill').name, get_task('prune.structured').name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["distill", "prune.structured"]


def _instance(cls: type[Config]) -> Config:
    """A config with its defaults; fields that must be set (a checkpoint, a teacher) get a stand-in path."""
    needs = {f.name: "some/checkpoint" for f in dataclasses.fields(cls) if f.name in ("checkpoint", "teacher")}
    if cls.__name__ == "RemeasureTask":  # re-times stored points: one stand-in point
        needs = {"points": (1,), "checkpoints": ("some/checkpoint",), "baselines": ("",), "families": ("measure",),
                 "runtimes": ("torch",)}
    return cls(**needs)


def test_every_registered_task_config_round_trips_through_a_plain_dict():
    get_task("train")  # loads every family
    assert len(TASKS.names()) >= 14
    for name, task in TASKS.items():
        assert issubclass(task.config, Config), name
        cfg = _instance(task.config)
        d = cfg.to_dict()
        again = task.config.from_dict(d)
        assert again == cfg, name
        assert again.to_dict() == d, name


def test_train_task_round_trips_with_its_nested_train_config_and_keeps_defaults_of_a_partial_one():
    cfg = TrainTask(dataset="digits", model="cnn_s")
    again = TrainTask.from_dict(cfg.to_dict())
    assert again == cfg and again.train.epochs == cfg.train.epochs
    partial = TrainTask.from_dict({"train": {"epochs": 1}})
    assert partial.train.epochs == 1 and partial.train.lr == TrainTask().train.lr


def test_unknown_task_unknown_field_and_wrong_types_are_named():
    with pytest.raises(ConfigError, match="unknown task 'compress'"):
        get_task("compress")
    with pytest.raises(ConfigError, match="has no field colour"):
        TrainTask.from_dict({"colour": "red"})
    with pytest.raises(ConfigError, match="epochs must be a whole number, got '3'"):
        TrainTask.from_dict({"train": {"epochs": "3"}})
    with pytest.raises(ConfigError, match="download must be true or false"):
        TrainTask.from_dict({"download": "yes"})
    with pytest.raises(ConfigError, match="dataset must be text, got null"):
        TrainTask.from_dict({"dataset": None})


def test_the_job_runner_refuses_a_text_number_with_a_config_error(tmp_path):
    from engine.run.jobs import JobRunner

    runner = JobRunner(str(tmp_path / "s.duckdb"))
    try:
        with pytest.raises(ConfigError, match="epochs must be a whole number"):
            runner.submit("train", {"dataset": "digits", "train": {"epochs": "3"}})
    finally:
        runner.shutdown()


def _commands() -> list[str]:
    from engine.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices)


def test_every_cli_command_answers_help():
    from engine.cli.main import main

    commands = _commands()
    for needed in ("train", "measure", "quantize", "prune", "distill", "quantize-methods", "prune-methods",
                   "distill-methods", "runs", "show"):
        assert needed in commands
    for command in commands:
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0, command
