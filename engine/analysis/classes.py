"""Per-class accuracy and confusion matrices: which classes a compressed variant hurts first, beside its
baseline. Pure functions over the frame `Store.points(expand=False)` returns (JSON columns as text).

Every point measured since per-class results were recorded carries `confusion` in its `extra`
(engine.deploy.measure: test-split counts, row = true class, column = top-1 prediction; a repeated
pruning level sums its repeats' matrices). Per-class accuracy is derived from it, never stored.

The baseline of a point is, in order: the same run's `baseline` point on the same dataset and runtime
(the fp32 model of a quantization run, sparsity 0 of a pruning sweep, the teacher of a distillation),
else the stored point whose artifact is the point's input checkpoint (the trained model it started from).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from engine.analysis.tables import norm_path, same_checkpoint
from engine.core.errors import UserError
from engine.model.checkpoint import CheckpointError, read_meta

NOT_RECORDED = ("measured before per-class results were recorded (or with more classes than are kept); "
                "re-measure to see them")
TABLE_COLUMNS = ("class", "test images", "baseline accuracy", "accuracy", "change (points)", "mostly taken for")


def matrix_of(extra: str | Mapping | None) -> list[list[int]] | None:
    """The confusion matrix a point's `extra` (JSON text or a mapping) carries, or None when it has none."""
    if isinstance(extra, str):
        extra = json.loads(extra) if extra else {}
    m = (extra or {}).get("confusion") if isinstance(extra, Mapping) else None
    if not isinstance(m, list) or not m or any(not isinstance(r, list) or len(r) != len(m) for r in m):
        return None
    return [[int(v) for v in r] for r in m]


def class_counts(matrix: list[list[int]]) -> list[int]:
    """Test samples of each true class (the row sums)."""
    return [sum(r) for r in matrix]


def class_accuracy(matrix: list[list[int]]) -> list[float | None]:
    """Each class's accuracy: its diagonal count over its row sum (None for a class with no test sample)."""
    return [r[i] / sum(r) if sum(r) else None for i, r in enumerate(matrix)]


def overall_accuracy(matrix: list[list[int]]) -> float:
    """trace / total: the point's top-1 accuracy."""
    total = sum(class_counts(matrix))
    return sum(r[i] for i, r in enumerate(matrix)) / total if total else math.nan


def mostly_taken_for(matrix: list[list[int]]) -> list[int | None]:
    """For each true class, the wrong class it is most often predicted as (None when it never is)."""
    out: list[int | None] = []
    for i, r in enumerate(matrix):
        wrong = [(v, -j) for j, v in enumerate(r) if j != i and v > 0]
        out.append(-max(wrong)[1] if wrong else None)
    return out


def class_table(variant: list[list[int]], baseline: list[list[int]] | None,
                class_names: list[str] | None = None) -> pd.DataFrame:
    """One row per class: test images, baseline accuracy, the variant's accuracy, the change in percentage
    points and the class it is most often mistaken for; the most-hurt classes first (without a baseline:
    the worst classes first). `test images` is the variant's row sum (summed over repeats, if any)."""
    n = len(variant)
    if baseline is not None and len(baseline) != n:
        raise UserError(f"the baseline has {len(baseline)} classes and the variant {n}: not the same task")
    names = [str(c) for c in class_names] if class_names and len(class_names) == n else [str(i) for i in range(n)]
    acc = class_accuracy(variant)
    base = class_accuracy(baseline) if baseline is not None else [None] * n
    taken = mostly_taken_for(variant)
    df = pd.DataFrame({
        "class": names,
        "test images": class_counts(variant),
        "baseline accuracy": [math.nan if b is None else b for b in base],
        "accuracy": [math.nan if a is None else a for a in acc],
        "change (points)": [math.nan if a is None or b is None else 100 * (a - b) for a, b in zip(acc, base, strict=True)],
        "mostly taken for": [names[j] if j is not None else "" for j in taken],
    }, columns=list(TABLE_COLUMNS))
    key = "change (points)" if baseline is not None else "accuracy"
    return df.sort_values(key, kind="stable", na_position="last").reset_index(drop=True)


