"""Comparison tables in the seeds' forms, from a points DataFrame (`Store.points`), and a free pivot.

Every builder is a pure function of the points of the chosen runs (`points`) and, to name the models, of
the points that made their input checkpoints (`known`: usually every point in the store, `expand=False`
is enough, or a `Lineage` built from them once and shared by every table). A builder returns a `Table`:
a title, the DataFrame, and notes that say what a number is (simulated quantization, sizes computed by
engine/deploy/measure.py's storage formula, latency not measured).

- `accuracy_by_bits` (seed 003): one row per model and method, one column per weight width, accuracy in %.
  A quantized student is named by its KD method ("kd student cnn_s"), the model a distillation taught
  "teacher cnn_l".
- `method_comparison` (seeds 000 and 001): one row per technique (each point, or each run's
  representative point as `engine.run.studies` picks it): accuracy, size, compression rate against a
  reference row, latency at batch 1 and 32, sparsity and bits.
- `breakpoint_summary` (seed 002 Table 3, per curve): each sweep run is a curve
  (`engine.analysis.breakpoint.curve_from_points`); every detector's breakpoint with the accuracy and the
  remaining parameters before pruning and there, the percentage decrease and the compression rate
  (`engine.analysis.breakpoint.table3`). `teacher_student_table` is the seed's two-model form: a teacher curve
  against the others, through `engine.analysis.study_tables.kd_prune_table3`.
- `pivot`: any column by any column, one numeric value, one aggregation.

`study_tables` is the one reader of the store here: for a study's recipe run it rebuilds the study's
own tables (`engine.run.studies`), the same ones `python -m engine study` prints.
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from engine.analysis.breakpoint import X_FIELDS, curve_from_points, detect_all, table3
from engine.analysis.study_tables import (
    StoredUnit,
    cite,
    interval_text,
    kd_prune_table3,
    percent,
    technique_point,
)
from engine.core.errors import UserError

# runs whose work is done by child runs: choosing one chooses its children
CONTAINER_KINDS = ("recipe", "study")
# columns that hold JSON text or times, not values to compare
NOT_VALUES = ("params", "extra", "accuracy_runs", "created_at", "confusion")
AGGREGATIONS = ("mean", "median", "min", "max", "sum", "count", "std", "first", "last")
SIZE_NOTE = ("size: the parameters' storage, computed from each layer's bits (sparse where that is smaller), not "
             "a file; file: the saved artifact's bytes; KiB = 1024 bytes")


@dataclass
class Table:
    """One table of the page: what it is (title, the seed whose form it takes), its rows, and notes."""

    title: str
    data: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    seed: str = ""  # the seed whose layout it follows ("003", "000/001", "002"; "" for none)

    @property
    def paper(self) -> str:
        """The paper whose layout the table follows, by authors, year and title ('' for none): what the app shows
        instead of the seed number."""
        return cite(self.seed, full=True) if self.seed else ""


# ---------------------------------------------------------------- points as records


def _value(v: Any) -> Any:
    """A plain Python value: NaN, NA and NaT become None, numpy scalars their Python twin."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if hasattr(v, "item") and not isinstance(v, str | bytes):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def point_records(points: pd.DataFrame) -> list[dict]:
    """The rows as the point dicts `Store.run_points` gives: missing values None, `params` and
    `accuracy_runs` parsed, the expanded `params.<key>` columns folded back into `params`."""
    out = []
    for row in points.to_dict(orient="records"):
        d = {k: _value(v) for k, v in row.items() if not str(k).startswith("params.") and k != "extra"}
        for key in ("params", "accuracy_runs"):
            if isinstance(d.get(key), str):
                d[key] = json.loads(d[key])
        out.append(d)
    return out


def norm_path(path: Any) -> str:
    """A checkpoint path as points compare it ('' for none)."""
    return posixpath.normpath(str(path)) if path else ""


def same_checkpoint(a: str, b: str) -> bool:
    """The same checkpoint, written absolute in one place and relative to the working directory in another."""
    if not a or not b:
        return False
    if a == b:
        return True
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return not shorter.startswith("/") and longer.endswith("/" + shorter)


# ---------------------------------------------------------------- naming models


