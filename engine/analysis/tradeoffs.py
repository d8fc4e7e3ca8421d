"""The Trade-offs and Breakpoints pages' logic: the point table shaped for a chart, filters, the Pareto
front, curves for the breakpoint detectors and seed 002's Table 3. Pure functions over the frame
`Store.points(expand=False)` returns (one row per stored point, JSON columns as text), so the pages
stay thin and everything here is tested without a browser.

Axes. Accuracy is the y axis and higher is better. On x, less is better for every cost (size,
file size, latency, bits, MACs, nonzero parameters) and more is better for sparsity (the share of
zero weights): the Pareto front keeps the points no other point beats on both, one front per dataset, leaving
out models at chance level (`at_chance`), which no budget could accept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.analysis import tables
from engine.analysis.breakpoint import DETECTORS, BreakpointResult, Curve, curve_from_points, detect, table3
from engine.analysis.exports import measured_precision
from engine.analysis.study_tables import TABLE3_ROWS, percent, table3_column
from engine.core.errors import UserError
from engine.core.options import config_options
from engine.core.point import METRIC_FIELDS
from engine.model.checkpoint import CheckpointError, describe_lineage, read_meta

Y = "accuracy"


@dataclass(frozen=True)
class Axis:
    key: str  # what a selector and a URL call it
    column: str  # the point column it reads
    label: str  # the axis title
    better: str  # "min" or "max": which way along x a model is better
    fmt: str  # d3 format for hover text

    @property
    def latency(self) -> bool:
        """A timed axis: a latency, or a speed-up over the run's baseline."""
        return self.column.startswith(("latency", "speedup"))


AXES: dict[str, Axis] = {a.key: a for a in (
    Axis("size", "size_bytes", "size (bytes, as deployed)", "min", ",.0f"),
    Axis("file", "file_bytes", "file size (bytes, as serialised)", "min", ",.0f"),
    Axis("latency_b1", "latency_ms_b1", "latency, batch 1 (ms, median)", "min", ".3f"),
    Axis("latency_b32", "latency_ms_b32", "latency, batch 32 (ms, median)", "min", ".3f"),
    Axis("speedup_b1", "speedup_b1", "speed-up over the run's baseline, batch 1 (x, timed side by side)", "max",
         ".2f"),
    Axis("speedup_b32", "speedup_b32", "speed-up over the run's baseline, batch 32 (x, timed side by side)", "max",
         ".2f"),
    Axis("sparsity", "sparsity", "sparsity (share of zero weights)", "max", ".3f"),
    Axis("bits", "bits", "bits per weight (mean)", "min", ".2f"),
    Axis("macs", "macs", "MACs per sample", "min", ",.0f"),
    Axis("params", "params_nonzero", "nonzero parameters", "min", ",.0f"),
)}

# what a point can be coloured / marked by: the shaped column each choice reads
COLOUR_BY = {"family": "family", "method": "method_label", "model": "model", "dataset": "dataset",
             "runtime": "runtime", "run": "run_label", "machine": "machine_label", "timing": "timing"}
SYMBOL_BY = {"model": "model", "dataset": "dataset", "runtime": "runtime", "family": "family",
             "timing": "timing", "none": None}
# filter name -> the shaped column it tests
FILTERS = {"dataset": "dataset", "model": "model", "family": "family", "method": "method_label", "run": "run_id",
           "runtime": "runtime", "machine": "machine_label", "timing": "timing"}
NOT_TIMED = "(not timed)"
MAX_GROUPS = 24  # colour groups drawn apart; smaller ones are pooled as "other"

# ---------------------------------------------------------------- shaping


