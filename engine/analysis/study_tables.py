"""The studies' tables and notes: pure functions from the stored points of a study's units to pandas
DataFrames in each seed's layout, and notes that compare the measured numbers with the seed's findings.

A `StoredUnit` is one finished unit of a study's recipe (its stage, swept values and points, as the store
holds them); engine/run/studies.py reads them from the store and runs the studies, this module only computes.

- kd-prune (seed 002): Table 1, the pruning curves, Table 3 per breakpoint detector, and the notes.
- kd-quant (seed 003): accuracy by weight width and the mixed-precision path.
- compare-techniques (seeds 000 and 001): one representative point per technique.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from engine.analysis.breakpoint import BreakpointResult, Curve, curve_from_points, detect_all
from engine.core.errors import UserError

# a KD student "beats" scratch, a quantized model "keeps" its accuracy, within this margin (1 point)
MARGIN = 0.01


@dataclass(frozen=True)
class Paper:
    """A paper a study reproduces, as the app and the notes name it (never by its seed file)."""

    authors: str
    year: int | None
    title: str
    finding: str  # what it found, in a sentence

    @property
    def short(self) -> str:
        return f"{self.authors} ({self.year})" if self.year else self.authors

    @property
    def full(self) -> str:
        return f"{self.short}, \u201c{self.title}\u201d"


# The one table of citations: seed number (the research notes' file) -> the paper.
PAPERS: dict[str, Paper] = {
    "000": Paper("Kieu and Sood", 2023, "Optimizing Deep Learning Model Efficiency Through Comparative Analysis of "
                 "Compression Techniques: Knowledge Distillation, Quantization, and Pruning",
                 "on ResNet-50 and 525 bird species, KD kept most of the accuracy; int8 PTQ was about 4x smaller and "
                 "2.4x faster; iterative pruning reached 58 % sparsity above the baseline's accuracy"),
    "001": Paper("Aghav, Mundra and Pandey", None, "Implementation of Model Compression Techniques on Deep Neural "
                 "Networks", "on VGG-16 with MNIST and CIFAR-10, quantization made models about 4x smaller at a few "
                 "tenths of a point; KD kept the baseline's accuracy within 0.1 point"),
    "002": Paper("Malihi and Heidemann", 2023, "Efficient and Controllable Model Compression through Sequential "
                 "Knowledge Distillation and Pruning",
                 "distilling first, then pruning, gave students over 70 % smaller than the teacher at about its "
                 "accuracy; SimKD was the best distillation method"),
    "003": Paper("a course project report (authors not named)", None, "hybrid knowledge distillation and post-training "
                 "quantization", "the quantized teacher outperformed the quantized students, most at 2 bits; 8 bits "
                 "cost little; a greedy mixed-precision path reduced the student's bit size"),
}


def cite(seed: str, full: bool = False) -> str:
    """How the app names seed `seed`'s paper: "Malihi and Heidemann (2023)" (full: with the title)."""
    parts = [PAPERS[s.strip()] for s in str(seed).split("/") if s.strip() in PAPERS]
    if not parts:
        return ""
    return "; ".join(p.full if full else p.short for p in parts)


def kd_headline(gap: float) -> str:
    """The first words of the KD-against-scratch note, following the sign of `gap` (KD minus scratch, points)."""
    if gap > 100 * MARGIN:
        return "KD beat scratch"
    if gap < -100 * MARGIN:
        return "KD lost to scratch"
    return "KD tied with scratch"


@dataclass(frozen=True)
class StoredUnit:
    """One finished child run of a study's recipe, as the store holds it."""

    stage: str  # the recipe stage (teacher / model for the implicit training)
    task: str
    axes: dict  # the swept values that made it, e.g. {"method": "kd"}
    run_id: str
    points: list[dict]  # store.run_points(run_id)

    @property
    def method(self) -> str:
        return str(self.axes.get("method", ""))


def _one(units: list[StoredUnit], stage: str, method: str | None = None) -> StoredUnit | None:
    for u in units:
        if u.stage == stage and (method is None or u.method == method):
            return u
    return None


def _student(unit: StoredUnit) -> dict:
    """A distill run's (first) student point."""
    return next(p for p in unit.points if p.get("role") == "student")


