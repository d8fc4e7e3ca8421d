"""ONNX export of checkpoints (issue #13): checked against PyTorch with ONNX Runtime, int8 as QDQ, and
a one-line message for a model ONNX cannot express."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from engine.core.context import RunContext
from engine.methods.tasks import run_task
from engine.model.train import TrainConfig


def _train(root, arch: str, epochs: int) -> str:
    from engine.methods.train import TrainTask

    out = str(root / arch)
    run_task("train", TrainTask(dataset="digits", model=arch, out=out, latency=False, train=TrainConfig(epochs=epochs)),
             RunContext())
    return out


def _resnet20_with_running_statistics(root, digits) -> str:
    """resnet20 with random weights whose BatchNorm layers hold statistics of the training images (a few
    forward passes in train mode): BatchNorm is not the identity, and nothing is trained (cheap)."""
    from engine.model.checkpoint import CheckpointMeta, save_checkpoint
    from engine.model.zoo import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", digits.num_classes, 1, 8)
    x = digits.train.tensors()[0]
    model.train()
    with torch.no_grad():
        for i in range(0, 512, 128):
            model(x[i : i + 128])
    out = str(root / "resnet20")
    save_checkpoint(out, model.eval(), CheckpointMeta(arch="resnet20", num_classes=digits.num_classes, in_channels=1,
                                                      image_size=8, dataset=digits.name,
                                                      class_names=digits.class_names))
    return out


@pytest.fixture(scope="session")
def exported_digits(tmp_path_factory, digits) -> dict[str, str]:
    """Checkpoint directories on digits: cnn_s (2 epochs), cnn_s with half its channels removed (then 1 epoch
    of fine-tuning), resnet20
    (random weights, real BatchNorm statistics), and cnn_s as ptq_int8 and as 4-bit packed weights with 8-bit activations."""
    root = tmp_path_factory.mktemp("onnx-export")
    cnn_s = _train(root, "cnn_s", 2)
    resnet20 = _resnet20_with_running_statistics(root, digits)
    run_task("prune.structured", {"checkpoint": cnn_s, "ratios": [0.5], "out": str(root / "structured"), "latency": False,
                                  "finetune": {"mode": "all", "train": {"epochs": 1}}}, RunContext())
    run_task("quantize.ptq_int8", {"checkpoint": cnn_s, "out": str(root / "int8"), "latency": False}, RunContext())
    run_task("quantize.fake", {"checkpoint": cnn_s, "bits": [4], "activation_bits": 8, "out": str(root / "packed"),
                               "latency": False}, RunContext())
    return {"cnn_s": cnn_s, "structured": str(root / "structured" / "channel_ratio-0.500"), "resnet20": resnet20,
            "int8": str(root / "int8"), "packed": str(root / "packed" / "bits-4")}


def _run_onnx(data: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name", ["cnn_s", "structured", "resnet20"])
def test_float_exports_match_pytorch(exported_digits, tmp_path, name):
    from engine.deploy.onnx_export import export_checkpoint

    out = tmp_path / f"{name}.onnx"
    result = export_checkpoint(exported_digits[name], str(out))

    assert result.path == str(out) and out.read_bytes() == result.data
    onnx.checker.check_model(onnx.load_from_string(result.data))
    assert result.kind == "fp32" and result.weights_format == "float" and not result.simulated
    assert result.max_abs_diff < 1e-4
    assert abs(result.accuracy_ort - result.accuracy_torch) <= 1 / result.images + 1e-9
    if name != "resnet20":  # trained models, so agreeing accuracies mean something
        assert result.accuracy_torch > 0.5
    # the batch size is free: one image and 32 images both run
    for batch in (1, 32):
        assert _run_onnx(result.data, np.zeros((batch, 1, 8, 8), np.float32)).shape == (batch, 10)


def test_structured_export_keeps_the_removed_channels_removed(exported_digits):
    from engine.deploy.onnx_export import export_checkpoint

    full = export_checkpoint(exported_digits["cnn_s"])
    smaller = export_checkpoint(exported_digits["structured"])
    assert full.path is None and smaller.path is None  # nothing written without `out`
    assert len(smaller.data) < 0.5 * len(full.data)


def test_int8_exports_as_qdq_with_per_channel_weights_and_keeps_accuracy(exported_digits):
    from engine.deploy.onnx_export import export_checkpoint

    fp32 = export_checkpoint(exported_digits["cnn_s"])
    int8 = export_checkpoint(exported_digits["int8"])

    assert int8.kind.startswith("int8 QDQ") and int8.weights_format == "int8"
    graph = onnx.load_from_string(int8.data).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {i.name: i for i in graph.initializer}
    per_channel = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits
                   and np.prod(inits[n.input[1]].dims) > 1]
    assert per_channel, "weights should have one scale per output channel"
    assert len(int8.data) < 0.4 * len(fp32.data)
    assert abs(int8.accuracy_ort - fp32.accuracy_torch) <= 0.01  # within 1 point of the float model
    assert abs(int8.accuracy_ort - int8.accuracy_torch) <= 0.01  # and of torch.ao's int8 model


def test_int8_export_refused_when_quantize_static_fails(exported_digits, monkeypatch):
    import onnxruntime.quantization

    from engine.core.errors import UserError
    from engine.deploy.onnx_export import export_checkpoint

    def broken(*args, **kwargs):
        raise RuntimeError("no calibrator for this graph\nsecond line")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", broken)
    with pytest.raises(UserError, match="cannot be made an ONNX int8 model.*no calibrator.*refused") as e:
        export_checkpoint(exported_digits["int8"])
    assert "\n" not in str(e.value)


def test_packed_export_runs_the_dequantized_model_and_stays_simulated(exported_digits):
    from engine.deploy.onnx_export import export_checkpoint

    result = export_checkpoint(exported_digits["packed"])
    assert result.simulated and result.weights_format == "packed"
    assert "dequantized" in result.kind
    assert result.max_abs_diff < 1e-4  # the same float computation, activation fake-quant included
    assert abs(result.accuracy_ort - result.accuracy_torch) <= 1 / result.images + 1e-9


class Bessel(nn.Module):
    """A model with an operator ONNX has no equivalent for."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.special.bessel_j0(self.conv(x)).flatten(1))


