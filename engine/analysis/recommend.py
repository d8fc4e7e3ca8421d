"""Recommend: which stored variant of a baseline checkpoint to ship under a budget.

The user names a baseline point (one that saved a checkpoint) and a `Budget`: the most accuracy they accept to
lose (points), and optionally a size (bytes, or x smaller), a latency (ms at batch 1 or 32, or x faster) and a
runtime. `recommend(points, baseline_id, budget)` ranks every variant descended from that checkpoint on the
same dataset and picks the best confirmed one that fits. A pure function of the frame `Store.points(expand=False)`
returns (plus rows a planner adds, flagged `estimate`); the only thing it looks at outside the frame is whether a
checkpoint directory is on disk (`on_disk`, replaceable).

- Lineage: a candidate starts from the baseline's checkpoint, or from a checkpoint whose producing point
  descends from it (prune -> quantize is two steps); `engine.analysis.tables.Lineage` names the producers.
  Run baselines (a sweep's level 0, a quantization's fp32 model) are the model they start from, not variants.
- Numbers: accuracy change in points against the baseline point; x smaller = baseline size_bytes / size_bytes
  (the storage as deployed); x faster = the paired speed-up the timing protocol recorded (the candidate timed
  beside its run's baseline in the same rounds, with a 95 % interval) when the candidate's run started from the
  baseline checkpoint, else the ratio of median latencies on the same machine and runtime ("unpaired"); a
  timing taken while other processes shared the CPU says "noisy".
- Fits: no budget broken. A model at chance level (`engine.analysis.tradeoffs.at_chance`) breaks every budget.
  A budget on a number that was not measured (latency of an untimed point) is broken: it cannot be shown to fit.
- Ranking, lexicographic: fitting first; among them confirmed before estimates; then the objective; then
  accuracy. The objective is the smallest size when a size budget is given or no latency budget is, and the
  fastest (largest x faster, then lowest latency) when only a latency budget is. Rows that do not fit follow,
  fewest budgets broken first.
- Honesty: `best` is the first fitting row that is confirmed (a reloadable checkpoint directory on disk); an
  estimate (a planner's proxy, flagged `estimate`) is never the recommendation, whatever its numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from engine.analysis.tables import Lineage, norm_path, same_checkpoint
from engine.analysis.tradeoffs import at_chance, chance_level, pareto_front, shape_points
from engine.core.config import check_choice, check_range
from engine.core.errors import CheckpointError, ConfigError, UserError
from engine.model.checkpoint import read_meta

BATCHES = (1, 32)  # the batch sizes a point's latency is timed at
BUDGETS = {"max_drop": "accuracy", "size": "size", "latency": "latency", "faster": "speed-up", "runtime": "runtime",
           "chance": "chance level"}  # what each break is called


@dataclass(frozen=True)
class Budget:
    """What the user accepts: every field but max_drop is optional (None: no limit)."""

    max_drop: float  # accuracy points the user accepts to lose against the baseline (1.0 = one point)
    max_size_bytes: float | None = None  # at most this many bytes as deployed (size_bytes)
    min_smaller: float | None = None  # at least this many times smaller than the baseline
    max_latency_ms: float | None = None  # at most this median latency (ms) at `batch`, on the machine that timed it
    min_faster: float | None = None  # at least this many times faster than the baseline at `batch`
    runtime: str | None = None  # measured on this runtime (torch, onnxruntime, ...)
    batch: int = 1  # the batch size the latency budgets are read at: 1 or 32

    def __post_init__(self) -> None:
        for name, lo in (("max_drop", 0.0), ("max_size_bytes", 0.0), ("min_smaller", 0.0), ("max_latency_ms", 0.0),
                         ("min_faster", 0.0)):
            value = getattr(self, name)
            if value is None and name != "max_drop":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
            check_range(name, float(value), lo, None, lo_open=name != "max_drop")
        check_range("max_drop", float(self.max_drop), 0.0, 100.0)
        check_choice("batch", self.batch, BATCHES)
        if self.runtime is not None and (not isinstance(self.runtime, str) or not self.runtime.strip()):
            raise ConfigError(f"runtime must name a runtime (torch, onnxruntime, ...) or be left out, got "
                              f"{self.runtime!r}")

    @property
    def sized(self) -> bool:
        return self.max_size_bytes is not None or self.min_smaller is not None

    @property
    def timed(self) -> bool:
        return self.max_latency_ms is not None or self.min_faster is not None

    @property
    def objective(self) -> str:
        """What ranks the fitting variants: "size" (smallest first) or "speed" (fastest first)."""
        return "speed" if self.timed and not self.sized else "size"

    def stated(self) -> dict[str, str]:
        """Each budget given, in words, by its key in BUDGETS (as the CLI and the page state them)."""
        out = {"max_drop": f"at most {self.max_drop:g} accuracy point{'s' if self.max_drop != 1 else ''} lost"}
        size = [f"at most {self.max_size_bytes:,.0f} B" if self.max_size_bytes is not None else "",
                f"at least {self.min_smaller:g}x smaller" if self.min_smaller is not None else ""]
        if any(size):
            out["size"] = "size " + " and ".join(w for w in size if w)
        if self.max_latency_ms is not None:
            out["latency"] = f"latency at most {self.max_latency_ms:g} ms at batch {self.batch}"
        if self.min_faster is not None:
            out["faster"] = f"at least {self.min_faster:g}x faster at batch {self.batch}"
        if self.runtime is not None:
            out["runtime"] = f"runtime {self.runtime}"
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Budget:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"no budget {', '.join(unknown)}; budgets are: {', '.join(sorted(known))}")
        return cls(**d)


def checkpoint_on_disk(artifact: str) -> bool:
    """Whether a point's artifact is a checkpoint directory that can be reloaded: its meta.json reads and its
    weights file is there (engine.model.checkpoint.read_meta)."""
    if not artifact:
        return False
    try:
        read_meta(artifact)
    except CheckpointError:
        return False
    return True


# the ranked table's columns, in order
COLUMNS = ("rank", "point_id", "run_id", "run", "method", "stage", "level", "model", "runtime", "accuracy",
           "change_points", "spread_points", "repeats", "size_bytes", "smaller", "latency_ms", "faster", "faster_lo",
           "faster_hi", "timing", "simulated", "fits", "breaks", "broken", "confirmed", "estimate", "artifact")


@dataclass
class Recommendation:
    """What `recommend` found: the baseline, every candidate ranked, the winner (or why there is none) and the
    front of accuracy against size on the baseline's dataset."""

    budget: Budget
    baseline: dict  # the baseline point: point_id, run, method, dataset, model, accuracy, size_bytes, latency_ms, ...
    table: pd.DataFrame  # one row per candidate, ranked (COLUMNS)
    best: dict | None  # the first row of `table` that fits and is confirmed; None when there is none
    reason: str  # why `best` won, or why there is no recommendation
    front: pd.DataFrame  # measured rows (the baseline and candidates, no estimate, none at chance) on the front
    notes: list[str] = field(default_factory=list)  # what to know about the numbers (noisy, unpaired timings)

    @property
    def objective(self) -> str:
        return self.budget.objective

    def to_dict(self) -> dict:
        """Plain values for --json (NaN as None)."""
        return {"budget": self.budget.to_dict(), "objective": self.objective, "baseline": _plain_row(self.baseline),
                "best": _plain_row(self.best) if self.best else None, "reason": self.reason, "notes": self.notes,
                "candidates": [_plain_row(r) for r in self.table.to_dict("records")],
                "front": [int(i) for i in self.front["point_id"] if pd.notna(i)] if len(self.front) else []}