def shape_points(points: pd.DataFrame) -> pd.DataFrame:
    """The points frame with what a chart needs beside the stored columns (vectorised, no JSON parsing):
    `method_label` (family.method, since prune and quantize both have a `sensitivity`), `run_label`,
    `level_text`, `repeats` (how many accuracies accuracy_runs holds: 0 when none), `error` (accuracy_std
    where there were repeats, else NaN), `simulated` as a plain bool, the subset columns of `subset_columns`
    and the error bar each point draws: `error_minus` / `error_plus` below and above its accuracy (the 95 %
    interval where it was scored on a test subset, else `error`)."""
    df = points.copy()
    if df.empty:
        for c in ("method_label", "run_label", "level_text", "interval_text"):
            df[c] = pd.Series(dtype=object)
        df["repeats"] = pd.Series(dtype="int64")
        for c in ("error", "error_minus", "error_plus", *SUBSET_FIELDS):
            df[c] = pd.Series(dtype=float)
        df["eval_subset"] = pd.Series(dtype=bool)
        return df
    family = df["family"].fillna("").astype(str)
    method = df["method"].fillna("").astype(str)
    df["method_label"] = np.where((family == method) | (family == ""), method, family + "." + method)
    for c in ("dataset", "model", "runtime", "role", "level_name", "stage", "backend", "artifact"):
        if c in df:
            df[c] = df[c].fillna("").astype(str)
    df["model"] = df["model"].replace("", "(unknown model)")
    df["dataset"] = df["dataset"].replace("", "(unknown dataset)")
    name = df["run_name"].fillna("").astype(str)
    df["run_label"] = name + " (" + df["run_id"].astype(str).str[:6] + ")"
    level = df["level"]
    has_level = level.notna()
    text = pd.Series("", index=df.index, dtype=object)
    if has_level.any():
        text[has_level] = (df.loc[has_level, "level_name"].replace("", "level") + " "
                           + level[has_level].map("{:g}".format))
    df["level_text"] = text
    runs = df["accuracy_runs"].fillna("").astype(str)
    df["repeats"] = np.where(runs.str.startswith("["), runs.str.count(",") + 1, 0)
    df.loc[runs.isin(["", "[]"]), "repeats"] = 0
    df["error"] = df["accuracy_std"].where(df["repeats"] > 1)
    df = subset_columns(df)
    df["simulated"] = df["simulated"].fillna(False).astype(bool)
    machine = df["machine"].fillna("").astype(str) if "machine" in df else pd.Series("", index=df.index)
    df["machine_label"] = machine.replace("", NOT_TIMED)
    quality = df["latency_quality"].fillna("").astype(str) if "latency_quality" in df else \
        pd.Series("", index=df.index)
    df["timing"] = np.where(quality == "", NOT_TIMED, np.where(quality == "clean", "clean", "noisy"))
    return df


# what a point scored on a seeded subset says in its extra keys (engine/methods/prune/sweep.py: a sweep's level on
# test images; engine/methods/quant/mixed.py: a search step's score on validation images)
SUBSET_FIELDS = ("eval_samples", "accuracy_lo", "accuracy_hi", "val_accuracy", "val_samples", "val_accuracy_lo",
                 "val_accuracy_hi")


