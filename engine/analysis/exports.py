"""Serialisers for the Compare & export page: a table as CSV, Excel, Markdown, LaTeX, Parquet or JSON,
a checkpoint directory as a zip, and a checkpoint as ONNX (through engine/deploy/onnx.py, when present).

`export_table(df, fmt)` returns (bytes, MIME type, file extension); `FORMATS` lists the formats.

- A table whose index names its rows (seed 002's Table 3) keeps the names as a first column; column
  names become strings (a pivot's columns can be numbers).
- CSV and Excel: control characters (other than tab and line breaks) are removed from text cells and
  column names, then every line of the text that starts with `=`, `+`, `-`, `@` or a tab gets a leading
  single quote, so a spreadsheet shows it as text instead of running it as a formula (OWASP "CSV
  injection"). CSV rows end in CRLF, so a cell holding any line break is quoted. Numbers are left
  alone: -0.5 stays the number -0.5.
- Measured values are rounded to what was measured, by column name (`ROUNDING`: percentages to 2
  decimals, fractions to 4, latencies and ratios to 3 significant digits, KiB to 3 decimals), unless the
  caller asks for full precision; counts and text are never touched.
- JSON is strict: NaN and infinities become null (`json.dumps(..., allow_nan=False)` succeeds), times are
  ISO 8601 text. The document is {"title", "columns", "rows": [{column: value}]}.
- Markdown and LaTeX are for reading: floats with 6 significant digits, missing values empty, the
  characters each syntax reserves escaped.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from engine.core.errors import UserError
from engine.core.point import json_safe
from engine.deploy.onnx_export import export_checkpoint

FORMULA_START = ("=", "+", "-", "@", "\t")
# control characters other than tab and line breaks: openpyxl refuses them in a cell, and a spreadsheet that
# skips them would find a formula behind them, so they go before the formula check
_CONTROL = re.compile(r"[\000-\010\013\014\016-\037\177]")
_LINE_BREAK = re.compile(r"(\r\n|\r|\n)")


# ---------------------------------------------------------------- preparing a table


def flat(df: pd.DataFrame) -> pd.DataFrame:
    """The table with its index as a column when the index names rows (not a plain 0..n-1 range),
    nested column names joined with " / ", and every column name a string."""
    out = df
    if not isinstance(out.index, pd.RangeIndex) or out.index.name is not None:
        out = out.rename_axis(out.index.name or "row").reset_index()
    cols = [" / ".join(str(p) for p in c) if isinstance(c, tuple) else str(c) for c in out.columns]
    out = out.copy()
    out.columns = cols
    if len(set(cols)) != len(cols):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise UserError(f"the table has repeated column names ({', '.join(dup)}); rename them before exporting")
    return out.reset_index(drop=True)


def neutralise_text(value: Any) -> Any:
    """Text without control characters, with a single quote in front of every line that a spreadsheet would
    read as a formula (a line break can start a row where the cell is misread); anything else (numbers
    included) unchanged."""
    if not isinstance(value, str):
        return value
    parts = _LINE_BREAK.split(_CONTROL.sub("", value))  # lines at even places, the breaks between them at odd
    return "".join("'" + p if i % 2 == 0 and p.startswith(FORMULA_START) else p for i, p in enumerate(parts))


def neutralise(df: pd.DataFrame) -> pd.DataFrame:
    """Every text cell and column name through `neutralise_text` (numeric columns are not touched)."""
    out = df.copy()
    for c in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[c]) or pd.api.types.is_datetime64_any_dtype(out[c])):
            out[c] = out[c].map(neutralise_text).astype(object)
    out.columns = [neutralise_text(c) for c in out.columns]
    return out


def _naive_times(df: pd.DataFrame) -> pd.DataFrame:
    """Timezone-aware times as naive UTC (Excel has no time zones)."""
    out = df.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.DatetimeTZDtype):
            out[c] = out[c].dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def plain(value: Any) -> Any:
    """A value for strict JSON: None for NaN, infinities and missing values; Python numbers; ISO times."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, dict | list | tuple):
        return json_safe(value)
    return json_safe(value) if isinstance(value, float) else value


def _significant(digits: int) -> Callable[[float], float]:
    return lambda v: float(f"{v:.{digits}g}")