def _teacher(unit: StoredUnit) -> dict:
    return next(p for p in unit.points if p.get("role") == "teacher")


def percent(value: float | None) -> float | None:
    """A fraction as a percentage for the tables; None (not NaN) where it is missing or not finite."""
    return None if value is None or not math.isfinite(value) else 100.0 * value


def _points_word(delta: float) -> str:
    return f"{100 * delta:+.1f} points"


KD_BASELINE = "scratch"


def best_kd_method(units: list[StoredUnit]) -> str:
    """The KD method whose student has the highest accuracy (scratch is not a KD method)."""
    students = [(u.method, _student(u)["accuracy"]) for u in units if u.stage == "distil" and u.method != KD_BASELINE]
    if not students:
        raise UserError("kd-prune: no KD student finished; nothing to prune (the distil sweep needs a method "
                        "other than scratch)")
    return max(students, key=lambda s: s[1])[0]


def kd_prune_table1(units: list[StoredUnit]) -> pd.DataFrame:
    """Seed 002's Table 1 for one teacher-student pair: the teacher, the scratch student and each KD method."""
    distil = [u for u in units if u.stage == "distil"]
    if not distil:
        return pd.DataFrame(columns=["model", "accuracy (%)", "vs scratch (points)", "parameters"])
    teacher = _teacher(distil[0])
    scratch = next((_student(u)["accuracy"] for u in distil if u.method == KD_BASELINE), None)
    rows = [{"model": "Teacher", "accuracy (%)": percent(teacher["accuracy"]),
             "vs scratch (points)": None if scratch is None else percent(teacher["accuracy"] - scratch),
             "parameters": teacher["params_total"]}]
    for u in distil:
        s = _student(u)
        name = "Student scratch" if u.method == KD_BASELINE else u.method
        rows.append({"model": name, "accuracy (%)": percent(s["accuracy"]),
                     "vs scratch (points)": None if scratch is None else percent(s["accuracy"] - scratch),
                     "parameters": s["params_total"]})
    return pd.DataFrame(rows)


def kd_prune_curves(units: list[StoredUnit], best: str) -> dict[str, list[dict]]:
    """The pruning runs' points by model: teacher, student scratch, student <best>."""
    curves: dict[str, list[dict]] = {}
    teacher = _one(units, "prune-teacher")
    if teacher is not None:
        curves["teacher"] = teacher.points
    for method, name in ((KD_BASELINE, "student scratch"), (best, f"student {best}")):
        u = _one(units, "prune-student", method)
        if u is not None:
            curves[name] = u.points
    return curves


def kd_prune_pruning_table(curves: dict[str, list[dict]]) -> pd.DataFrame:
    """Accuracy (mean and std over repeats) and remaining parameters at each sparsity, per model."""
    rows: dict[float, dict[str, Any]] = {}
    for name, points in curves.items():
        for p in points:
            row = rows.setdefault(float(p["level"]), {"sparsity (%)": 100 * float(p["level"])})
            row[f"{name} acc (%)"] = percent(p["accuracy"])
            row[f"{name} std"] = percent(p.get("accuracy_std") or 0.0)
            row[f"{name} params"] = p["params_nonzero"]
    return pd.DataFrame([rows[k] for k in sorted(rows)])


TABLE3_ROWS = ["ACC(t) (%)", "ACC(s) distillation (%)", "P(t) before pruning", "P(s) before pruning",
               "ACC(t) breakpoint (%)", "ACC(s) breakpoint (%)", "P(t) breakpoint", "P(s) breakpoint",
               "Percentage decrease (%)", "Compression rate (x)"]


def table3_column(t_curve: Curve, t_result: BreakpointResult, s_curve: Curve, s_result: BreakpointResult,
                  acc_t: float | None = None, acc_s: float | None = None) -> list:
    """One student's column of seed 002's Table 3 (rows TABLE3_ROWS) from a detector's answer on the
    teacher's and the student's curves: accuracies and parameters before pruning and at each breakpoint;
    percentage decrease = (P(t) before - P(s) at its breakpoint) / P(t) before x 100 and compression
    rate = P(t) before / P(s) at its breakpoint, as in the seed. ACC(t) and ACC(s) are `acc_t` and
    `acc_s` where given, else each curve's unpruned point. None where there is no breakpoint."""
    before = t_curve.params[0] if t_curve.params else None
    t_at = t_curve.params[t_result.index] if t_result.found and t_curve.params else None
    s_at = s_curve.params[s_result.index] if s_result.found and s_curve.params else None
    usable = before is not None and s_at  # None or 0: no rate
    return [percent(t_curve.mean[0] if acc_t is None else acc_t), percent(s_curve.mean[0] if acc_s is None else acc_s),
            before, s_curve.params[0] if s_curve.params else None,
            percent(t_result.accuracy) if t_result.found else None,
            percent(s_result.accuracy) if s_result.found else None,
            t_at, s_at, 100.0 * (before - s_at) / before if usable else None, before / s_at if usable else None]