def subset_columns(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with the SUBSET_FIELDS as columns (NaN where a point has none; the extra JSON is parsed only for the
    points that carry an interval, each distinct text once), `eval_subset` as a bool, the error bar of each point
    (`error_minus`, `error_plus`: its accuracy's 95 % interval where that accuracy was scored on a test subset,
    else `error`, the spread over repeats) and `interval_text`, its hover words ('' for none).

    A point measured on the whole split draws no interval bar, even when it carries one (a sweep's reported
    levels do, for n = the whole split). A mixed-precision step's accuracy is the whole test split's; its
    validation interval belongs to its search score, so it is told in words, never drawn around the accuracy."""
    df = df.copy()
    fields = pd.DataFrame(np.nan, index=df.index, columns=list(SUBSET_FIELDS))
    subset = pd.Series(False, index=df.index)
    if "extra" in df and len(df):
        text = df["extra"].fillna("").astype(str)
        has = text.str.contains("accuracy_lo", regex=False).to_numpy()
        parsed = {t: json.loads(t) for t in pd.unique(text[has])}
        for i in np.flatnonzero(has):
            extra = parsed[text.iat[i]]
            for j, name in enumerate(SUBSET_FIELDS):
                v = extra.get(name)
                fields.iat[i, j] = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan
            subset.iat[i] = extra.get("eval_subset") is True
    for name in SUBSET_FIELDS:
        df[name] = fields[name].to_numpy()
    df["eval_subset"] = subset.to_numpy()
    accuracy = df[Y].to_numpy(dtype=float)
    lo, hi = df["accuracy_lo"].to_numpy(dtype=float), df["accuracy_hi"].to_numpy(dtype=float)
    drawn = df["eval_subset"].to_numpy() & np.isfinite(lo) & np.isfinite(hi)
    error = df["error"].to_numpy(dtype=float) if "error" in df else np.full(len(df), np.nan)
    df["error_minus"] = np.where(drawn, accuracy - lo, error)
    df["error_plus"] = np.where(drawn, hi - accuracy, error)
    df["interval_text"] = _interval_text(df, drawn)
    return df


def error_bar_caption(points: pd.DataFrame) -> str:
    """What the chart's error bars are, for the points drawn ('' when none has one)."""
    subset = points["eval_subset"].to_numpy(dtype=bool)
    n_sub = int(subset.sum())
    n_rep = int((points["error"].notna().to_numpy() & ~subset).sum())
    parts = ([f"± accuracy std over repeats ({n_rep} point{'s' if n_rep != 1 else ''})"] if n_rep else []) + \
        ([f"the 95 % interval of an accuracy scored on a seeded test subset ({n_sub} point{'s' if n_sub != 1 else ''}"
          f"; points measured on the whole split have none)"] if n_sub else [])
    return f"Error bars: {'; '.join(parts)}. " if parts else ""


def _interval_text(df: pd.DataFrame, drawn: np.ndarray) -> list[str]:
    out = [""] * len(df)
    val = np.isfinite(df["val_accuracy_lo"].to_numpy(dtype=float))
    for i in np.flatnonzero(drawn | val):
        r = df.iloc[i]
        words = []
        if drawn[i]:
            words.append(f"subset of {r['eval_samples']:,.0f} images, 95 % interval "
                         f"{r['accuracy_lo']:.4f}–{r['accuracy_hi']:.4f}")
        if val[i]:
            words.append(f"search score {r['val_accuracy']:.4f} on a subset of {r['val_samples']:,.0f} validation "
                         f"images, 95 % interval {r['val_accuracy_lo']:.4f}–{r['val_accuracy_hi']:.4f}")
        out[i] = "; ".join(words)
    return out


def timing_warning(view: AxisView) -> str:
    """What a latency or speed-up chart must say about its points ('' when nothing): timings from more than
    one machine are not one series, and noisy timings are marked, never silently mixed in."""
    if not view.axis.latency or view.points.empty:
        return ""
    parts = []
    machines = sorted(set(view.points["machine_label"]) - {NOT_TIMED})
    if len(machines) > 1:
        parts.append(f"these latencies come from {len(machines)} machines ({', '.join(machines)}): they are not one "
                     f"series; filter or colour by machine")
    noisy = int((view.points["timing"] == "noisy").sum())
    if noisy:
        parts.append(f"{noisy} point{'s were' if noisy != 1 else ' was'} timed while other processes shared the "
                     f"CPU (timing: noisy); filter or mark by timing to set them apart")
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "." if parts else ""


def filter_options(df: pd.DataFrame) -> dict[str, list]:
    """The values each filter can take, sorted (runs newest first)."""
    out: dict[str, list] = {}
    for name, column in FILTERS.items():
        if name == "run":
            order = df.sort_values("created_at", ascending=False) if "created_at" in df else df
            out[name] = order["run_id"].drop_duplicates().tolist()
        else:
            out[name] = sorted(df[column].dropna().unique().tolist())
    return out


def run_labels(df: pd.DataFrame) -> dict[str, str]:
    """run_id -> "name (id prefix)", for a run filter's labels."""
    first = df.drop_duplicates("run_id")
    return dict(zip(first["run_id"], first["run_label"], strict=True))


def apply_filters(df: pd.DataFrame, filters: Mapping[str, Iterable[Any] | None]) -> pd.DataFrame:
    """The rows whose every filtered column takes one of the chosen values; a filter given None or
    nothing keeps every row (an empty multiselect means "all")."""
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise UserError(f"no filter {', '.join(unknown)}; filters are: {', '.join(FILTERS)}")
    keep = np.ones(len(df), dtype=bool)
    for name, chosen in filters.items():
        values = list(chosen) if chosen is not None else []
        if values:
            keep &= df[FILTERS[name]].isin(values).to_numpy()
    return df if keep.all() else df[keep]


def filters_title(chosen: Mapping[str, Iterable[Any] | None]) -> str:
    """The Filters expander's title: which filters are set and how many values each keeps."""
    parts = []
    for name in FILTERS:
        values = list(chosen.get(name) or [])
        if values:
            parts.append(f"{name}: {values[0]}" if len(values) == 1 and name != "run" else
                         f"{name}: {len(values)} chosen")
    return f"Filters ({'; '.join(parts)})" if parts else "Filters (none chosen: all points)"


@dataclass
class AxisView:
    """The points a chart of accuracy against one axis can draw, and what it had to leave out."""

    points: pd.DataFrame
    axis: Axis
    missing: int = 0  # points without this x (latency not measured) or without accuracy
    nonpositive: int = 0  # points at x <= 0 left off a log axis

    def caption(self) -> str:
        """One sentence naming what was left out ('' when nothing was)."""
        parts = []
        if self.missing:
            what = "no latency measured (run with latency timing on)" if self.axis.latency else \
                f"no {self.axis.label}"
            parts.append(f"{self.missing} point{'s' if self.missing != 1 else ''} with {what}")
        if self.nonpositive:
            parts.append(f"{self.nonpositive} point{'s' if self.nonpositive != 1 else ''} at {self.axis.label} "
                         f"0 (a log axis cannot show them)")
        return ("Not drawn: " + "; ".join(parts) + ".") if parts else ""


def on_axis(df: pd.DataFrame, axis: str, log_x: bool = False) -> AxisView:
    """The rows that have both this x and an accuracy (and x > 0 on a log axis), with counts of the rest."""
    a = get_axis(axis)
    x = pd.to_numeric(df[a.column], errors="coerce")
    y = pd.to_numeric(df[Y], errors="coerce")
    ok = np.isfinite(x.to_numpy(dtype=float)) & np.isfinite(y.to_numpy(dtype=float))
    missing = int((~ok).sum())
    positive = ok & (x.to_numpy(dtype=float) > 0) if log_x else ok
    kept = df if positive.all() else df[positive]
    return AxisView(kept, a, missing, int(ok.sum() - positive.sum()))


def get_axis(axis: str) -> Axis:
    if axis not in AXES:
        raise UserError(f"no axis {axis!r}; axes are: {', '.join(AXES)}")
    return AXES[axis]


# ---------------------------------------------------------------- the Pareto front


def pareto_front(x: Sequence[float], y: Sequence[float], x_better: str = "min", y_better: str = "max") -> np.ndarray:
    """Which points no other point dominates (a mask, in the order given).

    A point dominates another when it is at least as good on both axes and better on one; so of
    two identical points both stay on the front, and of two at the same x only the more accurate.
    A point with a NaN (or infinite) coordinate is never on the front and dominates nothing.
    """
    for name, way in (("x_better", x_better), ("y_better", y_better)):
        if way not in ("min", "max"):
            raise ValueError(f"{name} must be 'min' or 'max', got {way!r}")
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must have the same length, got {xs.size} and {ys.size}")
    front = np.zeros(xs.size, dtype=bool)
    valid = np.flatnonzero(np.isfinite(xs) & np.isfinite(ys))
    if not valid.size:
        return front
    cost = xs[valid] if x_better == "min" else -xs[valid]  # smaller is better
    gain = ys[valid] if y_better == "max" else -ys[valid]  # larger is better
    order = np.lexsort((-gain, cost))  # by cost, the best gain first among equal costs
    best_gain, best_cost = -math.inf, math.nan
    for i in order:
        c, g = cost[i], gain[i]
        if g > best_gain:
            front[valid[i]] = True
            best_gain, best_cost = g, c
        elif g == best_gain and c == best_cost:  # an exact twin of a point on the front
            front[valid[i]] = True
    return front


CHANCE_SE = 3.0  # a model within this many standard errors of guessing is at chance level


def chance_level(points: pd.DataFrame) -> pd.DataFrame:
    """For each row, `chance`: the accuracy of always answering its dataset's most common test class (the largest
    row sum of a confusion matrix over its total; every model of a dataset is tested on the same split, so one
    point's matrix serves the dataset), and `tested`: that total. NaN where no point of the dataset recorded one."""
    out = pd.DataFrame({"chance": np.nan, "tested": np.nan}, index=points.index, dtype=float)
    if points.empty or "extra" not in points or "dataset" not in points:
        return out
    recorded = points["extra"].fillna("").astype(str).str.contains('"confusion"', regex=False)
    for dataset, texts in points.loc[recorded, "extra"].groupby(points.loc[recorded, "dataset"], sort=False):
        for text in texts:
            matrix = json.loads(text).get("confusion")
            counts = [sum(r) for r in matrix if isinstance(r, list)] if isinstance(matrix, list) else []
            if counts and sum(counts):
                out.loc[(points["dataset"] == dataset).to_numpy()] = [max(counts) / sum(counts), float(sum(counts))]
                break
    return out


def at_chance(points: pd.DataFrame) -> pd.Series:
    """Which rows are at chance level: accuracy within CHANCE_SE standard errors (binomial, over the test split)
    of always answering the most common class. Such a model answers no better than guessing, so no budget can
    accept it; a row whose dataset recorded no confusion matrix is never marked."""
    level = chance_level(points)
    chance, n = level["chance"], level["tested"]
    if chance.isna().all():
        return pd.Series(False, index=points.index)
    se = np.sqrt(chance * (1 - chance) / n)
    accuracy = pd.to_numeric(points[Y], errors="coerce")
    return (accuracy <= chance + CHANCE_SE * se).fillna(False).astype(bool)


def pareto_points(view: AxisView, per_dataset: bool = True, drop_chance: bool = True) -> pd.DataFrame:
    """The points on the front of accuracy against the view's axis, ordered by dataset and x. By default each
    dataset has its own front (an accuracy on one test split does not beat one on another) and models at chance
    level (`at_chance`) are left out: no budget could accept them."""
    df = view.points
    if df.empty:
        return df
    if drop_chance:
        df = df[~at_chance(df).to_numpy()]
    groups = df.groupby("dataset", sort=True).indices.values() if per_dataset and "dataset" in df else \
        [np.arange(len(df))]
    mask = np.zeros(len(df), dtype=bool)
    for rows in groups:
        mask[rows] = pareto_front(df[view.axis.column].to_numpy(dtype=float)[rows],
                                  df[Y].to_numpy(dtype=float)[rows], view.axis.better, "max")
    by = ["dataset", view.axis.column] if per_dataset and "dataset" in df else [view.axis.column]
    return df[mask].sort_values(by, kind="stable")


def pareto_table(front: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The Pareto front as the page lists it: accuracy and the x metric first, then what names the point;
    numbers rounded to what was measured (engine.analysis.exports.measured_precision)."""
    a = get_axis(axis)
    columns = [Y, a.column, "run_label", "method_label", "level_text", "model", "dataset", "runtime", "simulated"]
    table = front[[c for c in dict.fromkeys(columns) if c in front]].rename(columns={
        "run_label": "run", "method_label": "method", "level_text": "level"})
    return measured_precision(table)


def detail_table(details: Mapping[str, Any]) -> pd.DataFrame:
    """A point's fields as a two-column table of text, each number rounded to what was measured (by its
    field's name, engine.analysis.exports.ROUNDING): 0.588, not 0.5879999995231628."""
    floats = {k: v for k, v in details.items() if isinstance(v, float)}
    rounded = measured_precision(pd.DataFrame([floats], dtype=float)).iloc[0].to_dict() if floats else {}
    values = []
    for k, v in details.items():
        if isinstance(v, list | dict):
            v = [round(x, 4) if isinstance(x, float) and k == "accuracy_runs" else x for x in v] \
                if isinstance(v, list) else v
            values.append(json.dumps(v))
        elif v is None:
            values.append("")
        elif isinstance(v, float):
            x = float(rounded.get(k, v))
            values.append(str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:.6g}")
        else:
            values.append(str(v))
    return pd.DataFrame({"field": list(details), "value": values})


# ---------------------------------------------------------------- one point: details and lineage


DETAIL_FIELDS = ("run_name", "run_id", "point_id", "family", "method", "stage", "level_name", "level", "role",
                 "dataset", "model", "runtime", "accuracy", "accuracy_std", "accuracy_runs", *[
                     f for f in METRIC_FIELDS if f not in ("accuracy", "dataset", "model", "runtime")],
                 "input_checkpoint", "artifact", "created_at")


def point_details(df: pd.DataFrame, point_id: int) -> dict[str, Any]:
    """One point as {field: value}: its identity, every metric, params and extra parsed from JSON."""
    rows = df[df["point_id"] == point_id]
    if rows.empty:
        raise UserError(f"no point {point_id} in the store (was its run deleted?)")
    row = rows.iloc[0]
    out = {f: _plain(row[f]) for f in DETAIL_FIELDS if f in row.index}
    if isinstance(out.get("accuracy_runs"), str):
        out["accuracy_runs"] = json.loads(out["accuracy_runs"])
    for c in ("params", "extra"):
        text = row.get(c)
        out[c] = json.loads(text) if isinstance(text, str) and text else {}
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):  # a list column (a run's tags)
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is pd.NaT or (not isinstance(v, str | list | dict) and pd.isna(v)):
        return None
    return v


def selected_point_id(selected: Sequence[Mapping[str, Any]]) -> int | None:
    """The point id of the first selected point that carries one (customdata[0], as the Trade-offs figure
    draws it). The browser sends a row of a numeric customdata array as an object keyed "0", "1", ...;
    a list is taken too. Points without customdata (the Pareto line, legend markers) are skipped."""
    for p in selected or []:
        data = p.get("customdata")
        if isinstance(data, Mapping):
            data = data.get("0", data.get(0))
        elif isinstance(data, Sequence) and not isinstance(data, str):
            data = data[0] if len(data) else None
        if data is None:
            continue
        try:
            value = float(data)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            return int(value)
    return None


@dataclass
class Lineage:
    """How a point's checkpoint was made, read from its meta.json; `note` says why when it cannot be."""

    text: str = ""  # describe_lineage: "train -> global_unstructured (sparsity 0.6)"
    steps: list[dict] | None = None  # the meta's lineage steps
    note: str = ""

    @property
    def found(self) -> bool:
        return self.steps is not None


def lineage_of(artifact: str | None) -> Lineage:
    """The lineage of a point's artifact (engine.model.checkpoint.read_meta + describe_lineage), or a note."""
    if not artifact:
        return Lineage(note="this point saved no checkpoint (artifact empty): no lineage to read")
    try:
        meta = read_meta(artifact)
    except CheckpointError as e:
        return Lineage(note=f"the artifact's lineage cannot be read: {e}")
    return Lineage(text=describe_lineage(meta), steps=[dict(s) for s in meta.lineage])


# ---------------------------------------------------------------- breakpoint curves


CURVE_GROUPS = {"run": "a run's sweep", "method": "method and model, pooled across runs"}


@dataclass(frozen=True)
class CurveKey:
    """What a curve holds: one run's points (group "run") or every run's points of one method on one
    model and dataset (group "method"); always one runtime (a point measured on several runtimes is
    stored once per runtime)."""

    group: str
    ident: str  # run_id, or family.method
    model: str
    dataset: str
    runtime: str
    label: str
    level_name: str
    n_points: int
    newest: float  # when its last point was stored (seconds), to order candidates
    teacher: bool  # a teacher's points, or a sweep of a model that a distillation used as its teacher
    n_levels: int = 0  # how many distinct levels: a detector needs three

    @property
    def id(self) -> str:
        return "|".join((self.group, self.ident, self.model, self.dataset, self.runtime))


def teacher_rows(df: pd.DataFrame, rows: pd.DataFrame) -> pd.Series:
    """Which of `rows` belong to a teacher: a teacher's own point, or a variant of a checkpoint that a
    distillation in `df` used as its teacher (tables.Lineage knows which). Never read from a run's name."""
    lineage = tables.Lineage(df)
    inputs = rows["input_checkpoint"] if "input_checkpoint" in rows else pd.Series("", index=rows.index)
    from_teacher = inputs.map(lambda c: bool(c) and isinstance(c, str) and lineage.is_teacher(c)).astype(bool)
    return (rows["role"] == "teacher") | (from_teacher & (rows["family"] != "distill"))  # a student starts there too


def curve_candidates(df: pd.DataFrame, group: str = "run") -> list[CurveKey]:
    """Every curve the detectors can be given: groups with points at two levels or more, per runtime,
    newest first. Per-layer sensitivity scans (one point per layer at each level) are not curves."""
    if group not in CURVE_GROUPS:
        raise UserError(f"curves come from {' or '.join(CURVE_GROUPS)}, not {group!r}")
    if df.empty:
        return []
    layered = df["extra"].fillna("").str.contains('"layer": "', regex=False)
    scans = set(df.loc[layered, "run_id"])
    usable = df[df["level"].notna() & ~df["run_id"].isin(scans)]
    if usable.empty:
        return []
    keys = ["run_id"] if group == "run" else ["family", "method_label"]
    keys += ["model", "dataset", "runtime"]
    seconds = pd.to_datetime(usable["created_at"], utc=True).astype("datetime64[ns, UTC]").astype("int64") / 1e9
    usable = usable.assign(_t=seconds, _teacher=teacher_rows(df, usable))
    out = []
    for values, g in usable.groupby(keys, sort=False, dropna=False):
        if g["level"].nunique() < 2:
            continue
        v = dict(zip(keys, values, strict=True))
        level_name = next((n for n in g["level_name"] if n), "level")
        runtime = f", {v['runtime']}" if v["runtime"] != "torch" else ""
        if group == "run":
            ident, label = v["run_id"], f"{g['run_name'].iloc[0]} ({v['run_id'][:6]}{runtime})"
        else:
            n_runs = g["run_id"].nunique()
            ident = v["method_label"]
            label = (f"{ident} on {v['model']}, {v['dataset']}{runtime} "
                     f"({n_runs} run{'s' if n_runs != 1 else ''})")
        out.append(CurveKey(group, ident, v["model"], v["dataset"], v["runtime"], label, level_name, len(g),
                            float(g["_t"].max()), bool(g["_teacher"].any()), int(g["level"].nunique())))
    return sorted(out, key=lambda k: -k.newest)


MIN_LEVELS = 3  # a curve a detector can read: fewer levels is a line between two points


def default_curves(df: pd.DataFrame, candidates: Sequence[CurveKey], x: str = "params", detector: str = "kneedle",
                   settings: Mapping[str, Any] | None = None) -> list[str]:
    """The curves a page opens on: the newest candidate with MIN_LEVELS levels or more on which `detector`
    finds a breakpoint, with the other runtimes of the same sweep; else the newest with enough levels; else
    the newest candidate. Ids of `candidates`, [] when there are none."""
    if not candidates:
        return []
    enough = [k for k in candidates if k.n_levels >= MIN_LEVELS]
    chosen = None
    for k in enough:
        try:
            if detect(build_curve(df, k, x), detector, dict(settings or {})).found:
                chosen = k
                break
        except (UserError, ValueError):
            continue
    chosen = chosen or (enough[0] if enough else candidates[0])
    return [k.id for k in candidates if k.group == chosen.group and k.ident == chosen.ident
            and k.model == chosen.model and k.dataset == chosen.dataset]


def map_selection(df: pd.DataFrame, ids: Iterable[str], candidates: Sequence[CurveKey]) -> list[str]:
    """Chosen curve ids carried over to the other grouping: a run's sweep becomes its method's pooled curve
    (same model, dataset and runtime) and a pooled curve the runs it pools; only ids among `candidates`,
    in their order."""
    wanted: set[str] = set()
    for cid in ids:
        parts = str(cid).split("|")
        if len(parts) != 5:
            continue
        group, ident, model, dataset, runtime = parts
        same = (df["model"] == model) & (df["dataset"] == dataset) & (df["runtime"] == runtime)
        if group == "run":
            for label in df.loc[same & (df["run_id"] == ident), "method_label"].unique():
                wanted.add("|".join(("method", str(label), model, dataset, runtime)))
        else:
            for run_id in df.loc[same & (df["method_label"] == ident), "run_id"].unique():
                wanted.add("|".join(("run", str(run_id), model, dataset, runtime)))
    return [k.id for k in candidates if k.id in wanted]


def curve_rows(df: pd.DataFrame, key: CurveKey) -> pd.DataFrame:
    """The rows of the points frame that make one curve."""
    column = "run_id" if key.group == "run" else "method_label"
    sel = (df[column] == key.ident) & (df["model"] == key.model) & (df["dataset"] == key.dataset) \
        & (df["runtime"] == key.runtime)
    return df[sel]


def as_point_dicts(rows: pd.DataFrame) -> list[dict]:
    """Rows of the points frame rebuilt as the dicts Store.run_points gives (metrics, contract fields,
    params and extra parsed), for engine.analysis.breakpoint.curve_from_points."""
    out = []
    for r in rows.to_dict("records"):
        p = {k: _plain(v) for k, v in r.items() if k not in ("params", "extra")}
        if isinstance(p.get("accuracy_runs"), str):
            p["accuracy_runs"] = json.loads(p["accuracy_runs"])
        p["params"] = json.loads(r.get("params") or "{}")
        p.update(json.loads(r.get("extra") or "{}"))
        out.append(p)
    return out


def build_curve(df: pd.DataFrame, key: CurveKey, x: str = "params") -> Curve:
    """The curve of one candidate against x (params | size | bits | latency | level)."""
    return curve_from_points(as_point_dicts(curve_rows(df, key)), x=x)


# ---------------------------------------------------------------- detector settings as form fields


def detector_fields(detector: str) -> list[dict]:
    """A detector's settings as form fields: name, type (float | int | bool | str), default, help,
    choices, lo, hi (from its config's param() declarations, so a new detector needs no page code)."""
    d = DETECTORS.get(detector)
    fields = []
    for o in config_options(d.config):
        base = o.base
        kind = "bool" if base is bool else "int" if base is int else "float" if base is float else "str"
        fields.append({"name": o.name, "type": kind, "default": o.default, "help": o.help,
                       "choices": list(o.choices) if o.choices else None, "lo": o.lo, "hi": o.hi})
    return fields


# ---------------------------------------------------------------- seed 002, Table 3


def table3_summary(curves: Mapping[str, Curve], results: Mapping[str, BreakpointResult],
                   teacher: str) -> pd.DataFrame:
    """Seed 002's Table 3 for the chosen curves, in engine.analysis.study_tables.kd_prune_table3's layout (rows
    TABLE3_ROWS, one column per "<student> / <detector>", each from engine.analysis.study_tables.table3_column), for
    whichever detector and settings found `results`. With every detector at its defaults and x = params
    this is the study's table."""
    if teacher not in curves:
        raise UserError(f"no curve {teacher!r} among the chosen curves to take as the teacher")
    t_curve, tr = curves[teacher], results[teacher]
    columns = {f"{name} / {results[name].detector}": table3_column(t_curve, tr, curve, results[name])
               for name, curve in curves.items() if name != teacher}
    return pd.DataFrame(columns, index=TABLE3_ROWS)


def per_curve_summary(curves: Mapping[str, Curve], results: Mapping[str, BreakpointResult]) -> pd.DataFrame:
    """engine.analysis.breakpoint.table3's row for each curve against its own reference: accuracy and remaining
    parameters before and at the breakpoint, percentage decrease and compression rate."""
    rows = []
    for name, curve in curves.items():
        row = table3(curve, [results[name]])[0]
        rows.append({"curve": name, "detector": row["detector"], "found": row["found"],
                     "accuracy before (%)": percent(row["accuracy_before"]),
                     "accuracy at breakpoint (%)": percent(row["accuracy_at_breakpoint"]),
                     "params before": row["params_before"], "params at breakpoint": row["params_at_breakpoint"],
                     "percentage decrease (%)": row["percentage_decrease"],
                     "compression rate (x)": row["compression_rate"], "level": row["level"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tables as the page shows them: no empty cells


NO_BREAKPOINT = "no breakpoint found"
NOT_MEASURED = "not measured"


def number_text(value: Any, name: str) -> str:
    """A number as a table shows it, rounded to what was measured by the column's (or row's) name
    (engine.analysis.exports.ROUNDING): 94.8, not 94.80000138282776; whole numbers with thousands commas."""
    x = float(measured_precision(pd.DataFrame({name: [float(value)]}))[name].iloc[0])
    if not math.isfinite(x):
        return str(x)
    return f"{int(x):,}" if x.is_integer() and abs(x) < 1e15 else f"{x:,.6g}"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def table3_text(curves: Mapping[str, Curve], results: Mapping[str, BreakpointResult], teacher: str) -> pd.DataFrame:
    """table3_summary with every cell as text: numbers rounded to what was measured, and where there is no
    number, why (no breakpoint on the student's or the teacher's curve, or not measured)."""
    table = table3_summary(curves, results, teacher)
    t_found = results[teacher].found
    out = {}
    for column in table.columns:
        s_found = results[column.rsplit(" / ", 1)[0]].found
        cells = []
        for row, v in table[column].items():
            if not _missing(v):
                cells.append(number_text(v, row))
            elif row.startswith(("ACC(t) breakpoint", "P(t) breakpoint")) and not t_found:
                cells.append(f"{NO_BREAKPOINT} on the teacher's curve")
            elif (row.startswith(("ACC(s) breakpoint", "P(s) breakpoint", "Percentage", "Compression"))
                  and not s_found):
                cells.append(NO_BREAKPOINT)
            else:
                cells.append(NOT_MEASURED)
        out[column] = cells
    return pd.DataFrame(out, index=table.index)


AT_BREAKPOINT = ("accuracy at breakpoint (%)", "params at breakpoint", "percentage decrease (%)", "compression rate (x)",
                 "level")


def per_curve_text(curves: Mapping[str, Curve], results: Mapping[str, BreakpointResult]) -> pd.DataFrame:
    """per_curve_summary with its numbers as text rounded to what was measured and, where a value is
    missing, why: "no breakpoint found" at the breakpoint of a curve without one, else "not measured"."""
    table = per_curve_summary(curves, results)
    for column in table.columns:
        if column in ("curve", "detector", "found"):
            continue
        table[column] = [number_text(v, column) if not _missing(v) else
                         NO_BREAKPOINT if column in AT_BREAKPOINT and not found else NOT_MEASURED
                         for v, found in zip(table[column], table["found"], strict=True)]
    return table