def _plain_row(row: dict | None) -> dict | None:
    if row is None:
        return None
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


# ---------------------------------------------------------------- lineage


def descends(path: str, root: str, lineage: Lineage, limit: int = 64) -> bool:
    """Whether a checkpoint is `root` or was made from it: its producing point's input, and that one's, lead to
    `root` (at most `limit` steps, so a cycle in damaged records ends)."""
    seen: set[str] = set()
    path = norm_path(path)
    while path and path not in seen and len(seen) < limit:
        if same_checkpoint(path, root):
            return True
        seen.add(path)
        producer = lineage.producer(path)
        if producer is None:
            return False
        path = norm_path(producer.get("input_checkpoint"))
    return False


def descendants(points: pd.DataFrame, root: str, dataset: str) -> pd.Series:
    """Which rows are variants of checkpoint `root` on `dataset`: a variant or step (not a run's baseline), not
    the root itself, whose input checkpoint descends from the root."""
    if points.empty:
        return pd.Series(False, index=points.index)
    lineage = Lineage(points[~_estimates(points)])
    artifact = points["artifact"].fillna("").astype(str)
    inputs = points["input_checkpoint"].fillna("").astype(str)
    cache: dict[str, bool] = {}

    def from_root(path: str) -> bool:
        if path not in cache:
            cache[path] = descends(path, root, lineage)
        return cache[path]

    keep = ((points["stage"].astype(str) != "baseline") & (points["dataset"].astype(str) == dataset)
            & ~artifact.map(lambda a: same_checkpoint(norm_path(a), root)))
    return keep & inputs.map(from_root)