def kd_prune_table3(curves: dict[str, list[dict]], trained: dict[str, float] | None = None) -> pd.DataFrame:
    """Seed 002's Table 3, one column per (student, detector) at every detector's defaults (see
    table3_column). ACC(t) and ACC(s) are the trained teacher's and the distilled student's accuracies
    (`trained`, by curve name), else the curve's unpruned point (fine-tuned like every level)."""
    trained = trained or {}
    if "teacher" not in curves:
        return pd.DataFrame(index=TABLE3_ROWS)
    t_curve = curve_from_points(curves["teacher"])
    t_results = {r.detector: r for r in detect_all(t_curve)}
    columns = {}
    for name, points in curves.items():
        if name == "teacher":
            continue
        s_curve = curve_from_points(points)
        for r in detect_all(s_curve):
            columns[f"{name} / {r.detector}"] = table3_column(t_curve, t_results[r.detector], s_curve, r,
                                                              trained.get("teacher"), trained.get(name))
    return pd.DataFrame(columns, index=TABLE3_ROWS)


def kd_prune_notes(table1: pd.DataFrame, curves: dict[str, list[dict]], table3: pd.DataFrame,
                   best: str) -> list[str]:
    notes = []
    acc = dict(zip(table1["model"], table1["accuracy (%)"], strict=True))
    scratch = acc.get("Student scratch")
    if scratch is not None and best in acc:
        gap = acc[best] - scratch
        notes.append(f"{kd_headline(gap)}: the best KD student ({best}, {acc[best]:.1f} %) is {gap:+.1f} points from "
                     f"the scratch student ({scratch:.1f} %): "
                     f"{'reproduced' if gap > 100 * MARGIN else 'not reproduced'} ({cite('002')}: every method beats "
                     f"training alone).")
    if "simkd" in acc:
        notes.append(f"Best method: {best} ({cite('002')}: SimKD is best everywhere): "
                     f"{'reproduced' if best == 'simkd' else 'not reproduced'}.")
    student = curves.get(f"student {best}")
    if student is not None and "teacher" in curves:
        t = {float(p["level"]): p["accuracy"] for p in curves["teacher"]}
        s = {float(p["level"]): p["accuracy"] for p in student}
        above = sum(s[k] >= t[k] for k in s if k in t)
        notes.append(f"Student curve above the teacher's: at {above} of {len(s)} sparsities "
                     f"({cite('002')}: in many cases the student stays above): "
                     f"{'reproduced' if above > len(s) / 2 else 'not reproduced'}.")
    scratch_curve = curves.get("student scratch")
    if student is not None and scratch_curve is not None:
        k = {float(p["level"]): p["accuracy"] for p in student}
        c = {float(p["level"]): p["accuracy"] for p in scratch_curve}
        above = sum(k[x] > c[x] for x in k if x in c)
        notes.append(f"The pruned KD student beats the pruned scratch student at {above} of {len(k)} sparsities "
                     f"({cite('002')}'s premise: distillation first helps pruning): "
                     f"{'reproduced' if above > len(k) / 2 else 'not reproduced'}.")
    for column in table3.columns:
        if not column.startswith(f"student {best} /"):
            continue
        col = table3[column]
        detector = column.split(" / ")[1]
        decrease, acc_t, acc_s = col["Percentage decrease (%)"], col["ACC(t) (%)"], col["ACC(s) breakpoint (%)"]
        if decrease is None or pd.isna(decrease) or acc_s is None or pd.isna(acc_s):
            notes.append(f"{detector}: no breakpoint on the student's or the teacher's curve, so no Table 3 "
                         f"numbers (the Breakpoints page gives each detector's reason).")
            continue
        ok = decrease > 70 and acc_s >= acc_t - 100 * MARGIN
        notes.append(f"{detector}: the pruned student at its breakpoint has {decrease:.1f} % fewer parameters than "
                     f"the teacher ({col['Compression rate (x)']:.1f}x) at {acc_s - acc_t:+.1f} points of accuracy "
                     f"({cite('002')}: over 70 % with about the teacher's accuracy): "
                     f"{'reproduced' if ok else 'not reproduced'}.")
        t_at, s_at = col["P(t) breakpoint"], col["P(s) breakpoint"]
        if t_at is not None and not pd.isna(t_at):
            notes.append(f"{detector}: the student's breakpoint keeps {s_at:,.0f} parameters, the teacher's "
                         f"{t_at:,.0f} ({cite('002')}: the student's comes first, at fewer parameters): "
                         f"{'reproduced' if s_at < t_at else 'not reproduced'}.")
    return notes


