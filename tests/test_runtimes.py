"""Runtimes (issue #13): measure() on torch or onnxruntime, a task's `runtime` setting, and points stored
once per runtime."""

from __future__ import annotations

import pytest
import torch

from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.deploy.measure import measure
from engine.methods.tasks import run_task


@pytest.fixture(scope="session")
def cnn_s_digits(tmp_path_factory, digits):
    """cnn_s with random weights (seeded) saved as a digits checkpoint: runtimes only need a model to run."""
    from engine.model.checkpoint import CheckpointMeta, save_checkpoint
    from engine.model.zoo import build_model

    torch.manual_seed(1)
    model = build_model("cnn_s", digits.num_classes, 1, 8).eval()
    out = str(tmp_path_factory.mktemp("runtimes") / "cnn_s")
    save_checkpoint(out, model, CheckpointMeta(arch="cnn_s", num_classes=digits.num_classes, in_channels=1,
                                               image_size=8, dataset=digits.name, class_names=digits.class_names))
    return model, out


def test_torch_is_the_default_runtime(cnn_s_digits, digits):
    model, _ = cnn_s_digits
    m = measure(model, digits, latency=False)
    assert m.runtime == "torch" and m.backend == "fp32 eager cpu"


def test_onnxruntime_measures_accuracy_and_latency_of_its_session(cnn_s_digits, digits):
    model, _ = cnn_s_digits
    on_torch = measure(model, digits, latency=False)
    torch_timing = {"latency_ms_b1": 1234.0, "latency_p90_ms_b1": 1234.0, "latency_ms_b32": 1234.0,
                    "latency_p90_ms_b32": 1234.0}
    on_ort = measure(model, digits, latency=torch_timing, runtime="onnxruntime")

    assert on_ort.runtime == "onnxruntime" and on_ort.backend.startswith("onnxruntime ")
    assert "fp32" in on_ort.backend and not on_ort.simulated
    n_test = len(digits.test.tensors()[1])
    assert abs(on_ort.accuracy - on_torch.accuracy) <= 1 / n_test + 1e-9
    assert on_ort.loss == pytest.approx(on_torch.loss, abs=1e-4)
    # a latency dict is torch's timing: the session is timed afresh, at batch 1 and 32
    for key in torch_timing:
        assert on_ort.to_dict()[key] is not None and on_ort.to_dict()[key] != 1234.0
    assert on_ort.threads == torch.get_num_threads()
    # storage is the checkpoint's; file_bytes is the ONNX model that ran
    assert on_ort.size_bytes == on_torch.size_bytes and on_ort.macs == on_torch.macs
    assert on_ort.file_bytes != on_torch.file_bytes and on_ort.file_bytes > on_torch.size_bytes // 2


def test_ort_session_uses_torchs_thread_count():
    from engine.deploy.onnx import OrtRunner, to_onnx

    onnx_model = to_onnx(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), torch.zeros(2, 1, 2, 2))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert OrtRunner(onnx_model).threads == 1
    finally:
        torch.set_num_threads(before)
    assert OrtRunner(onnx_model).threads == before


def test_a_tasks_runtime_reaches_every_measure_inside_it(cnn_s_digits, digits):
    from engine.deploy.runtimes import active, using

    model, _ = cnn_s_digits
    with using("onnxruntime"):
        assert active() == "onnxruntime"
        assert measure(model, digits, latency=False).runtime == "onnxruntime"
        assert measure(model, digits, latency=False, runtime="torch").runtime == "torch"  # an explicit one wins
    assert active() == "torch"


def test_unknown_runtimes_are_refused_by_name():
    from engine.methods.measure import MeasureTask
    from engine.methods.quant.ptq_int8 import PTQInt8Config

    with pytest.raises(ConfigError, match="runtime must be one of torch, onnxruntime, torch_bf16; got 'tensorrt'"):
        PTQInt8Config(checkpoint="x", runtime="tensorrt")
    with pytest.raises(ConfigError, match="runtime must list runtimes from torch, onnxruntime, torch_bf16; got 'tvm'"):
        MeasureTask(checkpoint="x", runtime=("torch", "tvm"))
    with pytest.raises(ConfigError, match="lists a runtime twice"):
        MeasureTask(checkpoint="x", runtime=("torch", "torch"))


def test_measure_command_stores_one_point_per_runtime(cnn_s_digits, tmp_path, capsys):
    from engine.cli.main import main
    from store import Store

    _, checkpoint = cnn_s_digits
    db = str(tmp_path / "runs.duckdb")
    assert main(["measure", "--checkpoint", checkpoint, "--runtime", "torch,onnxruntime", "--no-latency",
                 "--db", db]) == 0
    printed = capsys.readouterr().out
    assert "[fp32 eager cpu]" in printed and "[onnxruntime " in printed
    assert main(["measure", "--checkpoint", checkpoint, "--runtime", "onnxruntime", "--no-latency",
                 "--db", db]) == 0
    with Store(db) as store:
        points = store.points()
    assert sorted(points["runtime"]) == ["onnxruntime", "onnxruntime", "torch"]
    assert set(points["accuracy"].round(6)) == {round(points["accuracy"].iloc[0], 6)}


def test_a_method_measures_every_point_on_its_runtime(cnn_s_digits):
    _, checkpoint = cnn_s_digits
    points = run_task("quantize.ptq_int8", {"checkpoint": checkpoint, "runtime": "onnxruntime", "save": False,
                                            "latency": False}, RunContext())
    assert [p.measurement.runtime for p in points] == ["onnxruntime", "onnxruntime"]
    assert "fp32" in points[0].measurement.backend
    assert "int8 QDQ" in points[1].measurement.backend
    assert "runtime" not in points[1].params  # how it was measured, not what the method did


def test_simulated_low_bit_points_stay_simulated_on_onnxruntime(cnn_s_digits):
    _, checkpoint = cnn_s_digits
    (point,) = [p for p in run_task("quantize.fake", {"checkpoint": checkpoint, "bits": [4], "runtime": "onnxruntime",
                                                      "save": False, "latency": False}, RunContext())
                if p.stage == "variant"]
    assert point.measurement.runtime == "onnxruntime" and point.measurement.simulated
    assert "dequantized" in point.measurement.backend and point.measurement.bits == 4


def test_calibration_follows_the_step_that_made_the_checkpoint():
    from engine.deploy.runtimes import Calibration
    from engine.model.checkpoint import CheckpointMeta

    meta = CheckpointMeta(arch="cnn_s", num_classes=10, in_channels=1, image_size=8, dataset="digits", class_names=[],
                          lineage=[{"method": "train", "params": {"seed": 3}},
                                   {"method": "ptq_int8", "params": {"calib_batches": 4, "calib_batch_size": 16,
                                                                     "seed": 7}}])
    assert Calibration.of_checkpoint(meta) == Calibration(batches=4, batch_size=16, seed=7)
    assert Calibration.from_params({"calib_batches": True, "seed": -1}) == Calibration()