def test_unsupported_op_is_named_on_one_line():
    from engine.deploy.onnx import OnnxExportError, to_onnx

    with pytest.raises(OnnxExportError) as e:
        to_onnx(Bessel(), torch.zeros(2, 1, 8, 8), name="bessel")
    message = str(e.value)
    assert "\n" not in message
    assert "bessel cannot be exported to ONNX" in message and "aten::special_bessel_j0" in message


def test_cli_export_writes_the_file_and_refuses_to_overwrite(exported_digits, tmp_path, capsys):
    from engine.cli.main import main

    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", exported_digits["cnn_s"], "--format", "onnx", "--out", str(out),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(out) and out.stat().st_size == report["file_bytes"] > 0
    assert report["max_abs_diff"] < 1e-4 and "data" not in report
    assert main(["export", "--checkpoint", exported_digits["cnn_s"], "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "--checkpoint", exported_digits["cnn_s"], "--out", str(out), "--overwrite"]) == 0


def test_cli_export_failure_is_one_line(exported_digits, tmp_path, monkeypatch, capfd):
    import engine.deploy.onnx_export
    from engine.cli.main import main
    from engine.deploy.measure import ModelForm
    from engine.model.checkpoint import read_meta

    meta = read_meta(exported_digits["cnn_s"])
    monkeypatch.setattr(engine.deploy.onnx_export, "load_variant", lambda directory: (Bessel().eval(), ModelForm(), meta))
    code = main(["export", "--checkpoint", exported_digits["cnn_s"], "--out", str(tmp_path / "bad.onnx")])
    err = capfd.readouterr().err  # file descriptor 2 too: the exporter's own graph dump must not get through
    assert code == 2
    assert err.strip().count("\n") == 0, err
    assert err.startswith("error: ") and "aten::special_bessel_j0" in err
    assert not (tmp_path / "bad.onnx").exists()