def kd_prune_tables(units: list[StoredUnit]) -> tuple[dict[str, pd.DataFrame], list[str]]:
    best = best_kd_method(units)
    table1 = kd_prune_table1(units)
    curves = kd_prune_curves(units, best)
    table3 = kd_prune_table3(curves, trained_accuracies(units, best))
    tables = {"Table 1: distillation": table1, "Pruning: accuracy and remaining parameters by sparsity":
              kd_prune_pruning_table(curves), "Table 3: before pruning and at the breakpoint": table3}
    return tables, kd_prune_notes(table1, curves, table3, best)


def trained_accuracies(units: list[StoredUnit], best: str) -> dict[str, float]:
    """The accuracy of each pruned model before pruning: the teacher's and the distilled students'."""
    out = {}
    for u in units:
        if u.stage == "distil" and u.method in (KD_BASELINE, best):
            out["teacher"] = _teacher(u)["accuracy"]
            out["student scratch" if u.method == KD_BASELINE else f"student {best}"] = _student(u)["accuracy"]
    return out


def _model_name(unit: StoredUnit) -> str:
    return "Teacher" if unit.stage.startswith("teacher") else f"{unit.method} student"


def kd_quant_bits_table(units: list[StoredUnit]) -> pd.DataFrame:
    """Seed 003's table: one row per model, one column per weight width, accuracy in %."""
    rows = []
    for u in sorted((u for u in units if u.stage in ("teacher-bits", "bits")), key=lambda u: u.stage != "teacher-bits"):
        row: dict[str, Any] = {"model": _model_name(u)}
        for p in sorted(u.points, key=lambda p: p["level"]):
            row[f"{int(p['level'])}-bit"] = percent(p["accuracy"])
        rows.append(row)
    return pd.DataFrame(rows)


def kd_quant_mixed_table(units: list[StoredUnit]) -> pd.DataFrame:
    """The greedy mixed-precision path's last step per model: average bits and accuracy against the start."""
    rows = []
    for u in sorted((u for u in units if u.stage in ("teacher-mixed", "mixed")), key=lambda u: u.stage != "teacher-mixed"):
        steps = sorted(u.points, key=lambda p: p.get("step", 0))
        first, last = steps[0], steps[-1]
        rows.append({"model": _model_name(u), "steps": len(steps) - 1, "start bits": first["level"],
                     "start acc (%)": percent(first["accuracy"]), "average bits": last["level"],
                     "acc (%)": percent(last["accuracy"]), "size (bytes)": last["size_bytes"]})
    return pd.DataFrame(rows)


