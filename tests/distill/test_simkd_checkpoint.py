"""SimKD's paper form (the conv projector) delivers `simkd:<student>+<teacher>`: the student's backbone, the
projector and the teacher's classifier, saved as a checkpoint like any other that measure, prune and quantize take."""

from __future__ import annotations

import json

import pytest
import torch

from engine.core.context import RunContext
from engine.core.errors import CheckpointError, ConfigError
from engine.deploy.formats import load_variant
from engine.methods.tasks import get_task, run_task
from engine.model.checkpoint import META, CheckpointMeta, load_checkpoint, read_meta, save_checkpoint
from engine.model.zoo import MODELS, build_model


@pytest.fixture(scope="module")
def conv_student(digits_teacher, tmp_path_factory) -> dict:
    """A cnn_s (width 0.5) student of the digits cnn_l teacher through the conv projector, saved; the model the
    task saved is kept (a spy on the save) to compare with what loads back."""
    import engine.methods.distill.task as task_module
    from engine.methods.distill import DistillTask
    from engine.model.train import TrainConfig

    saved: list[torch.nn.Module] = []
    real_save = task_module.save_float_variant

    def spy(directory, model, meta, **kw):
        saved.append(model)
        return real_save(directory, model, meta, **kw)

    out = tmp_path_factory.mktemp("simkd-conv") / "student"
    cfg = DistillTask(teacher=digits_teacher, student="cnn_s", width=0.5, method="simkd",
                      settings={"projector": "conv", "factor": 4}, train_subset=400, out=str(out), latency=False,
                      train=TrainConfig(epochs=2, batch_size=32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_module, "save_float_variant", spy)
        teacher_point, point = run_task("distill", cfg, RunContext())
    return {"point": point, "teacher_point": teacher_point, "model": saved[0], "dir": str(out)}


def _run(task: str, **settings) -> list:
    t = get_task(task)
    return t.run(t.config.from_dict({"latency": False, **settings}), RunContext())


def test_conv_student_saves_as_its_composite_and_reloads_with_identical_logits(conv_student, digits):
    model, meta = load_checkpoint(conv_student["dir"])
    assert meta.arch == "simkd:cnn_s+cnn_l?factor=4" and meta.width == 0.5
    assert conv_student["point"].artifact == conv_student["dir"]
    assert conv_student["point"].measurement.model == meta.arch
    x = digits.test.tensors()[0][:64]
    with torch.no_grad():
        assert torch.equal(model(x), conv_student["model"].eval()(x))
    # the teacher's classifier travels with the student, not the student's own
    teacher, _ = load_checkpoint(conv_student["teacher_point"].artifact)
    assert torch.equal(model.head.weight, teacher.fc.weight)
    assert not any(k.startswith("backbone.fc") for k in model.state_dict())


def test_measure_reads_the_conv_student_as_the_distill_task_measured_it(conv_student):
    (point,) = _run("measure", checkpoint=conv_student["dir"])
    assert point.accuracy == conv_student["point"].accuracy
    assert point.measurement.params_total == conv_student["point"].measurement.params_total


def test_pruning_takes_the_conv_student_unstructured_and_structured(conv_student, tmp_path):
    (sparse,) = _run("prune.global_unstructured", checkpoint=conv_student["dir"], sparsities=[0.5],
                     out=str(tmp_path / "global"))
    model, meta = load_checkpoint(sparse.artifact)
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Conv2d)])
    assert meta.arch.startswith("simkd:") and 0.4 < (weights == 0).float().mean() < 0.6
    (cut,) = _run("prune.structured", checkpoint=conv_student["dir"], ratios=[0.3], out=str(tmp_path / "channels"))
    model, meta = load_checkpoint(cut.artifact)
    assert meta.layer_shapes == "shape"
    assert cut.measurement.params_total < 0.75 * conv_student["point"].measurement.params_total
    assert model.head.out_features == 10 and model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_quantization_takes_the_conv_student_simulated_and_int8(conv_student, tmp_path):
    fake = _run("quantize.fake", checkpoint=conv_student["dir"], bits=[8], out=str(tmp_path / "fake"))
    int8 = _run("quantize.ptq_int8", checkpoint=conv_student["dir"], out=str(tmp_path / "int8"))
    for point in (fake[-1], int8[-1]):
        assert point.level == 8 and point.artifact
        model, form, meta = load_variant(point.artifact)
        assert meta.arch == "simkd:cnn_s+cnn_l?factor=4" and meta.weights_format in ("packed", "int8")
        assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
        # 8 bits keep the float model's predictions on digits within a few points
        assert abs(point.accuracy - conv_student["point"].accuracy) < 0.05


def _composite_checkpoint(directory, arch: str = "simkd:cnn_s+cnn_l") -> str:
    model = build_model(arch, 10, 1, 8, 0.5)
    save_checkpoint(directory, model, CheckpointMeta(arch=arch, num_classes=10, in_channels=1, image_size=8,
                                                     dataset="digits", class_names=[], width=0.5))
    return str(directory)


@pytest.mark.parametrize(("arch", "named"), [
    ("simkd:cnn_s", "two zoo names joined by '+'"),
    ("simkd:cnn_s+nope", "its teacher 'nope' is not an architecture of the zoo"),
    ("simkd:cnn_s+timm:resnet18", "teacher of a simkd architecture must be an architecture of the zoo"),
    ("simkd:cnn_s+cnn_l?factor=0", "factor of a simkd architecture must be a whole number in [1, 64]"),
    ("simkd:cnn_s+cnn_l?depth=2", "option 'depth=2' is not one of factor"),
])
def test_a_corrupt_composite_arch_in_meta_is_named(tmp_path, arch, named):
    directory = _composite_checkpoint(tmp_path / "ok")
    meta = json.loads((tmp_path / "ok" / META).read_text())
    (tmp_path / "ok" / META).write_text(json.dumps({**meta, "arch": arch}))
    with pytest.raises(CheckpointError, match="meta.json: arch") as e:
        read_meta(directory)
    assert named in str(e.value)
    assert arch not in MODELS


def test_a_composite_whose_weights_do_not_fit_its_meta_names_the_layers(tmp_path):
    directory = _composite_checkpoint(tmp_path / "ok")
    meta = json.loads((tmp_path / "ok" / META).read_text())
    (tmp_path / "ok" / META).write_text(json.dumps({**meta, "arch": "simkd:cnn_s+cnn_l?factor=4"}))
    with pytest.raises(CheckpointError, match=r"shape mismatch in projector\.body") as e:
        load_checkpoint(directory)
    assert "projector.body.0.weight: file (80, 48, 1, 1) vs model (40, 48, 1, 1)" in str(e.value)


def test_the_composite_name_is_canonical_and_its_parts_are_checked():
    assert build_model("simkd:cnn_s+cnn_l?factor=2&teacher_width=1.0", 10, 1, 8).arch == "simkd:cnn_s+cnn_l"
    assert MODELS.get("simkd:cnn_s+resnet20?teacher_width=0.5").classifier == "head"
    with pytest.raises(ConfigError, match="its student 'cnn_xl' is not an architecture of the zoo"):
        build_model("simkd:cnn_xl+cnn_l", 10, 1, 8)