# How a measured column is rounded for export, chosen by its name (the first rule that matches): to what was
# measured, not float noise (a float32 accuracy of 0.948 times 100 is 94.80000138282776, exported as 94.8).
ROUNDING: tuple[tuple[re.Pattern, Callable[[float], float]], ...] = (
    (re.compile(r"%|\((points|pp)\)"), lambda v: round(v, 2)),  # percentages and percentage points
    (re.compile(r"latency|\(ms\)|_ms(_|$)"), _significant(3)),  # timings vary more than 0.1% run to run
    (re.compile(r"\(x\)|ratio"), _significant(3)),
    (re.compile(r"KiB|MiB"), lambda v: round(v, 3)),  # a byte is about 0.001 KiB
    (re.compile(r"^(accuracy|top5|sparsity)"), lambda v: round(v, 4)),  # fractions: one sample in 10,000
    (re.compile(r"^loss|loss$"), _significant(4)),
)


def measured_precision(df: pd.DataFrame) -> pd.DataFrame:
    """The table with each float column that ROUNDING names rounded; other columns (counts, text) as they are."""
    out = df.copy()
    for c in out.columns:
        if not pd.api.types.is_float_dtype(out[c]):
            continue
        rule = next((fn for pattern, fn in ROUNDING if pattern.search(str(c))), None)
        if rule is not None:
            out[c] = out[c].map(lambda v, fn=rule: v if pd.isna(v) or math.isinf(v) else fn(v))
    return out


# ---------------------------------------------------------------- writers


def to_csv(df: pd.DataFrame, title: str = "") -> bytes:
    # CRLF rows (RFC 4180) make the csv module quote a cell holding a lone CR, which spreadsheets break rows on
    return neutralise(df).to_csv(index=False, lineterminator="\r\n").encode("utf-8")


def to_excel(df: pd.DataFrame, title: str = "") -> bytes:
    data = neutralise(_naive_times(df))
    for c in data.columns:
        if data[c].dtype == object:
            data[c] = data[c].map(_excel_cell)
    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as writer:
        data.to_excel(writer, index=False, sheet_name=sheet_name(title))
    return buf.getvalue()


def _excel_cell(v: Any) -> Any:
    """A value a cell takes: lists and mappings as neutralised JSON text (other text is neutralised already)."""
    if isinstance(v, list | tuple | dict):
        return neutralise_text(json.dumps(plain(v), default=str))
    return v


def sheet_name(title: str) -> str:
    """An Excel sheet name: at most 31 characters, none of : \\ / ? * [ ]."""
    name = re.sub(r"[:\\/?*\[\]]", " ", title or "").strip() or "table"
    return name[:31]


def to_parquet(df: pd.DataFrame, title: str = "") -> bytes:
    buf = io.BytesIO()
    arrow_ready(df).to_parquet(buf, index=False, engine="pyarrow")
    return buf.getvalue()


