"""Every method trains the default student on digits with the session teacher, as a user runs it.

Each method runs once (`method_runs`: one epoch on digits' 1,293 training images); the tests read those runs.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from engine.core.errors import Cancelled
from engine.methods.distill import DISTILLERS, DistillTask
from engine.methods.registry import family_methods
from engine.methods.tasks import open_checkpoint, run_task
from engine.model.checkpoint import load_checkpoint, read_meta
from engine.model.train import TrainConfig, evaluate

CHANCE = 0.1  # ten digit classes


@pytest.mark.parametrize("method", DISTILLERS.names())
def test_every_method_trains_one_epoch_and_beats_chance(method, method_runs, digits, digits_teacher):
    run = method_runs.get(method)
    teacher, *students = run["points"]
    assert len(students) == (2 if method == "dml" else 1)
    assert (teacher.family, teacher.method, teacher.stage, teacher.role) == ("distill", method, "baseline", "teacher")
    assert teacher.input_checkpoint == teacher.artifact == digits_teacher
    for p in students:
        assert (p.family, p.method, p.stage, p.role) == ("distill", method, "variant", "student")
        assert p.input_checkpoint == digits_teacher and p.extra["teacher_accuracy"] == teacher.accuracy
        assert p.accuracy > 2 * CHANCE, f"{method}: {p.accuracy}"
        # the saved student is a plain checkpoint of the student architecture with the same predictions
        model, meta = load_checkpoint(p.artifact)
        assert meta.arch == "cnn_s" and meta.lineage[-1]["method"] == method
        assert evaluate(model, digits.test)["accuracy"] == pytest.approx(p.accuracy, abs=1e-6)
    # per-epoch metrics: each loss term and the accuracy
    ((step, row),) = run["ctx"].metrics
    assert step == 1 and "val_accuracy" in row and "train_accuracy" in row
    assert any(k.startswith("loss_") for k in row)


@pytest.mark.parametrize("method", DISTILLERS.names())
def test_the_teacher_stays_in_eval_mode_and_is_never_updated(method, method_runs, digits_teacher):
    run = method_runs.get(method)
    (teacher,) = run["teachers"]
    assert run["modes"] and not any(run["modes"])  # every forward pass of the teacher was in eval mode
    assert all(p.grad is None for p in teacher.parameters())
    original, _ = load_checkpoint(digits_teacher)
    for k, v in original.state_dict().items():
        assert torch.equal(v, teacher.state_dict()[k]), k


def test_loss_terms_are_logged_by_name(method_runs):
    assert {"loss_ce", "loss_tckd", "loss_nckd"} <= set(method_runs.get("dkd")["ctx"].metrics[0][1])
    assert {"loss_feature"} == {k for k in method_runs.get("simkd")["ctx"].metrics[0][1] if k.startswith("loss_")}
    dml = method_runs.get("dml")["ctx"].metrics[0][1]
    assert {"loss_ce_1", "loss_mutual_1", "loss_ce_2", "loss_mutual_2"} <= set(dml)


def test_kd_with_alpha_zero_is_exactly_scratch(method_runs):
    kd0 = method_runs.get("kd", {"alpha": 0.0})["points"][-1]
    scratch = method_runs.get("scratch")["points"][-1]
    assert kd0.accuracy == scratch.accuracy
    kd_model, _ = load_checkpoint(kd0.artifact)
    scratch_model, _ = load_checkpoint(scratch.artifact)
    for k, v in scratch_model.state_dict().items():
        assert torch.equal(v, kd_model.state_dict()[k]), k
    # and the default alpha does change the student
    kd_model, _ = load_checkpoint(method_runs.get("kd")["points"][-1].artifact)
    assert not torch.equal(kd_model.fc.weight, scratch_model.fc.weight)


def test_dml_saves_one_checkpoint_per_student_from_different_starts(method_runs):
    students = method_runs.get("dml")["points"][1:]
    assert [p.extra["student_index"] for p in students] == [1, 2]
    assert [p.artifact.rsplit("/", 1)[1] for p in students] == ["student1", "student2"]
    a, meta_a = load_checkpoint(students[0].artifact)
    b, meta_b = load_checkpoint(students[1].artifact)
    assert not torch.equal(a.features[0][0][0].weight, b.features[0][0][0].weight)
    assert [s["method"] for s in meta_a.lineage] == [s["method"] for s in meta_b.lineage] == ["dml"]


def test_the_point_and_the_lineage_name_the_settings_and_the_teacher(method_runs, digits_teacher):
    run = method_runs.get("kd")
    teacher, p = run["points"]
    assert p.params["temperature"] == 4.0 and p.params["alpha"] == 0.9  # defaults filled in
    assert p.params["student"] == "cnn_s" and p.params["train"]["epochs"] == 1
    assert p.extra["teacher_accuracy"] == teacher.accuracy > 0.9
    assert run["ctx"].artifacts == [p.artifact]
    meta = read_meta(p.artifact)
    assert meta.dataset == "digits" and meta.weights_format == "float"
    assert meta.lineage == [{"family": "distill", "method": "kd", "params": json.loads(json.dumps(p.params)),
                             "input_checkpoint": digits_teacher}]


def test_a_student_can_start_from_a_checkpoint(digits_teacher, digits_student, tmp_path, recording_context):
    model, init_meta, data = open_checkpoint(digits_student)
    before = evaluate(model, data.test)["accuracy"]
    cfg = DistillTask(teacher=digits_teacher, method="kd", student_init=digits_student,
                      out=str(tmp_path / "init"), latency=False, train=TrainConfig(epochs=0))
    _, point = run_task("distill", cfg, recording_context)
    assert point.accuracy == before  # zero epochs: exactly the student it started from
    lineage = read_meta(point.artifact).lineage
    assert lineage[:-1] == init_meta.lineage and [s["family"] for s in lineage] == ["train", "distill"]
    assert lineage[-1]["params"]["student_init"] == digits_student
    assert lineage[-1]["input_checkpoint"] == digits_teacher


def test_no_save_measures_the_students_and_writes_nothing(digits_teacher, tmp_path, recording_context):
    cfg = DistillTask(teacher=digits_teacher, method="dml", out=str(tmp_path / "none"), save=False, latency=False,
                      train_subset=64, train=TrainConfig(epochs=0))
    points = run_task("distill", cfg, recording_context)
    assert [p.role for p in points] == ["teacher", "student", "student"]
    assert [p.artifact for p in points[1:]] == ["", ""] and points[0].artifact == digits_teacher
    assert not (tmp_path / "none").exists() and recording_context.artifacts == []


def test_a_cancelled_run_stops_in_the_loop_and_saves_nothing(digits_teacher, tmp_path, recording_context):
    recording_context.cancel.cancel()
    cfg = DistillTask(teacher=digits_teacher, method="kd", train_subset=300, out=str(tmp_path / "c"),
                      latency=False, train=TrainConfig(epochs=1))
    with pytest.raises(Cancelled):
        run_task("distill", cfg, recording_context)
    assert not (tmp_path / "c").exists() and recording_context.points == []


def _changed(value, field: dataclasses.Field):
    """A value of the same type other than the default (and inside every method's declared range)."""
    if field.metadata.get("choices"):
        return next(c for c in field.metadata["choices"] if c != value)
    if isinstance(value, tuple):
        return ["features.1"]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value / 2 if value > 0 else 0.25


@pytest.mark.parametrize("method", family_methods("distill").names())
def test_the_task_round_trips_with_each_methods_typed_settings(method):
    config = family_methods("distill").get(method).config
    fields = {f.name: f for f in dataclasses.fields(config)}
    settings = {k: _changed(v, fields[k]) for k, v in config().to_dict().items()}
    # save false: a changed setting may deliver a student the checkpoint cannot rebuild (simkd's conv projector)
    task = DistillTask.from_dict({"teacher": "t", "method": method, "settings": settings, "train": {"epochs": 2},
                                  "save": False})
    assert isinstance(task.settings, config) and task.train.epochs == 2 and task.train.lr == TrainConfig().lr
    plain = json.loads(json.dumps(task.to_dict()))  # what a recipe or a run record holds
    assert plain["settings"] == settings
    assert DistillTask.from_dict(plain) == task
    # settings left out take the method's defaults
    assert DistillTask.from_dict({"teacher": "t", "method": method}).settings == config()


@pytest.mark.parametrize("method", ["at", "fitnet", "sp", "vid", "simkd", "crd"])
def test_feature_methods_pair_different_architectures_without_per_model_code(method, tmp_path_factory,
                                                                              recording_context, checkpoint_maker):
    """A resnet20 teacher (maps 16x8x8, 32x4x4, 64x2x2 on digits) and a cnn_s student (24x4x4, 64x2x2, 96x2x2)."""
    teacher = checkpoint_maker(tmp_path_factory.mktemp("r20"), "resnet20", "digits", 10, 8)
    out = tmp_path_factory.mktemp("cross") / method
    cfg = DistillTask(teacher=teacher, student="cnn_s", method=method, train_subset=64, out=str(out),
                      settings={"nce_k": 32} if method == "crd" else {}, latency=False,
                      train=TrainConfig(epochs=1, batch_size=32))
    _, point = run_task("distill", cfg, recording_context)
    model, meta = load_checkpoint(point.artifact)
    assert meta.arch == "cnn_s" and meta.dataset == "digits" and point.measurement.params_total == sum(
        p.numel() for p in model.parameters())