class Lineage:
    """Names the model behind each checkpoint path from the points that made or used it.

    A checkpoint's producer is the point whose artifact it is and that did not merely start from it (a
    pruning sweep's level 0 and a distillation's teacher point carry their input as their artifact); a
    trained model or a distilled student is preferred, then the earliest point."""

    def __init__(self, known: pd.DataFrame):
        cols = [c for c in ("point_id", "family", "method", "stage", "level", "level_name", "role",
                            "input_checkpoint", "artifact", "model", "kind") if c in known.columns]
        self.rows = point_records(known[cols]) if len(known) else []
        self.producers: dict[str, dict] = {}
        self.teachers: set[str] = set()
        ranked = sorted(self.rows, key=lambda p: (_producer_rank(p), p.get("point_id") or 0))
        for p in ranked:
            art, src = norm_path(p.get("artifact")), norm_path(p.get("input_checkpoint"))
            if art and not same_checkpoint(art, src):
                self.producers.setdefault(art, p)
            if p.get("family") == "distill" and src:
                self.teachers.add(src)
            if p.get("role") == "teacher" and art:
                self.teachers.add(art)
        self._cache: dict[str, str] = {}

    def producer(self, path: str) -> dict | None:
        path = norm_path(path)
        if path in self.producers:
            return self.producers[path]
        return next((p for a, p in self.producers.items() if same_checkpoint(a, path)), None)

    def is_teacher(self, path: str) -> bool:
        path = norm_path(path)
        return any(same_checkpoint(path, t) for t in self.teachers)

    def checkpoint(self, path: str, model: str = "", depth: int = 0) -> str:
        """The name of the model a checkpoint holds; `model` is the architecture to fall back on."""
        path = norm_path(path)
        if not path:
            return model or "(unsaved model)"
        key = f"{path}\0{model}"
        if key not in self._cache:
            self._cache[key] = self._name(path, model, depth)
        return self._cache[key]

    def _name(self, path: str, model: str, depth: int) -> str:
        p = self.producer(path)
        arch = (p or {}).get("model") or model
        if p is None:
            name = f"{arch} ({posixpath.basename(path)})" if arch else posixpath.basename(path)
        elif p.get("role") == "student":
            name = f"{p.get('method')} student {arch}".strip()
        elif p.get("family") in ("train", "measure") or depth >= 3:
            name = arch or posixpath.basename(path)
        else:  # a compressed model compressed again
            name = f"{self.checkpoint(p.get('input_checkpoint') or '', arch, depth + 1)} · {_step(p)}"
        return f"teacher {name}" if self.is_teacher(path) and not name.startswith("teacher ") else name


def _producer_rank(p: dict) -> int:
    if p.get("role") == "student" or p.get("family") == "train":
        return 0
    return 2 if p.get("family") == "measure" else 1


def _step(p: dict) -> str:
    """What a compression point did: its method, the swept knob and its value, and its kind (QAT's three models)."""
    words = str(p.get("method") or p.get("family") or "")
    if p.get("stage") == "baseline" and p.get("family") != "prune":
        return f"{words} fp32 baseline".strip()  # the uncompressed model a run measures first, not a variant
    if p.get("level") is not None:
        words += f" {p.get('level_name') or 'level'}={float(p['level']):g}"
    if p.get("kind"):
        words += f" [{p['kind']}]"
    return words


def lineage_of(points: pd.DataFrame, known: pd.DataFrame | Lineage | None) -> Lineage:
    """`known` as a Lineage (a page builds one per rerun and hands it to every table); None: the points'."""
    return known if isinstance(known, Lineage) else Lineage(points if known is None else known)


def source_labels(points: pd.DataFrame, known: pd.DataFrame | Lineage | None = None) -> pd.Series:
    """For each point, the name of the model its method started from (its input checkpoint)."""
    lineage = lineage_of(points, known)
    names = [lineage.checkpoint(p.get("input_checkpoint") or "", p.get("model") or "")
             for p in point_records(points)]
    return pd.Series(names, index=points.index, dtype=object)


def variant_labels(points: pd.DataFrame, known: pd.DataFrame | Lineage | None = None) -> pd.Series:
    """For each point, the name of the model it is: a trained model by its architecture, a distilled
    student by its method, a compressed model by its source and what was done to it."""
    lineage = lineage_of(points, known)
    names = []
    for p in point_records(points):
        model = p.get("model") or ""
        if p.get("family") in ("train", "measure"):
            names.append(lineage.checkpoint(p.get("artifact") or p.get("input_checkpoint") or "", model))
        elif p.get("role") == "teacher":
            names.append(lineage.checkpoint(p.get("input_checkpoint") or p.get("artifact") or "", model))
        elif p.get("role") == "student":
            names.append(f"{p.get('method')} student {model}".strip())
        else:
            source = lineage.checkpoint(p.get("input_checkpoint") or "", model)
            names.append(f"{source} · {_step(p)}")
    return pd.Series(names, index=points.index, dtype=object)