def arrow_ready(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns Arrow cannot type (text mixed with numbers, lists beside text) as text; missing values
    stay missing. Parquet needs it, and so does st.dataframe."""
    import pyarrow as pa

    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            try:
                pa.array(out[c], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                out[c] = out[c].map(lambda v: None if _missing(v) else str(v)).astype(object)
    return out


def to_json(df: pd.DataFrame, title: str = "") -> bytes:
    rows = [{c: plain(v) for c, v in zip(df.columns, r, strict=True)} for r in df.itertuples(index=False, name=None)]
    doc = {"title": title, "columns": list(df.columns), "rows": rows}
    return json.dumps(doc, allow_nan=False, ensure_ascii=False, indent=1).encode("utf-8")


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def _text(v: Any) -> str:
    """A cell as text for Markdown and LaTeX."""
    if _missing(v):
        return ""
    if hasattr(v, "item") and not isinstance(v, str | bytes):
        v = v.item()
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, pd.Timestamp | dt.datetime):
        return v.isoformat(sep=" ", timespec="seconds")
    return str(v)


def _numeric(df: pd.DataFrame) -> list[bool]:
    return [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]


def to_markdown(df: pd.DataFrame, title: str = "") -> bytes:
    def cell(v: Any) -> str:
        return _text(v).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")

    lines = [f"**{cell(title)}**", ""] if title else []
    lines.append("| " + " | ".join(cell(c) for c in df.columns) + " |")
    lines.append("|" + "|".join("---:" if n else ":---" for n in _numeric(df)) + "|")
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False, name=None)]
    return ("\n".join(lines) + "\n").encode("utf-8")


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text).replace("\r", " ").replace("\n", " ")


def to_latex(df: pd.DataFrame, title: str = "") -> bytes:
    """A plain tabular (no package needed), with the title as a comment above it."""
    spec = "".join("r" if n else "l" for n in _numeric(df)) or "l"
    lines = [f"% {latex_escape(title)}"] if title else []
    lines += [f"\\begin{{tabular}}{{{spec}}}", "\\hline",
              " & ".join(latex_escape(str(c)) for c in df.columns) + r" \\", "\\hline"]
    lines += [" & ".join(latex_escape(_text(v)) for v in r) + r" \\" for r in df.itertuples(index=False, name=None)]
    lines += ["\\hline", "\\end{tabular}"]
    return ("\n".join(lines) + "\n").encode("utf-8")


@dataclass(frozen=True)
class ExportFormat:
    name: str  # the key export_table takes
    label: str  # what a button says
    extension: str  # without the dot
    mime: str
    write: Callable[[pd.DataFrame, str], bytes]


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("csv", "CSV", "csv", "text/csv", to_csv),
    ExportFormat("excel", "Excel", "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                 to_excel),
    ExportFormat("markdown", "Markdown", "md", "text/markdown", to_markdown),
    ExportFormat("latex", "LaTeX", "tex", "application/x-tex", to_latex),
    ExportFormat("parquet", "Parquet", "parquet", "application/vnd.apache.parquet", to_parquet),
    ExportFormat("json", "JSON", "json", "application/json", to_json),
)}


def export_table(df: pd.DataFrame, fmt: str, title: str = "", full_precision: bool = False) -> tuple[bytes, str, str]:
    """The table in format `fmt` (a key of FORMATS): (bytes, MIME type, file extension). Measured values are
    rounded to what was measured (`measured_precision`) unless `full_precision`."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    f = FORMATS[fmt]
    table = flat(df)
    return f.write(table if full_precision else measured_precision(table), title), f.mime, f.extension


def file_name(title: str, extension: str) -> str:
    """A download file name from a table title: lower case letters, digits and dashes."""
    stem = re.sub(r"[^a-z0-9]+", "-", (title or "table").lower()).strip("-") or "table"
    return f"{stem[:60]}.{extension}"


# ---------------------------------------------------------------- checkpoints


def checkpoint_directory(artifact: str) -> Path:
    """The checkpoint directory a point's `artifact` names, refused with a message when there is none."""
    if not artifact:
        raise UserError("this variant was not saved (its run had --no-save), so there is no checkpoint to download")
    d = Path(artifact)
    if not d.exists():
        raise UserError(f"the checkpoint directory {artifact} is gone (deleted or moved); run the method again to "
                        f"get the variant back")
    if not d.is_dir() or not (d / "meta.json").is_file():
        raise UserError(f"{artifact} is not a checkpoint directory (no meta.json in it)")
    return d


def zip_checkpoint(artifact: str) -> bytes:
    """The checkpoint directory as a zip (its files under the directory's name; links are not followed)."""
    d = checkpoint_directory(artifact)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for root, dirs, files in os.walk(d, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                if path.is_symlink() or not path.is_file():
                    continue
                zf.write(path, arcname=str(Path(d.name) / path.relative_to(d)))
    return buf.getvalue()


@dataclass
class OnnxFile:
    data: bytes
    max_abs_diff: float | None  # the largest |logit difference| between ONNX Runtime and PyTorch
    file_name: str
    check: str = ""  # the export's own account of the comparison, in words


def export_onnx(artifact: str) -> OnnxFile:
    """The checkpoint exported to ONNX by engine.deploy.onnx; a missing ONNX package or a model it cannot
    export is a UserError with the reason."""
    d = checkpoint_directory(artifact)
    try:
        result = export_checkpoint(str(d))
    except ImportError as e:
        raise UserError(f"ONNX export is not available in this installation ({e}); the safetensors zip is") from None
    diff = getattr(result, "max_abs_diff", None)
    return OnnxFile(bytes(result.data), None if diff is None else float(diff),
                    getattr(result, "file_name", None) or f"{d.name}.onnx", getattr(result, "check", "") or "")