def _estimates(points: pd.DataFrame) -> pd.Series:
    if "estimate" not in points:
        return pd.Series(False, index=points.index)
    return points["estimate"].fillna(False).astype(bool)


# ---------------------------------------------------------------- the numbers of each candidate


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _noisy(quality: Any) -> bool:
    return isinstance(quality, str) and quality.startswith("noisy")


def _root_latencies(points: pd.DataFrame, root: str, batch: int) -> dict[tuple[str, str], tuple[float, bool]]:
    """(machine, runtime) -> (median latency of the root checkpoint at `batch`, noisy), the newest timing of the
    root: a point whose artifact is the root, or a run's baseline that started from it."""
    column = f"latency_ms_b{batch}"
    out: dict[tuple[str, str], tuple[float, bool]] = {}
    for r in points.to_dict("records"):
        artifact, source = norm_path(r.get("artifact")), norm_path(r.get("input_checkpoint"))
        is_root = same_checkpoint(artifact, root) or (r.get("stage") == "baseline" and not artifact
                                                      and same_checkpoint(source, root))
        latency = _num(r.get(column))
        if is_root and not math.isnan(latency):
            out[(str(r.get("machine") or ""), str(r.get("runtime") or ""))] = (latency, _noisy(r.get("latency_quality")))
    return out


def _speed(row: dict, root: str, batch: int, root_latency: dict, root_runtime: str) -> tuple[float, float, float, str]:
    """(x faster, low, high, timing words) of one candidate against the root. Unpaired, the root timed on the same
    machine and runtime is preferred, else on the same machine on the baseline's own runtime (a variant exported
    to another runtime, against the baseline as it ran)."""
    latency = _num(row.get(f"latency_ms_b{batch}"))
    noisy = _noisy(row.get("latency_quality"))
    paired = _num(row.get(f"speedup_b{batch}"))
    if not math.isnan(paired) and same_checkpoint(norm_path(row.get("input_checkpoint")), root):
        words = "paired" + (", noisy" if noisy else "")
        return paired, _num(row.get(f"speedup_lo_b{batch}")), _num(row.get(f"speedup_hi_b{batch}")), words
    if math.isnan(latency):
        return math.nan, math.nan, math.nan, "not timed"
    machine, runtime = str(row.get("machine") or ""), str(row.get("runtime") or "")
    base = root_latency.get((machine, runtime))
    against = ""
    if base is None and runtime != root_runtime:
        base, against = root_latency.get((machine, root_runtime)), f" vs {root_runtime}"
    if base is None:
        return math.nan, math.nan, math.nan, "baseline not timed on this machine"
    words = "unpaired" + against + (", noisy" if noisy or base[1] else "")
    return base[0] / latency, math.nan, math.nan, words


def _breaks(r: dict, budget: Budget, chance: float) -> list[tuple[str, str]]:
    """(budget key, words) for each budget the candidate breaks."""
    out = []
    if r["at_chance"]:
        out.append(("chance", f"chance level: {100 * r['accuracy']:.1f} % is no better than guessing the most "
                              f"common class ({100 * chance:.1f} %)"))
    change = r["change_points"]
    if math.isnan(change) or change < -budget.max_drop - 1e-9:
        out.append(("max_drop", f"accuracy {change:+.2f} points (budget: at most {budget.max_drop:g} lost)"))
    size, smaller = r["size_bytes"], r["smaller"]
    if budget.max_size_bytes is not None and not size <= budget.max_size_bytes:
        out.append(("size", f"size {size:,.0f} B (budget: at most {budget.max_size_bytes:,.0f} B)"))
    if budget.min_smaller is not None and not smaller >= budget.min_smaller:
        out.append(("size", f"size {smaller:.2f}x smaller (budget: at least {budget.min_smaller:g}x)"))
    latency, faster = r["latency_ms"], r["faster"]
    if budget.max_latency_ms is not None and not latency <= budget.max_latency_ms:
        what = "not timed" if math.isnan(latency) else f"{latency:.3g} ms"
        out.append(("latency", f"latency {what} at batch {budget.batch} (budget: at most {budget.max_latency_ms:g} ms)"))
    if budget.min_faster is not None and not faster >= budget.min_faster:
        what = r["timing"] if math.isnan(faster) else f"{faster:.2f}x faster"
        out.append(("faster", f"speed {what} at batch {budget.batch} (budget: at least {budget.min_faster:g}x)"))
    if budget.runtime is not None and r["runtime"] != budget.runtime:
        out.append(("runtime", f"runtime {r['runtime']} (budget: {budget.runtime})"))
    return out