def _distinct(labels: pd.Series, keys: pd.Series) -> pd.Series:
    """Labels that two different keys share get the key's last path part appended."""
    out = labels.copy()
    for label in labels.unique():
        mask = labels == label
        if keys[mask].nunique() > 1:
            out[mask] = [f"{label} [{posixpath.basename(norm_path(k)) or '?'}]" for k in keys[mask]]
    return out


def _empty(points: pd.DataFrame, what: str) -> str:
    return "No points chosen." if points.empty else what


# ---------------------------------------------------------------- seed 003: accuracy by weight width


def accuracy_by_bits(points: pd.DataFrame, known: pd.DataFrame | Lineage | None = None) -> Table:
    """Seed 003's table: one row per model (and quantization method), one column per weight width
    (`level_name == "bits"`: fake-quant sweeps, int8 PTQ and QAT), mean accuracy in %. Teachers first,
    then the other models, then the students."""
    title = "Accuracy (%) by weight width"
    if points.empty or "level_name" not in points:
        return Table(title, pd.DataFrame(columns=["model", "method"]), [_empty(points, "")], "003")
    sweep = points[points["level_name"] == "bits"].copy()
    if sweep.empty:
        return Table(title, pd.DataFrame(columns=["model", "method"]),
                     ["None of the chosen points is a weight-width level (choose a quantize run: fake, ptq_int8, "
                      "qat)."], "003")
    sweep["_model"] = _distinct(source_labels(sweep, lineage_of(points, known)), sweep["input_checkpoint"].fillna(""))
    kinds = sweep["kind"] if "kind" in sweep else pd.Series(None, index=sweep.index, dtype=object)
    sweep["_method"] = [m if not isinstance(k, str) or not k else f"{m} [{k}]"
                        for m, k in zip(sweep["method"], kinds, strict=True)]
    sweep = _share_references(sweep)
    sweep["_bits"] = sweep["level"].astype(float)
    cells = sweep.groupby(["_model", "_method", "_bits"], sort=False)["accuracy"].agg(["mean", "count"])
    widths = sorted(sweep["_bits"].unique())
    order = sweep.assign(_rank=[_row_rank(m) for m in sweep["_model"]]).sort_values(["_rank", "point_id"])
    rows = []
    for (model, method), _ in order.groupby(["_model", "_method"], sort=False):
        row: dict[str, Any] = {"model": model, "method": method}
        for b in widths:
            row[f"{b:g}-bit"] = percent(cells["mean"].get((model, method, b)))
        rows.append(row)
    notes = []
    simulated = sorted(set(sweep.loc[sweep["simulated"].astype(bool), "_method"]))
    if simulated:
        notes.append(f"Simulated quantization ({', '.join(simulated)}): weights rounded to the width and run in "
                     f"float; no low-bit kernel ran.")
    repeated = int((cells["count"] > 1).sum())
    if repeated:
        notes.append(f"{repeated} cell{'s are means' if repeated > 1 else ' is a mean'} of several points.")
    return Table(title, pd.DataFrame(rows), notes, "003")


def _share_references(sweep: pd.DataFrame) -> pd.DataFrame:
    """A run's uncompressed reference (its baseline point, no kind) copied into the row of each kind the
    same run made (QAT: ptq, qat, qat_int8), so every row has its 32-bit cell."""
    drop: list = []
    copies: list[pd.DataFrame] = []
    for _, group in sweep.groupby("run_id", sort=False):
        kinds = sorted(set(group["_method"]) - set(group["method"]))
        plain = group[(group["stage"] == "baseline") & group["_method"].isin(group["method"])]
        if kinds and not plain.empty:
            drop += list(plain.index)
            copies += [plain.assign(_method=k) for k in kinds]
    return pd.concat([sweep.drop(index=drop), *copies]) if copies else sweep


def _row_rank(label: str) -> int:
    if label.startswith("teacher "):
        return 0
    return 2 if " student " in f" {label} " else 1