def baseline_id(points: pd.DataFrame, point_id: int) -> int | None:
    """The point to compare `point_id` with (module doc), or None when the store holds none."""
    rows = points[points["point_id"] == point_id]
    if rows.empty:
        raise UserError(f"no point {point_id} in the store (was its run deleted?)")
    p = rows.iloc[0]
    others = points[points["point_id"] != point_id]
    same_task = others[(others["dataset"].fillna("") == (p.get("dataset") or ""))]
    if p.get("stage") != "baseline":
        same_run = same_task[(same_task["run_id"] == p["run_id"]) & (same_task["stage"] == "baseline")
                             & (same_task["runtime"].fillna("") == (p.get("runtime") or ""))]
        if not same_run.empty:
            return int(same_run["point_id"].iloc[0])
    start = norm_path(p.get("input_checkpoint")) if isinstance(p.get("input_checkpoint"), str) else ""
    if start and "artifact" in same_task:
        made = same_task[same_task["artifact"].map(
            lambda a: isinstance(a, str) and same_checkpoint(norm_path(a), start))]
        if not made.empty:
            same_rt = made[made["runtime"].fillna("") == (p.get("runtime") or "")]
            return int((same_rt if not same_rt.empty else made)["point_id"].iloc[-1])
    return None


def class_names_of(*checkpoints: str | None) -> list[str]:
    """The class names in the first of these checkpoint directories whose meta.json can be read ([] if none)."""
    for c in checkpoints:
        if not c:
            continue
        try:
            return list(read_meta(c).class_names)
        except CheckpointError:
            continue
    return []


def _label(row: pd.Series) -> str:
    level = f", {row.get('level_name') or 'level'} {row['level']:g}" if pd.notna(row.get("level")) else ""
    return f"#{int(row['point_id'])} {row.get('run_name') or row['run_id']}: {row['method']} {row['stage']}{level}"


@dataclass
class ClassReport:
    """A point's per-class results beside its baseline's; `note` says why something is missing."""

    point_id: int
    label: str
    matrix: list[list[int]] | None
    baseline_id: int | None = None
    baseline_label: str = ""
    baseline_matrix: list[list[int]] | None = None
    class_names: list[str] = field(default_factory=list)
    table: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(TABLE_COLUMNS)))
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.matrix is not None


def class_report(points: pd.DataFrame, point_id: int, class_names: list[str] | None = None) -> ClassReport:
    """`point_id`'s per-class table and confusion matrix beside its baseline's. Class names: `class_names`,
    else the meta.json of the point's artifact or input checkpoint, else the class indices."""
    rows = points[points["point_id"] == point_id]
    if rows.empty:
        raise UserError(f"no point {point_id} in the store (was its run deleted?)")
    p = rows.iloc[0]
    report = ClassReport(point_id=int(point_id), label=_label(p), matrix=matrix_of(p.get("extra")))
    if report.matrix is None:
        report.notes.append(f"This point was {NOT_RECORDED}.")
        return report
    b = baseline_id(points, point_id)
    if b is None:
        report.notes.append("No baseline point in the store to compare with (neither a baseline in this run "
                            "nor the point of its input checkpoint): the worst classes come first.")
    else:
        brow = points[points["point_id"] == b].iloc[0]
        report.baseline_id, report.baseline_label = b, _label(brow)
        report.baseline_matrix = matrix_of(brow.get("extra"))
        if report.baseline_matrix is None:
            report.notes.append(f"The baseline ({report.baseline_label}) was {NOT_RECORDED}.")
        elif len(report.baseline_matrix) != len(report.matrix):
            report.notes.append(f"The baseline ({report.baseline_label}) has another number of classes.")
            report.baseline_matrix = None
    names = class_names or class_names_of(p.get("artifact"), p.get("input_checkpoint"))
    report.class_names = names if len(names) == len(report.matrix) else [str(i) for i in range(len(report.matrix))]
    report.table = class_table(report.matrix, report.baseline_matrix, report.class_names)
    return report