# ---------------------------------------------------------------- ranking


def _objective_key(r: dict, objective: str) -> tuple:
    inf = math.inf
    if objective == "speed":
        faster, latency = r["faster"], r["latency_ms"]
        return (-faster if not math.isnan(faster) else inf, latency if not math.isnan(latency) else inf)
    size = r["size_bytes"]
    return (size if not math.isnan(size) else inf,)


def _rank_key(r: dict, objective: str) -> tuple:
    accuracy = r["accuracy"] if not math.isnan(r["accuracy"]) else -math.inf
    if r["fits"]:
        return (0, 0 if r["confirmed"] else 1, *_objective_key(r, objective), -accuracy)
    return (1, len(r["broken"]), *_objective_key(r, objective), -accuracy)


def recommend(points: pd.DataFrame, baseline_id: int, budget: Budget,
              on_disk: Callable[[str], bool] = checkpoint_on_disk) -> Recommendation:
    """Ranks every variant of the baseline point's checkpoint on its dataset under `budget` (see the module's
    docstring for the rules). `points` is `Store.points(expand=False)`, optionally with rows a planner adds
    (column `estimate` True; such a row needs `input_checkpoint`, `dataset`, `stage` and the measured columns it
    estimates). `on_disk(artifact)` says whether a checkpoint can be reloaded."""
    if not isinstance(budget, Budget):
        raise ConfigError(f"budget must be a Budget, got {type(budget).__name__}")
    df = points.reset_index(drop=True)
    for c in ("estimate", "artifact", "input_checkpoint", "run_id", "run_name", "machine", "latency_quality"):
        if c not in df:
            df[c] = False if c == "estimate" else ""
    ids = pd.to_numeric(df["point_id"], errors="coerce")
    match = df[(ids == int(baseline_id)) & ~_estimates(df)]
    if match.empty:
        raise UserError(f"no point {baseline_id} in the store: choose a baseline point id (`python -m engine "
                        f"runs` lists runs, the Trade-offs page shows point ids)")
    base = match.iloc[0]
    root = norm_path(base["artifact"])
    if not root:
        raise UserError(f"point {baseline_id} saved no checkpoint (artifact empty), so nothing can descend from it: "
                        f"choose a point with a checkpoint, such as a trained model")
    shaped = shape_points(df)
    shaped["estimate"] = _estimates(df)
    shaped["chance"] = chance_level(shaped)["chance"]
    shaped["at_chance"] = at_chance(shaped)
    base_row = shaped.loc[match.index[0]]
    dataset = str(base_row["dataset"])
    base_accuracy, base_size = _num(base_row["accuracy"]), _num(base_row["size_bytes"])
    root_latency = _root_latencies(df, root, budget.batch)
    base_latency = _num(base_row.get(f"latency_ms_b{budget.batch}"))
    if math.isnan(base_latency) and root_latency:
        base_latency = next(iter(root_latency.values()))[0]

    keep = descendants(shaped, root, dataset)
    rows = []
    for r in shaped[keep.to_numpy()].to_dict("records"):
        estimate = bool(r["estimate"])
        faster, lo, hi, timing = _speed(r, root, budget.batch, root_latency, str(base_row["runtime"] or "torch"))
        accuracy = _num(r.get("accuracy"))
        size = _num(r.get("size_bytes"))
        run_id = str(r.get("run_id") or "")
        row = {"point_id": None if pd.isna(r.get("point_id")) else int(r["point_id"]), "run_id": run_id,
               "run": str(r["run_label"]) if run_id else "", "method": r["method_label"],
               "stage": r["stage"], "level": r["level_text"], "model": r["model"], "runtime": r["runtime"] or "torch",
               "accuracy": accuracy, "change_points": 100 * (accuracy - base_accuracy),
               "spread_points": 100 * _num(r.get("error")), "repeats": int(r.get("repeats") or 0),
               "size_bytes": size, "smaller": base_size / size if size > 0 else math.nan,
               "latency_ms": _num(r.get(f"latency_ms_b{budget.batch}")), "faster": faster, "faster_lo": lo,
               "faster_hi": hi, "timing": "estimate" if estimate and timing == "not timed" else timing,
               "simulated": bool(r["simulated"]), "estimate": estimate, "artifact": str(r.get("artifact") or ""),
               "at_chance": bool(r["at_chance"])}
        row["confirmed"] = not estimate and on_disk(row["artifact"])
        broken = _breaks(row, budget, _num(r.get("chance")))
        row["broken"] = tuple(dict.fromkeys(k for k, _ in broken))
        row["breaks"] = "; ".join(words for _, words in broken)
        row["fits"] = not broken
        rows.append(row)
    rows.sort(key=lambda r: _rank_key(r, budget.objective))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    table = pd.DataFrame(rows, columns=[*COLUMNS, "at_chance"]).drop(columns="at_chance")
    best = next((r for r in rows if r["fits"] and r["confirmed"]), None)
    baseline = {"point_id": int(base_row["point_id"]), "run_id": str(base_row["run_id"] or ""),
                "run": str(base_row["run_label"]), "method": base_row["method_label"], "stage": base_row["stage"],
                "dataset": dataset, "model": base_row["model"], "runtime": base_row["runtime"] or "torch",
                "accuracy": base_accuracy, "size_bytes": base_size, "latency_ms": base_latency,
                "artifact": str(base_row["artifact"]), "confirmed": on_disk(str(base_row["artifact"]))}
    front = _front(shaped, keep, match.index[0])
    return Recommendation(budget, baseline, table, {k: v for k, v in best.items() if k != "at_chance"} if best else None,
                          _reason(rows, best, budget, baseline), front, _notes(table))


