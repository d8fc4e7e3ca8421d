"""Field roles: declared once on `param(..., role=...)`, read by forms, recipes, points and the Ray executor."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from engine.core.config import Config, fields_with_role, param
from engine.core.forms import form_fields
from engine.methods.base import method_params
from engine.methods.tasks import TASKS, load_families

# the fields that name paths or switches of how a run goes; each must say which role it plays
PLACES = {"checkpoint": "input", "teacher": "input", "student_init": "input", "out": "output", "overwrite": "output",
          "data_root": "machine", "latency": "runner", "runtime": "runner", "save": "runner"}


@dataclass
class Inner(Config):
    data_root: str = param("here", "a path on this machine", role="machine")
    depth: int = param(2, "a setting")


@dataclass
class Outer(Config):
    checkpoint: str = param("ckpt", "the input", role="input")
    width: float = param(1.0, "a setting")
    inner: Inner = param(default_factory=Inner)


def test_an_unknown_role_is_refused_naming_the_allowed_ones():
    with pytest.raises(ValueError, match="role must be one of input, output, machine, runner"):
        param(1, "x", role="path")


def test_fields_with_role_walks_nested_configs():
    assert fields_with_role(Outer, "input") == {"checkpoint"}
    assert fields_with_role(Outer, "input", "machine") == {"checkpoint", "data_root"}
    assert fields_with_role(Outer, "runner") == frozenset()


def test_a_points_params_keep_the_settings_and_leave_every_role_out():
    assert method_params(Outer()) == {"width": 1.0, "inner": {"data_root": "here", "depth": 2}}
    assert method_params(Outer(), drop=("width",), level=3) == {"inner": {"data_root": "here", "depth": 2}, "level": 3}


def task_configs() -> list[type[Config]]:
    load_families()
    return [t.config for _, t in TASKS.items()]


def test_every_task_field_naming_a_path_or_a_switch_of_the_run_declares_its_role():
    for cls in task_configs():
        for f in dataclasses.fields(cls):
            if f.name in PLACES:
                assert f.metadata.get("role") == PLACES[f.name], f"{cls.__name__}.{f.name}"


def test_forms_hide_inputs_outputs_and_machine_paths_and_show_how_a_run_goes():
    for cls in task_configs():
        shown = {f.option.path[-1] for f in form_fields(cls)}
        names = {f.name for f in dataclasses.fields(cls)}
        assert not shown & {"checkpoint", "teacher", "student_init", "out", "overwrite", "data_root"}, cls.__name__
        assert names & {"latency", "save"} <= shown, cls.__name__
