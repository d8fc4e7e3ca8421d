"""`python -m engine quantize ...` and `quantize-methods`: generated options, JSON points, one-line errors."""

from __future__ import annotations

import json

import pytest

from engine.cli.main import main
from engine.core.point import CONTRACT_FIELDS, METRIC_FIELDS


def test_quantize_help_lists_the_generated_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for flag in ("--bits", "--granularity", "--symmetric", "--no-symmetric", "--asymmetric", "--observer",
                 "--activation-bits", "--calib-batches", "--engine", "--fallback", "--max-drop", "--target-bits",
                 "--epochs", "--lr", "--no-latency", "--out", "--no-save", "--overwrite"):
        assert flag in out, flag
    assert "peak learning rate in (0, 10] (default 0.001)" in " ".join(out.split())  # QAT's gentle default


def test_quantize_methods_lists_every_method_and_its_settings_as_json(capsys):
    assert main(["quantize-methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in rows} == {"ptq_int8", "dynamic_int8", "fake", "mixed", "sensitivity", "qat", "equalize",
                                           "adaround"}
    by_name = {r["method"]: {s["flag"]: s for s in r["settings"]} for r in rows}
    assert by_name["fake"]["--bits"]["default"] == [2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 26, 32]
    assert by_name["mixed"]["--max-drop"]["name"] == "max_accuracy_drop"
    assert by_name["qat"]["--lr"]["default"] == 0.001 and by_name["qat"]["--lr"]["name"] == "train.lr"
    assert "--out" not in by_name["sensitivity"] and "--out" in by_name["ptq_int8"]
    assert main(["quantize-methods"]) == 0 and "ptq_int8:" in capsys.readouterr().out


def test_quantize_prints_a_json_list_of_points(digits_checkpoint, capsys):
    code = main(["quantize", "--checkpoint", digits_checkpoint, "--method", "fake", "--bits", "4,8",
                 "--asymmetric", "--granularity", "per_tensor", "--json", "--no-latency", "--no-save"])
    assert code == 0
    points = json.loads(capsys.readouterr().out)
    assert [p["level"] for p in points] == [4, 8]
    for p in points:
        assert set(METRIC_FIELDS) | set(CONTRACT_FIELDS) <= set(p) and p["method"] == "fake"
        assert p["family"] == "quantize" and p["stage"] == "variant" and p["level_name"] == "bits"
        assert p["params"]["symmetric"] is False and p["params"]["granularity"] == "per_tensor"
        assert p["artifact"] == "" and p["input_checkpoint"] == digits_checkpoint


def test_no_symmetric_is_the_same_as_asymmetric(digits_checkpoint, capsys):
    main(["quantize", "--checkpoint", digits_checkpoint, "--method", "fake", "--bits", "4", "--no-symmetric",
          "--json", "--no-latency", "--no-save"])
    assert json.loads(capsys.readouterr().out)[0]["scheme"] == "per-channel asymmetric minmax"


def test_int8_from_the_cli_reports_both_points_and_saves_the_int8_model(digits_checkpoint, capsys, tmp_path):
    out = tmp_path / "int8"
    code = main(["quantize", "--checkpoint", digits_checkpoint, "--method", "ptq_int8", "--calib-batches", "2",
                 "--engine", "x86", "--no-latency", "--out", str(out)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("ptq_int8[baseline bits=32]") and lines[1].startswith("ptq_int8[variant bits=8]")
    assert "[int8 torch.ao FX (x86) cpu]" in lines[1] and lines[1].endswith(f"-> {out}")
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("args, words", [
    (["--method", "fake", "--bits", "1,4"], r"bits must be a whole number of bits in [2, 32], got 1"),
    (["--method", "fake", "--bits", "4,x"], "--bits must be a whole number, got 'x'"),
    (["--method", "fake", "--epochs", "2"], "--epochs does not apply to --method fake"),
    (["--method", "sensitivity", "--calib-batches", "3"], "--calib-batches does not apply to --method sensitivity"),
    (["--method", "sensitivity", "--out", "x"], "--out does not apply to --method sensitivity"),
    (["--method", "qat", "--bits", "2,4"], "--bits must be a whole number, got '2,4'"),
    (["--method", "qat", "--bits", "12"], r"bits must be in [2, 8], got 12"),
    (["--method", "ptq_int8", "--bits", "8"], "--bits does not apply to --method ptq_int8"),
    (["--method", "ptq_int8", "--calib-batches", "0"], r"calib_batches must be in [1, 10000], got 0"),
    (["--method", "mixed", "--target-bits", "1"], r"target_bits must be in [2, 32], got 1.0"),
])
def test_bad_options_exit_2_with_one_line_naming_the_field(args, words, capsys):
    code = main(["quantize", "--checkpoint", "unused", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and words in err and len(err.strip().splitlines()) == 1


def test_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["quantize", "--checkpoint", str(tmp_path / "nope"), "--method", "fake"]) == 2
    assert "does not exist" in capsys.readouterr().err