def _front(shaped: pd.DataFrame, keep: pd.Series, base_index: int) -> pd.DataFrame:
    """The measured points on the front of accuracy against size among the baseline and its variants (none at
    chance level, no estimate)."""
    mask = keep.to_numpy().copy()
    mask[shaped.index.get_loc(base_index)] = True
    rows = shaped[mask & ~_estimates(shaped).to_numpy() & ~shaped["at_chance"].to_numpy()]
    if rows.empty:
        return rows
    on = pareto_front(rows["size_bytes"].to_numpy(dtype=float), rows["accuracy"].to_numpy(dtype=float), "min", "max")
    return rows[on].sort_values("size_bytes", kind="stable")


def _reason(rows: list[dict], best: dict | None, budget: Budget, baseline: dict) -> str:
    """Why the winner won, or why there is none, naming the budget that rules everything out."""
    n = len(rows)
    if n == 0:
        return (f"no stored variant descends from {baseline['artifact']} on {baseline['dataset']}: compress it "
                f"(Launch, or a plan) and come back")
    fitting = [r for r in rows if r["fits"]]
    if best is not None:
        what = "smallest" if budget.objective == "size" else "fastest"
        confirmed = sum(r["confirmed"] for r in fitting)
        return (f"the {what} of the {confirmed} confirmed variant{'s' if confirmed != 1 else ''} that fit "
                f"(of {n} descended from the baseline)")
    if fitting:
        estimates = sum(r["estimate"] for r in fitting)
        unsaved = len(fitting) - estimates
        parts = []
        if estimates:
            parts.append(f"{estimates} {'are estimates' if estimates != 1 else 'is an estimate'} (run "
                         f"{'them' if estimates != 1 else 'it'} to confirm)")
        if unsaved:
            parts.append(f"{unsaved} saved no checkpoint that is on disk (rerun with save on)")
        return f"no confirmed variant fits: {len(fitting)} fit, but " + " and ".join(parts)
    counts = {key: sum(key in r["broken"] for r in rows) for key in BUDGETS}
    everywhere = [key for key, c in counts.items() if c == n]
    if everywhere:
        stated = budget.stated()
        named = " and ".join(f"the {BUDGETS[k]} budget ({stated[k]})" if k in stated else "chance level"
                             for k in everywhere)
        untimed = sum(r["timing"] == "not timed" for r in rows)
        hint = (f" ({untimed} of them were never timed: measure with latency on, or Re-time them on Trade-offs)"
                if untimed and {"latency", "faster"} & set(everywhere) else "")
        return f"nothing fits: every one of the {n} variants breaks {named}{hint}"
    broken = ", ".join(f"{BUDGETS[k]} rules out {c}" for k, c in counts.items() if c)
    return f"nothing fits: no variant meets every budget at once ({broken}, of {n})"


