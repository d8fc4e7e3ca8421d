"""What a user can get wrong is rejected before training, with a message naming the problem."""

from __future__ import annotations

import pytest

import engine.methods.distill.task as task_module
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.methods.distill import DistillTask
from engine.methods.tasks import run_task
from engine.model.train import TrainConfig


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(task_module, "fit", refuse)


def _run(**fields):
    fields.setdefault("train", TrainConfig(epochs=1))
    fields.setdefault("save", False)
    return run_task("distill", DistillTask(latency=False, **fields), RunContext())


def test_teacher_and_student_with_different_classes_are_rejected(digits_teacher, five_class_student,
                                                                 no_training, tmp_path):
    with pytest.raises(ConfigError, match="teacher predicts 10 classes but the student_init checkpoint predicts 5"):
        _run(teacher=digits_teacher, student="cnn_s", student_init=five_class_student, out=str(tmp_path / "x"),
             save=True)
    assert not (tmp_path / "x").exists()


def test_a_teacher_trained_on_another_dataset_is_rejected(digits_teacher, no_training):
    with pytest.raises(ConfigError, match="the teacher was trained on 'digits', not on 'mnist5k'"):
        _run(teacher=digits_teacher, dataset="mnist5k")


@pytest.mark.parametrize("method", ["at", "fitnet", "sp", "vid"])
def test_layer_names_that_do_not_exist_are_rejected(digits_teacher, method, no_training, tmp_path):
    with pytest.raises(ConfigError, match="layer 'features.9' does not exist"):
        _run(teacher=digits_teacher, method=method, settings={"student_layers": ["features.9"]},
             out=str(tmp_path / "x"), save=True)
    assert not (tmp_path / "x").exists()  # the claimed output is given back
    with pytest.raises(ConfigError, match="layer 'block3' does not exist"):
        _run(teacher=digits_teacher, method=method,
             settings={"student_layers": ["features.2"], "teacher_layers": ["block3"]})


def test_settings_the_method_does_not_have_and_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="settings of method 'kd': KDConfig has no field beta; fields are: alpha, "
                                          "temperature"):
        DistillTask(teacher="t", method="kd", settings={"beta": 1.0})
    with pytest.raises(ConfigError, match="temperature must be in"):
        DistillTask(teacher="t", method="dkd", settings={"temperature": 0})
    with pytest.raises(ConfigError, match="students must be in"):
        DistillTask(teacher="t", method="dml", settings={"students": 1})
    with pytest.raises(ConfigError, match="unknown distillation method 'fitnets'"):
        DistillTask(teacher="t", method="fitnets")
    with pytest.raises(ConfigError, match="teacher must name"):
        DistillTask()


def test_settings_are_checked_against_their_types():
    with pytest.raises(ConfigError, match="temperature must be a number, got 'hot'"):
        DistillTask.from_dict({"teacher": "t", "method": "kd", "settings": {"temperature": "hot"}})
    with pytest.raises(ConfigError, match="students must be a whole number, got 2.5"):
        DistillTask.from_dict({"teacher": "t", "method": "dml", "settings": {"students": 2.5}})
    with pytest.raises(ConfigError, match="student_layers must be a list of names, got 3"):
        DistillTask.from_dict({"teacher": "t", "method": "at", "settings": {"student_layers": 3}})
    with pytest.raises(ConfigError, match="settings is a KDConfig but method 'dkd' takes a DKDConfig"):
        DistillTask(teacher="t", method="dkd", settings=DistillTask(teacher="t").settings)


def test_crd_needs_fewer_negatives_than_training_images(digits_teacher, no_training):
    with pytest.raises(ConfigError, match=r"nce_k must be below the number of training images \(300\)"):
        _run(teacher=digits_teacher, method="crd", settings={"nce_k": 300}, train_subset=300)


def test_a_subset_larger_than_the_training_split_is_rejected(digits_teacher, no_training):
    with pytest.raises(ConfigError, match="train_subset must be at most 1293"):
        _run(teacher=digits_teacher, train_subset=4000)
