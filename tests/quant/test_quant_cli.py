"""`python -m engine quantize ...`: JSON points with the measure fields, and one-line errors."""

from __future__ import annotations

import json

import pytest

from engine.cli import main
from engine.measure import METRIC_FIELDS


def test_quantize_prints_a_json_list_of_points(digits_checkpoint, capsys):
    code = main(["quantize", "--checkpoint", digits_checkpoint, "--method", "fake", "--bits", "4,8",
                 "--asymmetric", "--granularity", "per_tensor", "--json", "--no-latency"])
    assert code == 0
    points = json.loads(capsys.readouterr().out)
    assert [p["params"]["bits"] for p in points] == [4, 8]
    for p in points:
        assert set(METRIC_FIELDS) <= set(p) and p["method"] == "fake"
        assert p["params"]["symmetric"] is False and p["params"]["granularity"] == "per_tensor"


def test_int8_from_the_cli_reports_both_points(digits_checkpoint, capsys):
    code = main(["quantize", "--checkpoint", digits_checkpoint, "--method", "ptq_int8", "--calib-batches", "2",
                 "--engine", "x86", "--no-latency"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("ptq_int8[fp32]") and lines[1].startswith("ptq_int8[int8]")
    assert "[int8 torch.ao FX (x86) cpu]" in lines[1]


@pytest.mark.parametrize("args, words", [
    (["--method", "fake", "--bits", "1,4"], r"bits must be a whole number of bits in [2, 32], got 1"),
    (["--method", "fake", "--bits", "4,x"], "--bits must be comma-separated whole numbers"),
    (["--method", "fake", "--epochs", "2"], "--epochs does not apply to --method fake"),
    (["--method", "sensitivity", "--calib-batches", "3"], "--calib-batches does not apply to --method sensitivity"),
    (["--method", "qat", "--bits", "2,4"], "--method qat trains for one width"),
    (["--method", "qat", "--bits", "12"], r"bits must be a whole number of bits in [2, 8], got 12"),
    (["--method", "ptq_int8", "--bits", "4"], "ptq_int8 is 8-bit; --bits must be 8"),
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
