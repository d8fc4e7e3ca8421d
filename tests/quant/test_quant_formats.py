"""Quantized checkpoints: packed low-bit weights and real int8 models saved as safetensors, reloaded by
`measure` to the accuracy of the point that made them; bit packing is exact at every width."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from engine.cli.main import main
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import CONTRACT_FIELDS
from engine.deploy.formats import load_variant, pack_codes, unpack_codes
from engine.methods.tasks import run_task
from engine.model.checkpoint import WEIGHTS, read_meta


@pytest.mark.parametrize("bits", range(2, 17))
def test_packing_random_codes_round_trips_exactly_at_every_width(bits):
    codes = torch.randint(0, 2**bits, (1001,), generator=torch.Generator().manual_seed(bits))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(1001 * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, 1001), codes)


def test_the_bit_stream_is_little_endian_as_documented():
    # 4 bits: code 2j in the low nibble of byte j, code 2j+1 in the high nibble
    assert pack_codes(torch.tensor([0x1, 0xA, 0xF, 0x3]), 4).tolist() == [0xA1, 0x3F]
    # 3 bits: codes 0, 1 and the low two bits of code 2 in byte 0; code 2's high bit is bit 0 of byte 1
    assert pack_codes(torch.tensor([0b101, 0b011, 0b110]), 3).tolist() == [0b10011101, 0b1]
    assert pack_codes(torch.tensor([0x1234]), 16).tolist() == [0x34, 0x12]  # 16 bits: little-endian uint16


def test_a_code_too_wide_for_its_width_is_refused():
    with pytest.raises(ValueError, match=r"codes must be in \[0, 7\]"):
        pack_codes(torch.tensor([8]), 3)


def measured(directory: str) -> dict:
    """What `python -m engine measure --checkpoint DIR` reports."""
    return run_task("measure", {"checkpoint": directory, "latency": False}, RunContext())[0].to_dict()


def test_a_fake_sweep_saves_every_width_as_a_packed_checkpoint_that_reloads_exactly(digits_fake_run,
                                                                                     digits_checkpoint):
    points, out = digits_fake_run
    two, four, fp32 = [p.to_dict() for p in points]
    for p in (two, four, fp32):
        assert set(CONTRACT_FIELDS) <= set(p)
        assert p["family"] == "quantize" and p["method"] == "fake" and p["input_checkpoint"] == digits_checkpoint
        assert p["level_name"] == "bits" and p["role"] == ""
    assert (two["stage"], two["level"], four["stage"], four["level"]) == ("variant", 2, "variant", 4)
    assert (fp32["stage"], fp32["level"], fp32["artifact"]) == ("baseline", 32, "")  # the input holds it
    for p in (two, four):
        assert p["artifact"] == str(Path(out) / f"bits-{p['level']:g}")
        again = measured(p["artifact"])
        assert again["accuracy"] == p["accuracy"] and again["loss"] == p["loss"]
        for key in ("file_bytes", "size_bytes", "bits", "params_total", "params_nonzero", "macs", "simulated"):
            assert again[key] == p[key], key
        assert again["backend"] == p["backend"] and again["level"] == p["level"]
        assert p["file_bytes"] == (Path(p["artifact"]) / WEIGHTS).stat().st_size
        meta = read_meta(p["artifact"])
        assert meta.weights_format == "packed" and meta.quant["batchnorm_folded"] is True
        assert set(meta.quant["bits"].values()) == {p["level"]}
        assert meta.quant["scheme"]["granularity"] == "per_channel" and meta.quant["scheme"]["symmetric"] is True
        assert [s["method"] for s in meta.lineage] == ["train", "fake"] and meta.lineage[-1]["level"] == p["level"]


def test_packed_files_are_the_size_of_real_low_bit_weights(digits_fake_run, digits_checkpoint):
    points, _ = digits_fake_run
    fp32_file = (Path(digits_checkpoint) / WEIGHTS).stat().st_size
    by_bits = {p.level: p.measurement.file_bytes for p in points}
    assert by_bits[4] <= 0.2 * fp32_file and by_bits[2] <= 0.1 * fp32_file


def test_without_saving_the_file_bytes_are_the_same_and_nothing_is_written(digits_fake_run, digits_checkpoint,
                                                                            tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    points = run_task("quantize.fake", {"checkpoint": digits_checkpoint, "bits": [2, 4, 32], "latency": False,
                                        "save": False}, RunContext())
    saved, _ = digits_fake_run
    assert [p.measurement.file_bytes for p in points] == [p.measurement.file_bytes for p in saved]
    assert [p.artifact for p in points] == ["", "", ""] and list(tmp_path.iterdir()) == []


def test_a_packed_checkpoint_keeps_the_activation_ranges(digits_checkpoint, tmp_path):
    out = tmp_path / "acts"
    points = run_task("quantize.fake", {"checkpoint": digits_checkpoint, "bits": [4], "activation_bits": 3,
                                        "calib_batches": 2, "latency": False, "out": str(out)}, RunContext())
    (point,) = points
    assert read_meta(point.artifact).quant["activations"] == {"bits": 3, "symmetric": True}
    assert measured(point.artifact)["accuracy"] == point.accuracy


def test_an_int8_checkpoint_reloads_without_pickle_to_the_same_accuracy(digits_int8_run, digits_checkpoint):
    points, out = digits_int8_run
    fp32, int8 = [p.to_dict() for p in points]
    assert (fp32["stage"], fp32["artifact"]) == ("baseline", "")
    assert (int8["stage"], int8["level"], int8["level_name"], int8["artifact"]) == ("variant", 8, "bits", out)
    meta = read_meta(out)
    assert meta.weights_format == "int8"
    assert meta.quant["mode"] == "static" and meta.quant["engine"] == "x86" and meta.quant["batchnorm_folded"]
    again = measured(out)
    assert abs(again["accuracy"] - int8["accuracy"]) <= 1 / 360  # at most one of digits' 360 test images
    assert again["file_bytes"] == int8["file_bytes"] == (Path(out) / WEIGHTS).stat().st_size
    assert again["backend"] == int8["backend"] and not again["simulated"]
    assert int8["file_bytes"] < 0.3 * (Path(digits_checkpoint) / WEIGHTS).stat().st_size
    # the weights file is plain safetensors: int8 codes and scales, no pickled objects
    from safetensors.torch import load_file

    tensors = load_file(Path(out) / WEIGHTS)
    assert tensors["features.0.0.0.weight.int_repr"].dtype == torch.int8
    assert tensors["features.0.0.0.weight.q_per_channel_scales"].dtype == torch.float64


def test_the_int8_structure_holds_the_dequantized_weights(digits_int8_run):
    _, out = digits_int8_run
    model, form, _ = load_variant(out)
    qconv = form.runner.module.get_submodule("features.0.0.0")
    assert torch.equal(model.get_submodule("features.0.0.0").weight, qconv.weight().dequantize())
    assert form.weight_bits == {name: 8 for name in form.quant_groups} and len(form.quant_groups) == 5


def test_a_dynamic_int8_checkpoint_reloads_too(digits_checkpoint, tmp_path):
    out = str(tmp_path / "dynamic")
    _, point = run_task("quantize.dynamic_int8", {"checkpoint": digits_checkpoint, "latency": False, "out": out},
                        RunContext())
    assert read_meta(out).quant["mode"] == "dynamic"
    assert measured(out)["accuracy"] == point.accuracy


@pytest.mark.parametrize("inside", ["", "model.safetensors"])
def test_an_output_that_would_overwrite_the_input_checkpoint_is_refused(digits_checkpoint, inside, capsys):
    before = (Path(digits_checkpoint) / WEIGHTS).read_bytes()
    out = str(Path(digits_checkpoint) / inside) if inside else digits_checkpoint
    code = main(["quantize", "--checkpoint", digits_checkpoint, "--method", "fake", "--bits", "4", "--out", out,
                 "--no-latency"])
    assert code == 2 and "would overwrite it" in capsys.readouterr().err
    assert (Path(digits_checkpoint) / WEIGHTS).read_bytes() == before
    assert measured(digits_checkpoint)["accuracy"] > 0.5  # it still loads


def test_an_existing_output_is_refused_unless_overwrite_and_made_by_this_tool(digits_checkpoint, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    recipe = {"checkpoint": digits_checkpoint, "bits": [4], "latency": False, "out": str(out)}
    with pytest.raises(ConfigError, match="already exists"):
        run_task("quantize.fake", recipe, RunContext())
    with pytest.raises(ConfigError, match="was not created by Compression Lab"):
        run_task("quantize.fake", {**recipe, "overwrite": True}, RunContext())
    assert list(out.iterdir()) == []


def test_a_quantized_checkpoint_is_not_an_input_for_another_method(digits_fake_run, capsys):
    _, out = digits_fake_run
    code = main(["quantize", "--checkpoint", str(Path(out) / "bits-4"), "--method", "fake", "--no-save"])
    assert code == 2 and "holds packed weights" in capsys.readouterr().err


def test_measure_json_of_a_packed_checkpoint_names_its_format(digits_fake_run, capsys):
    _, out = digits_fake_run
    assert main(["measure", "--checkpoint", str(Path(out) / "bits-2"), "--no-latency", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["weights_format"] == "packed" and row["simulated"] is True and row["bits"] == 2


def test_every_step_of_a_mixed_path_reloads_exactly(digits_checkpoint, tmp_path):
    points = run_task("quantize.mixed", {"checkpoint": digits_checkpoint, "bits": [8, 4], "val_samples": 60,
                                         "max_accuracy_drop": 0.5, "target_bits": 7.0, "latency": False,
                                         "out": str(tmp_path / "mixed")}, RunContext())
    assert len(points) >= 2
    for p in points:
        assert p.artifact == str(tmp_path / "mixed" / f"step-{p.extra['step']}")
        assert read_meta(p.artifact).quant["bits"] == p.extra["bits_per_layer"]
        again = measured(p.artifact)
        assert again["accuracy"] == p.accuracy and again["bits"] == pytest.approx(p.level)


def test_qat_saves_its_low_bit_variants_packed_and_they_reload_exactly(digits_checkpoint, tmp_path):
    out = tmp_path / "qat"
    points = run_task("quantize.qat", {"checkpoint": digits_checkpoint, "bits": 3, "train": {"epochs": 1},
                                       "latency": False, "out": str(out)}, RunContext())
    fp32, ptq, qat = points
    assert fp32.artifact == "" and sorted(p.name for p in out.iterdir() if p.is_dir()) == ["ptq-bits-3", "qat-bits-3"]
    for p in (ptq, qat):
        assert read_meta(p.artifact).weights_format == "packed"
        assert measured(p.artifact)["accuracy"] == p.accuracy


def test_a_checkpoint_with_resized_layers_quantizes_and_reloads(digits_checkpoint, tmp_path):
    import dataclasses

    from engine.model.checkpoint import load_checkpoint, load_into, resize_to_state_dict, save_checkpoint

    model, meta = load_checkpoint(digits_checkpoint)
    sd = model.state_dict()  # keep 16 of the first convolution's 24 channels, as channel pruning would
    for key in [k for k in sd if k.startswith("features.0.0.")]:
        sd[key] = sd[key][:16] if sd[key].dim() else sd[key]
    sd["features.1.0.0.weight"] = sd["features.1.0.0.weight"][:, :16]
    resize_to_state_dict(model, sd)
    load_into(model, sd)
    pruned = str(tmp_path / "pruned")
    save_checkpoint(pruned, model, dataclasses.replace(meta, layer_shapes="shape"))
    fake, _ = run_task("quantize.fake", {"checkpoint": pruned, "bits": [4, 32], "latency": False,
                                         "out": str(tmp_path / "fake")}, RunContext())
    _, int8 = run_task("quantize.ptq_int8", {"checkpoint": pruned, "calib_batches": 2, "latency": False,
                                             "out": str(tmp_path / "int8")}, RunContext())
    for p, tolerance in ((fake, 0.0), (int8, 1 / 360)):  # packed: exact; int8: within one test image
        again = measured(p.artifact)
        assert abs(again["accuracy"] - p.accuracy) <= tolerance
        assert again["params_total"] == p.measurement.params_total