def kd_quant_notes(bits: pd.DataFrame, mixed: pd.DataFrame) -> list[str]:
    notes = []
    if bits.empty or "Teacher" not in set(bits["model"]):
        return [f"No teacher row: nothing to compare with {cite('003')}."]
    table = bits.set_index("model")
    low, top = table.columns[0], table.columns[-1]
    teacher = table.loc["Teacher"]
    students = table.drop(index="Teacher")
    beaten = [m for m in students.index if teacher[low] > students.loc[m, low]]
    notes.append(f"At {low} the quantized teacher ({teacher[low]:.1f} %) beats {len(beaten)} of {len(students)} "
                 f"quantized students ({cite('003')}: the quantized teacher outperforms the quantized students, most at "
                 f"2 bits): {'reproduced' if len(beaten) == len(students) else 'not reproduced'}.")
    t_drop = teacher[top] - teacher[low]
    s_drops = students[top] - students[low]
    notes.append(f"Accuracy lost from {top} to {low}: teacher {t_drop:.1f} points, students {s_drops.min():.1f} to "
                 f"{s_drops.max():.1f} ({cite('003')}: the teacher loses the least): "
                 f"{'reproduced' if t_drop <= s_drops.min() else 'not reproduced'}.")
    if "8-bit" in table.columns:
        kept = [m for m in table.index if table.loc[m, top] - table.loc[m, "8-bit"] <= 100 * MARGIN]
        notes.append(f"At 8 bits {len(kept)} of {len(table)} models stay within 1 point of {top} ({cite('003')}: 8 bits "
                     f"costs little, 0.3-1.1 points for teacher, VKD, mixup and DML students): "
                     f"{'reproduced' if len(kept) == len(table) else 'not reproduced'}.")
    best = students[top].idxmax()
    notes.append(f"Best student at {top}: {best}; at {low}: {students[low].idxmax()} ({cite('003')}, CIFAR-10: the "
                 f"mixup student at every width; CIFAR-100: VKD/DML).")
    if not mixed.empty:
        below = mixed[mixed["average bits"] < 8]
        notes.append(f"The greedy mixed-precision path takes {len(below)} of {len(mixed)} models below 8 average "
                     f"bits within the 1-point validation budget (lowest: {mixed['average bits'].min():.2f} bits, "
                     f"{mixed.loc[mixed['average bits'].idxmin(), 'model']}) ({cite('003')}: the greedy path reduces the "
                     f"student's bit size): {'reproduced' if len(below) else 'not reproduced'}.")
    return notes


def kd_quant_tables(units: list[StoredUnit]) -> tuple[dict[str, pd.DataFrame], list[str]]:
    bits, mixed = kd_quant_bits_table(units), kd_quant_mixed_table(units)
    return {"Accuracy (%) by weight width": bits, "Greedy mixed precision": mixed}, kd_quant_notes(bits, mixed)


def technique_point(u: StoredUnit) -> dict:
    """The point that stands for a technique: the int8 model, the QAT result, the last iteration, the student."""
    if u.task == "distill":
        return _student(u)
    if u.task == "quantize.qat":
        by_kind = {p.get("kind"): p for p in u.points}
        return by_kind.get("qat_int8") or by_kind.get("qat") or u.points[-1]
    variants = [p for p in u.points if p.get("stage") in ("variant", "step")]
    return (variants or u.points)[-1]


TECHNIQUE_NAMES = {"baseline": "Baseline", "ptq-int8": "int8 PTQ", "qat": "QAT", "iterative": "Iterative pruning",
                   "structured": "Structured pruning"}


def interval_text(lo: Any, hi: Any) -> str:
    """A speed-up's 95 % interval as '1.92-2.31', or '' when it was not paired (missing or NaN)."""
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return ""
    return f"{float(lo):.2f}-{float(hi):.2f}"


def compare_table(units: list[StoredUnit]) -> pd.DataFrame:
    """Seeds 000/001's comparison: one row per technique; size and latency also as a ratio to the baseline."""
    rows = []
    for u in units:
        if u.stage not in TECHNIQUE_NAMES and u.stage != "students":
            continue
        p = technique_point(u)
        name = TECHNIQUE_NAMES.get(u.stage) or ("Student scratch" if u.method == KD_BASELINE else
                                                f"KD student ({u.method})")
        if u.stage == "qat":
            name = f"QAT ({p.get('kind', 'qat')})"
        if u.stage in ("iterative", "structured"):
            name = f"{name} ({100 * float(p['level']):.0f} % {p.get('level_name', '')})"
        rows.append({"technique": name, "accuracy (%)": percent(p["accuracy"]), "size (KiB)": p["size_bytes"] / 1024,
                     "latency b1 (ms)": p.get("latency_ms_b1"), "parameters": p["params_total"],
                     "nonzero": p["params_nonzero"], "MACs": p["macs"],
                     # the speed-up over its own run's baseline, timed beside it (engine/deploy/timing.py)
                     "speed-up b1 (x)": p.get("speedup_b1"),
                     "speed-up b1 95 %": interval_text(p.get("speedup_lo_b1"), p.get("speedup_hi_b1")),
                     "timing": p.get("latency_quality") or "", "machine": p.get("machine") or ""})
    df = pd.DataFrame(rows)
    if df.empty or "Baseline" not in set(df["technique"]):
        return df
    base = df.set_index("technique").loc["Baseline"]
    df["size vs baseline (x)"] = base["size (KiB)"] / df["size (KiB)"]
    df["latency vs baseline (x)"] = df["latency b1 (ms)"] / base["latency b1 (ms)"]
    return df


