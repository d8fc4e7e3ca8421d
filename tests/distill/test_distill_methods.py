"""Every method trains the default student on mnist5k with the session teacher, as a user runs it.

Each method runs once (`method_runs`: one epoch on 2,000 training images); the tests read those runs.
"""

from __future__ import annotations

import pytest
import torch

from engine.checkpoint import load_checkpoint, read_meta
from engine.distill import DISTILLERS, DistillTask
from engine.errors import Cancelled
from engine.tasks import open_checkpoint, run_task
from engine.train import TrainConfig, evaluate

CHANCE = 0.1  # ten digit classes


@pytest.mark.parametrize("method", DISTILLERS.names())
def test_every_method_trains_one_epoch_and_beats_chance(method, method_runs, mnist5k):
    run = method_runs.get(method)
    points = run["points"]
    assert len(points) == (2 if method == "dml" else 1)
    for p in points:
        assert p["method"] == method and p["stage"] == "distilled"
        assert p["accuracy"] > 2 * CHANCE, f"{method}: {p['accuracy']}"
        # the saved student is a plain checkpoint of the student architecture with the same predictions
        model, meta = load_checkpoint(p["checkpoint"])
        assert meta.arch == "cnn_s" and meta.history[-1]["method"] == method
        assert evaluate(model, mnist5k.test)["accuracy"] == pytest.approx(p["accuracy"], abs=1e-6)
    # per-epoch metrics: each loss term and the accuracy
    ((step, row),) = run["ctx"].metrics
    assert step == 1 and "val_accuracy" in row and "train_accuracy" in row
    assert any(k.startswith("loss_") for k in row)


@pytest.mark.parametrize("method", DISTILLERS.names())
def test_the_teacher_stays_in_eval_mode_and_is_never_updated(method, method_runs, teacher_checkpoint):
    run = method_runs.get(method)
    (teacher,) = run["teachers"]
    assert run["modes"] and not any(run["modes"])  # every forward pass of the teacher was in eval mode
    assert all(p.grad is None for p in teacher.parameters())
    original, _ = load_checkpoint(teacher_checkpoint)
    for k, v in original.state_dict().items():
        assert torch.equal(v, teacher.state_dict()[k]), k


def test_loss_terms_are_logged_by_name(method_runs):
    assert {"loss_ce", "loss_tckd", "loss_nckd"} <= set(method_runs.get("dkd")["ctx"].metrics[0][1])
    assert {"loss_feature"} == {k for k in method_runs.get("simkd")["ctx"].metrics[0][1] if k.startswith("loss_")}
    dml = method_runs.get("dml")["ctx"].metrics[0][1]
    assert {"loss_ce_1", "loss_mutual_1", "loss_ce_2", "loss_mutual_2"} <= set(dml)


def test_kd_with_alpha_zero_is_exactly_scratch(method_runs):
    kd0 = method_runs.get("kd", {"alpha": 0.0})["points"][0]
    scratch = method_runs.get("scratch")["points"][0]
    assert kd0["accuracy"] == scratch["accuracy"]
    kd_model, _ = load_checkpoint(kd0["checkpoint"])
    scratch_model, _ = load_checkpoint(scratch["checkpoint"])
    for k, v in scratch_model.state_dict().items():
        assert torch.equal(v, kd_model.state_dict()[k]), k
    # and the default alpha does change the student
    kd_model, _ = load_checkpoint(method_runs.get("kd")["points"][0]["checkpoint"])
    assert not torch.equal(kd_model.fc.weight, scratch_model.fc.weight)


def test_dml_saves_one_checkpoint_per_student_from_different_starts(method_runs):
    points = method_runs.get("dml")["points"]
    assert [p["student_index"] for p in points] == [1, 2]
    assert [p["checkpoint"].rsplit("/", 1)[1] for p in points] == ["student1", "student2"]
    a, _ = load_checkpoint(points[0]["checkpoint"])
    b, _ = load_checkpoint(points[1]["checkpoint"])
    assert not torch.equal(a.features[0][0][0].weight, b.features[0][0][0].weight)


def test_the_point_names_the_method_settings_and_the_checkpoint(method_runs, teacher_checkpoint):
    run = method_runs.get("kd")
    p = run["points"][0]
    assert p["params"]["temperature"] == 4.0 and p["params"]["alpha"] == 0.9  # defaults filled in
    assert p["params"]["teacher"] == teacher_checkpoint and p["teacher_accuracy"] > 0.9
    assert p["checkpoint"] == p["artifact"] and run["ctx"].artifacts == [p["checkpoint"]]
    meta = read_meta(p["checkpoint"])
    assert meta.dataset == "mnist5k" and meta.history[-1] == {"method": "kd", "params": p["params"]}


def test_a_student_can_start_from_a_checkpoint(teacher_checkpoint, student_checkpoint, tmp_path, recording_context):
    model, _, data = open_checkpoint(student_checkpoint)
    before = evaluate(model, data.test)["accuracy"]
    cfg = DistillTask(teacher=teacher_checkpoint, method="kd", student_init=student_checkpoint,
                      out=str(tmp_path / "init"), latency=False, train=TrainConfig(epochs=0))
    (point,) = run_task("distill", cfg, recording_context)
    assert point["accuracy"] == before  # zero epochs: exactly the student it started from
    assert [h["method"] for h in read_meta(point["checkpoint"]).history] == ["train", "kd"]


def test_a_cancelled_run_stops_in_the_loop_and_saves_nothing(teacher_checkpoint, tmp_path, recording_context):
    recording_context.cancel.cancel()
    cfg = DistillTask(teacher=teacher_checkpoint, method="kd", train_subset=300, out=str(tmp_path / "c"),
                      latency=False, train=TrainConfig(epochs=1))
    with pytest.raises(Cancelled):
        run_task("distill", cfg, recording_context)
    assert not (tmp_path / "c").exists() and recording_context.points == []


def test_every_method_config_round_trips_through_a_plain_dict():
    for name, cls in DISTILLERS.items():
        cfg = cls.config()
        assert cls.config.from_dict(cfg.to_dict()) == cfg, name
    task = DistillTask(teacher="t", method="at", params={"student_layers": ["features.1"], "beta": 10},
                       train=TrainConfig(epochs=2))
    again = DistillTask.from_dict(task.to_dict())
    assert again == task and again.method_config().student_layers == ("features.1",)


@pytest.mark.parametrize("method", ["at", "fitnet", "sp", "vid", "simkd", "crd"])
def test_feature_methods_pair_different_architectures_without_per_model_code(method, tmp_path_factory,
                                                                              recording_context, checkpoint_maker):
    """A resnet20 teacher (maps 16x8x8, 32x4x4, 64x2x2 on digits) and a cnn_s student (24x4x4, 64x2x2, 96x2x2)."""
    teacher = checkpoint_maker(tmp_path_factory.mktemp("r20"), "resnet20", "digits", 10, 8)
    out = tmp_path_factory.mktemp("cross") / method
    cfg = DistillTask(teacher=teacher, student="cnn_s", method=method, train_subset=256, out=str(out),
                      params={"nce_k": 128} if method == "crd" else {}, latency=False,
                      train=TrainConfig(epochs=1, batch_size=32))
    (point,) = run_task("distill", cfg, recording_context)
    model, meta = load_checkpoint(point["checkpoint"])
    assert meta.arch == "cnn_s" and meta.dataset == "digits" and point["params_total"] == sum(
        p.numel() for p in model.parameters())