def _numbers(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """These columns as numbers (a column of only missing values as float NaN, not None objects)."""
    for c in columns:
        df[c] = pd.to_numeric(df[c]).astype(float) if df[c].isna().all() else pd.to_numeric(df[c])
    return df


def _pct_or_none(v: Any) -> float | None:
    v = _value(v)
    return None if v is None else percent(float(v))


# ---------------------------------------------------------------- seeds 000/001: techniques compared


COMPARISON_COLUMNS = ["technique", "model", "dataset", "accuracy (%)", "accuracy std (%)", "size (KiB)",
                      "file (KiB)", "compression rate (x)", "latency b1 (ms)", "latency b32 (ms)", "sparsity (%)",
                      "bits", "parameters", "nonzero", "speed-up b1 (x)", "speed-up b32 (x)", "speed-up b1 95 %",
                      "speed-up b32 95 %", "timing", "machine", "runtime", "simulated", "point_id"]



def representatives(points: pd.DataFrame) -> pd.DataFrame:
    """One point per run, the one a study lets stand for a technique: a distillation's
    student, QAT's int8 model, a sweep's most compressed variant."""
    keep = []
    for run_id, group in points.groupby("run_id", sort=False):
        records = point_records(group)
        kind = records[0].get("run_kind") or ""
        chosen = technique_point(StoredUnit(stage="", task=kind, axes={}, run_id=str(run_id), points=records))
        keep.append(chosen["point_id"])
    return points[points["point_id"].isin(keep)]


def default_reference(points: pd.DataFrame) -> int | None:
    """The row compression rates are taken against: the largest uncompressed model that is not a
    student (a distillation's teacher, a trained baseline), else the largest model."""
    if points.empty:
        return None
    pool = points[(points["stage"] == "baseline") & (points["role"].fillna("") != "student")]
    pool = pool if not pool.empty else points
    return int(pool.sort_values(["size_bytes", "point_id"], ascending=[False, True]).iloc[0]["point_id"])


def method_comparison(points: pd.DataFrame, known: pd.DataFrame | Lineage | None = None, per: str = "point",
                      reference: int | None = None) -> Table:
    """Seeds 000/001's comparison, one row per technique (`per="point"`: every chosen point; `per="run"`:
    each run's representative): accuracy, size, compression rate (the reference row's size over the
    row's), latency at batch 1 and 32, sparsity and bits. `reference` is a point_id among the rows
    (default: `default_reference`)."""
    if per not in ("point", "run"):
        raise UserError(f"rows per must be 'point' or 'run', got {per!r}")
    title = "Techniques compared"
    if points.empty:
        return Table(title, pd.DataFrame(columns=COMPARISON_COLUMNS), ["No points chosen."], "000/001")
    rows_of = representatives(points) if per == "run" else points
    if reference is not None and reference not in set(rows_of["point_id"]):
        raise UserError(f"the reference point {reference} is not among the rows; choose one of "
                        f"{', '.join(map(str, rows_of['point_id']))}")
    ref = reference if reference is not None else default_reference(rows_of)
    labels = variant_labels(rows_of, lineage_of(points, known))
    ref_size = float(rows_of.loc[rows_of["point_id"] == ref, "size_bytes"].iloc[0])
    rows = []
    for label, p in zip(labels, point_records(rows_of), strict=True):
        simulated = bool(p.get("simulated"))
        rows.append({
            "technique": label + (" (simulated)" if simulated else ""),
            "model": p.get("model") or "", "dataset": p.get("dataset") or "",
            "accuracy (%)": _pct_or_none(p.get("accuracy")), "accuracy std (%)": _pct_or_none(p.get("accuracy_std")),
            "size (KiB)": p["size_bytes"] / 1024, "file (KiB)": p["file_bytes"] / 1024,
            "compression rate (x)": ref_size / p["size_bytes"] if p["size_bytes"] else None,
            "latency b1 (ms)": p.get("latency_ms_b1"), "latency b32 (ms)": p.get("latency_ms_b32"),
            "sparsity (%)": _pct_or_none(p.get("sparsity")), "bits": p.get("bits"),
            "parameters": p.get("params_total"), "nonzero": p.get("params_nonzero"),
            "speed-up b1 (x)": _value(p.get("speedup_b1")), "speed-up b32 (x)": _value(p.get("speedup_b32")),
            "speed-up b1 95 %": interval_text(p.get("speedup_lo_b1"), p.get("speedup_hi_b1")),
            "speed-up b32 95 %": interval_text(p.get("speedup_lo_b32"), p.get("speedup_hi_b32")),
            "timing": _value(p.get("latency_quality")) or "", "machine": _value(p.get("machine")) or "",
            "runtime": p.get("runtime") or "", "simulated": simulated, "point_id": p["point_id"]})
    df = _numbers(pd.DataFrame(rows, columns=COMPARISON_COLUMNS), COMPARISON_COLUMNS[3:16])
    ref_name = df.loc[df["point_id"] == ref, "technique"].iloc[0]
    notes = [f"Compression rate: the size of {ref_name} (point {ref}) over each row's size.", SIZE_NOTE + "."]
    if df["simulated"].any():
        notes.append("Simulated rows: quantization simulated in float; their size is what the bits would take, "
                     "their latency the float model's (no low-bit kernel ran).")
    missing = int(df["latency b1 (ms)"].isna().sum())
    if missing:
        notes.append(f"Latency not measured for {missing} of {len(df)} rows (their runs had latency off).")
    notes += timing_notes(df)
    return Table(title, df, notes, "000/001")


def timing_notes(df: pd.DataFrame) -> list[str]:
    """What a reader of a latency column must know: the speed-up is each row's own paired one (timed beside its
    run's baseline, with its 95 % interval), noisy timings, and latencies from more than one machine."""
    notes = []
    if df["speed-up b1 (x)"].notna().any():
        notes.append("Speed-up: the run's baseline time over the row's, timed beside it in the same rounds (median "
                     "over rounds, with its 95 % bootstrap interval); compare these rather than the latencies of "
                     "rows timed at different moments.")
    noisy = int(df["timing"].astype(str).str.startswith("noisy").sum())
    if noisy:
        notes.append(f"{noisy} row(s) were timed while other processes disturbed the machine (timing: noisy); "
                     f"re-time them on a quiet machine.")
    machines = sorted(m for m in df["machine"].unique() if m)
    if len(machines) > 1:
        notes.append(f"Latencies come from {len(machines)} machines ({', '.join(machines)}): compare latencies only "
                     f"within one machine.")
    return notes


# ---------------------------------------------------------------- seed 002: breakpoints


BREAKPOINT_COLUMNS = ["curve", "detector", "found", "ACC before (%)", "ACC at breakpoint (%)", "P before",
                      "P at breakpoint", "percentage decrease (%)", "compression rate (x)", "level at breakpoint",
                      "reason", "run_id"]


def curves(points: pd.DataFrame, known: pd.DataFrame | Lineage | None = None,
           x: str = "params") -> tuple[dict[str, tuple[str, list[dict]]], list[str]]:
    """Each chosen run that is a sweep, as {name: (run_id, its points)}, and why each other run is not
    a curve (in words). The name is the model the sweep started from and its method."""
    found: dict[str, tuple[str, list[dict]]] = {}
    skipped = []
    if points.empty:
        return found, skipped
    sources = source_labels(points, lineage_of(points, known))
    for run_id, group in points.groupby("run_id", sort=False):
        records = point_records(group)
        name = f"{sources[group.index[0]]} · {records[0].get('method')}"
        try:
            n = len(curve_from_points(records, x=x))
        except UserError as e:
            skipped.append(f"{records[0].get('run_name') or run_id}: {e}")
            continue
        if n < 2:
            skipped.append(f"{records[0].get('run_name') or run_id}: one point, not a sweep")
            continue
        while name in found:
            name += f" [{run_id}]"
        found[name] = (str(run_id), records)
    return found, skipped


def breakpoint_summary(points: pd.DataFrame, known: pd.DataFrame | Lineage | None = None, x: str = "params",
                       configs: dict | None = None) -> Table:
    """Seed 002's Table 3 quantities per curve and detector: accuracy and remaining parameters before
    compression and at the breakpoint, the percentage decrease and the compression rate (before / at),
    and the detector's reason when it finds none."""
    if x not in X_FIELDS:
        raise UserError(f"x must be one of {', '.join(X_FIELDS)}; got {x!r}")
    title = "Breakpoints"
    found, skipped = curves(points, known, x)
    rows = []
    for name, (run_id, records) in found.items():
        curve = curve_from_points(records, x=x)
        results = detect_all(curve, configs)
        for r, t in zip(results, table3(curve, results), strict=True):
            rows.append({"curve": name, "detector": r.detector, "found": r.found,
                         "ACC before (%)": _pct_or_none(t["accuracy_before"]),
                         "ACC at breakpoint (%)": _pct_or_none(t["accuracy_at_breakpoint"]),
                         "P before": t["params_before"], "P at breakpoint": t["params_at_breakpoint"],
                         "percentage decrease (%)": t["percentage_decrease"],
                         "compression rate (x)": t["compression_rate"], "level at breakpoint": t["level"],
                         "reason": r.reason, "run_id": run_id})
    notes = [f"Curves on x = {x}; P: remaining (non-zero) parameters; percentage decrease = (P before - P at) / "
             f"P before x 100 and compression rate = P before / P at, as in {cite('002')}."]
    notes += [f"Not a curve: {s}" for s in skipped]
    if not found:
        notes.insert(0, _empty(points, "None of the chosen runs is a sweep (prune or quantize over levels)."))
    df = _numbers(pd.DataFrame(rows, columns=BREAKPOINT_COLUMNS), BREAKPOINT_COLUMNS[3:10])
    return Table(title, df, notes, "002")


def teacher_student_table(points: pd.DataFrame, teacher_run: str, known: pd.DataFrame | Lineage | None = None) -> Table:
    """Seed 002's Table 3 in its own layout (`engine.analysis.study_tables.kd_prune_table3`): the sweep of
    `teacher_run` as the teacher, every other chosen sweep as a student, one column per student and
    detector."""
    found, _ = curves(points, known)
    named = {name: records for name, (run_id, records) in found.items() if run_id != teacher_run}
    teacher = [records for run_id, records in found.values() if run_id == teacher_run]
    if not teacher:
        raise UserError(f"run {teacher_run} is not one of the chosen sweeps; choose a pruning run as the teacher")
    table = kd_prune_table3({"teacher": teacher[0], **named})
    notes = [f"Rows as in {cite('002')}'s Table 3: accuracies before pruning (the unpruned points of each curve) and "
             "at each model's breakpoint; percentage decrease and compression rate of the student at its "
             "breakpoint against the teacher before pruning."]
    if not named:
        notes.append("No other sweep chosen: the table has no student column.")
    return Table("Table 3: teacher and students before pruning and at the breakpoint", table, notes, "002")


# ---------------------------------------------------------------- the free pivot


def pivot_fields(points: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(columns to group by, numeric columns to aggregate) of a points frame."""
    usable = [c for c in points.columns if c not in NOT_VALUES]
    numeric = [c for c in usable if pd.api.types.is_numeric_dtype(points[c]) and not pd.api.types.is_bool_dtype(points[c])]
    return usable, numeric


def pivot(points: pd.DataFrame, index: str, columns: str | None, values: str, agg: str = "mean") -> pd.DataFrame:
    """`values` aggregated with `agg` for each `index` value (rows) and each `columns` value (columns;
    None: one column). Missing keys form their own group, shown as "(none)" in column names."""
    groups, numeric = pivot_fields(points)
    for what, name in (("index", index), ("columns", columns)):
        if name is not None and name not in groups:
            raise UserError(f"pivot {what}: no column '{name}' in the points; choose one of: {', '.join(groups)}")
    if values not in numeric:
        raise UserError(f"pivot values: '{values}' is not a numeric column; choose one of: {', '.join(numeric)}")
    if agg not in AGGREGATIONS:
        raise UserError(f"pivot aggregation: '{agg}' is not one of {', '.join(AGGREGATIONS)}")
    if columns is not None and columns == index:
        raise UserError("pivot: rows and columns are the same column; choose two different ones (or no columns)")
    keys = [index] if columns is None else [index, columns]
    data = points[[*dict.fromkeys([*keys, values])]]
    cell = data.groupby(keys, dropna=False, sort=True)[values].agg(agg)
    if columns is None:
        return cell.rename(f"{values} ({agg})").reset_index()
    table = cell.unstack(columns)
    table.columns = [_column_name(v) for v in table.columns]
    return table.reset_index()


def _column_name(v: Any) -> str:
    v = _value(v)
    if v is None:
        return "(none)"
    return f"{v:g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- study tables (reads the store)