def compare_notes(df: pd.DataFrame) -> list[str]:
    if df.empty or "Baseline" not in set(df["technique"]):
        return [f"No baseline row: nothing to compare with {cite('000/001')}."]
    t = df.set_index("technique")
    base = t.loc["Baseline"]
    notes = []

    def row(prefix: str):
        hits = [i for i in t.index if i.startswith(prefix)]
        return t.loc[hits[0]] if hits else None

    ptq = row("int8 PTQ")
    if ptq is not None:
        d = ptq["accuracy (%)"] - base["accuracy (%)"]
        ok = ptq["size vs baseline (x)"] >= 3 and d >= -100 * MARGIN
        notes.append(f"int8 PTQ: {ptq['size vs baseline (x)']:.1f}x smaller at {d:+.1f} points ({cite('000/001')}: about "
                     f"4x smaller, 0.2-0.4 points lost): {'reproduced' if ok else 'not reproduced'}.")
        lat = ptq["latency vs baseline (x)"]
        paired = ptq.get("speed-up b1 (x)")
        if paired is not None and not pd.isna(paired) and paired > 0:
            lat = 1 / paired  # the paired speed-up, timed beside the baseline, rather than two separate medians
        if lat is not None and not pd.isna(lat):
            faster = lat < 1
            notes.append(f"int8 PTQ latency: {lat:.2f}x the baseline's ({cite('000')}: 2.4x faster, reproduced "
                         f"{'yes' if faster else 'no'}; {cite('001')}: slower, reproduced {'no' if faster else 'yes'}).")
    it = row("Iterative pruning")
    if it is not None:
        d = it["accuracy (%)"] - base["accuracy (%)"]
        notes.append(f"Iterative pruning: {it.name} at {d:+.1f} points ({cite('000')}: 58 % sparsity above the baseline's "
                     f"accuracy): {'reproduced' if d >= 0 else 'not reproduced'} (its fine-tuning is also more training); "
                     f"stored sparse it is {it['size vs baseline (x)']:.1f}x smaller, and its latency is "
                     f"{it['latency vs baseline (x)']:.2f}x (zeros run through the same dense kernels).")
    st = row("Structured pruning")
    if st is not None:
        d = st["accuracy (%)"] - base["accuracy (%)"]
        notes.append(f"Structured pruning: {st.name} at {d:+.1f} points, {st['parameters'] / base['parameters']:.2f}x "
                     f"the parameters and {st['latency vs baseline (x)']:.2f}x the latency (no published number; "
                     f"{cite('001')}'s pruned model lost 1.5 points).")
    kd, scratch = row("KD student"), row("Student scratch")
    if kd is not None:
        d = kd["accuracy (%)"] - base["accuracy (%)"]
        notes.append(f"KD student: {base['parameters'] / kd['parameters']:.1f}x fewer parameters at {d:+.1f} points "
                     f"from the baseline ({cite('001')}: KD kept the baseline's accuracy within 0.1 point): "
                     f"{'reproduced' if d >= -100 * MARGIN else 'not reproduced'}.")
        if scratch is not None:
            g = kd["accuracy (%)"] - scratch["accuracy (%)"]
            notes.append(f"KD student vs the same student from scratch: {g:+.1f} points ({cite('000')}: +14 points, 70 % "
                         f"to 84 %): {'reproduced' if g > 100 * MARGIN else 'not reproduced'}.")
    return notes


def compare_tables(units: list[StoredUnit]) -> tuple[dict[str, pd.DataFrame], list[str]]:
    df = compare_table(units)
    return {"Techniques compared": df}, compare_notes(df)