def _notes(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return []
    notes = []
    noisy = int(table["timing"].str.contains("noisy").sum())
    if noisy:
        notes.append(f"{noisy} variant{'s were' if noisy != 1 else ' was'} timed while other processes shared the "
                     f"CPU (timing: noisy): re-time before trusting the speed-up")
    unpaired = int(table["timing"].str.startswith("unpaired").sum())
    if unpaired:
        notes.append(f"{unpaired} speed-up{'s are' if unpaired != 1 else ' is'} a ratio of median latencies timed "
                     f"apart (unpaired), not a side-by-side timing")
    simulated = int(table["simulated"].sum())
    if simulated:
        notes.append(f"{simulated} variant{'s are' if simulated != 1 else ' is'} simulated quantization: the size "
                     f"counts the low-bit weights, but no low-bit kernel ran (the latency is the float model's)")
    estimates = int(table["estimate"].sum())
    if estimates:
        notes.append(f"{estimates} row{'s are' if estimates != 1 else ' is an'} estimate{'s' if estimates != 1 else ''}"
                     f" (a planner's proxy, not a measured model): never the recommendation")
    return notes


# ---------------------------------------------------------------- the comparison as a table to read or export


def comparison(rec: Recommendation) -> pd.DataFrame:
    """The baseline and the ranked candidates with units in the column names (what the page shows and exports;
    engine.analysis.exports rounds them to what was measured)."""
    b = rec.baseline
    head = {"rank": "baseline", "point": b["point_id"], "run": b["run"], "method": b["method"], "stage": b["stage"],
            "level": "", "runtime": b["runtime"], "accuracy": b["accuracy"], "change (points)": 0.0,
            "± (points)": math.nan, "repeats": 0, "size (bytes)": b["size_bytes"], "smaller (x)": 1.0,
            "latency (ms)": b["latency_ms"], "faster (x)": 1.0, "faster low (x)": math.nan,
            "faster high (x)": math.nan, "timing": "", "simulated": False, "fits": "", "breaks": "", "confirmed": b["confirmed"],
            "estimate": False, "checkpoint": b["artifact"]}
    t = rec.table
    body = pd.DataFrame({"rank": t["rank"].astype(str), "point": t["point_id"], "run": t["run"], "method": t["method"],
                         "stage": t["stage"], "level": t["level"], "runtime": t["runtime"], "accuracy": t["accuracy"],
                         "change (points)": t["change_points"], "± (points)": t["spread_points"],
                         "repeats": t["repeats"], "size (bytes)": t["size_bytes"], "smaller (x)": t["smaller"],
                         "latency (ms)": t["latency_ms"], "faster (x)": t["faster"], "faster low (x)": t["faster_lo"],
                         "faster high (x)": t["faster_hi"], "timing": t["timing"], "simulated": t["simulated"],
                         "fits": t["fits"].map({True: "yes", False: "no"}), "breaks": t["breaks"],
                         "confirmed": t["confirmed"], "estimate": t["estimate"], "checkpoint": t["artifact"]})
    return pd.concat([pd.DataFrame([head]), body], ignore_index=True)


# ---------------------------------------------------------------- what a page offers as baselines


def baseline_choices(points: pd.DataFrame) -> pd.DataFrame:
    """The points a user can take as the baseline: one per saved checkpoint (the point that made it, else its first
    point), with how many stored points started from it (`children`); those with children first, then by id.
    Columns: point_id, label, children, artifact."""
    columns = ["point_id", "label", "children", "artifact"]
    if points.empty:
        return pd.DataFrame(columns=columns)
    df = shape_points(points[~_estimates(points).to_numpy()])
    artifact = df["artifact"].fillna("").astype(str).map(norm_path)
    source = df["input_checkpoint"].fillna("").astype(str).map(norm_path)
    made = artifact != source
    children = source[made & (source != "")].value_counts()
    rows = []
    for path, group in df[artifact != ""].groupby(artifact[artifact != ""], sort=False):
        makers = group[made[group.index]]
        r = (makers if len(makers) else group).sort_values("point_id").iloc[0]
        level = f" {r['level_text']}" if r["level_text"] else ""
        rows.append({"point_id": int(r["point_id"]), "children": int(children.get(path, 0)), "artifact": path,
                     "label": f"#{int(r['point_id'])} · {r['method_label']}{level} · {r['model']} on {r['dataset']} · "
                              f"{100 * float(r['accuracy']):.2f} % · {r['run_label']}"})
    out = pd.DataFrame(rows, columns=columns)
    return out.sort_values(["children", "point_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
