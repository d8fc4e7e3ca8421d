"""The studies' tables and notes: pure functions from the stored points of a study's units to pandas
DataFrames in each seed's layout, and notes that compare the measured numbers with the seed's findings.

A `StoredUnit` is one finished unit of a study's recipe (its stage, swept values and points, as the store
holds them); engine/run/studies.py reads them from the store and runs the studies, this module only computes.

- kd-prune (seed 002) and kd-quant (seed 003) run in two regimes (REGIMES): "compression" (a full-width
  student on the full training split: how far can the teacher be compressed?) and "low data" (a narrow
  student on few images: does the teacher have something to give?). Each regime's students are trained
  with several seeds; every finding is judged against that spread (`Comparison`, `Verdict`):
  reproduced, not reproduced, not distinguishable (the difference is inside the spread), or not counted
  (both models within CHANCE_BAND of chance).
- kd-prune: Table 1, the pruning curves, Table 3 per breakpoint detector and the teacher compressed at a
  stated accuracy cost, per regime; kd-quant: accuracy by weight width and the mixed-precision path.
- compare-techniques (seeds 000 and 001): one representative point per technique.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

import pandas as pd

from engine.analysis.breakpoint import BreakpointResult, Curve, curve_from_points, detect_all
from engine.core.errors import UserError

# 1 point: the tie band of a comparison with one run on each side (no spread), the allowance of a claim
# "within 1 point of", and the margin of the compare-techniques notes
MARGIN = 0.01
# half a point (5 images of a 1,000-image test split): the least band of a "beats" comparison with repeats, so that two
# seeds which happen to agree closely do not turn a one-image difference into a win or a loss
RESOLUTION = 0.005


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
    parts = [PAPERS[s.strip()] for s in str(seed).replace(",", "/").split("/") if s.strip() in PAPERS]
    if not parts:
        return ""
    return "; ".join(p.full if full else p.short for p in parts)


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


# ---------------------------------------------------------------- verdicts: a finding judged against the spread

REPRODUCED, NOT_REPRODUCED = "reproduced", "not reproduced"
NOT_DISTINGUISHABLE, NOT_COUNTED = "not distinguishable", "not counted"
OUTCOMES = (REPRODUCED, NOT_REPRODUCED, NOT_DISTINGUISHABLE, NOT_COUNTED)
# both models within this of chance (1 / classes): the comparison says nothing about the methods
CHANCE_BAND = 0.05


@dataclass(frozen=True)
class Sample:
    """One model's accuracy (a fraction) over its repeats: seeds of training, or of the fine-tune."""

    runs: tuple[float, ...]

    @classmethod
    def of(cls, *runs: float) -> Sample:
        return cls(tuple(float(r) for r in runs))

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.runs)

    @property
    def std(self) -> float:
        """The sample standard deviation over repeats (0 for one run)."""
        return statistics.stdev(self.runs) if self.n > 1 else 0.0

    def text(self) -> str:
        return f"{100 * self.mean:.1f} %" + (f" \u00b1 {100 * self.std:.1f} (n={self.n})" if self.n > 1 else "")


@dataclass(frozen=True)
class Comparison:
    """`a` against `b`: does a exceed b - allowance, beyond the spread of the repeats?

    `band` is the larger of the two samples' standard deviations (for a claim without allowance, "a beats b", at
    least RESOLUTION, half a point); with a single run on both sides there is no spread, and the band is MARGIN
    (1 point) instead. A difference inside the band is a tie. `paired`: a
    and b are the same runs measured two ways (each model and its quantized copy), so the band is the spread
    of the per-run differences, and none with one run (the difference is exact; the allowance is the claim)."""

    a: str
    b: str
    sample_a: Sample
    sample_b: Sample
    allowance: float = 0.0  # a claim such as "within 1 point of b" allows a to be this far below b
    chance: float = 0.1
    paired: bool = False

    @property
    def diff(self) -> float:
        return self.sample_a.mean - self.sample_b.mean

    @property
    def band(self) -> float:
        if self.paired:
            diffs = [a - b for a, b in zip(self.sample_a.runs, self.sample_b.runs, strict=True)]
            return statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        if max(self.sample_a.n, self.sample_b.n) < 2:
            return MARGIN
        spread = max(self.sample_a.std, self.sample_b.std)
        return spread if self.allowance else max(spread, RESOLUTION)

    @property
    def near_chance(self) -> bool:
        return all(abs(s.mean - self.chance) <= CHANCE_BAND for s in (self.sample_a, self.sample_b))

    @property
    def outcome(self) -> str:
        """win, loss, tie, or chance (both near chance: not counted)."""
        if self.near_chance:
            return "chance"
        margin = self.diff + self.allowance
        return "win" if margin > self.band else "loss" if margin < -self.band else "tie"

    def text(self) -> str:
        tail = {"chance": f"both within {100 * CHANCE_BAND:.0f} points of chance ({100 * self.chance:.0f} %)",
                "win": "beyond", "loss": "beyond", "tie": "within"}[self.outcome]
        single = max(self.sample_a.n, self.sample_b.n) < 2
        if self.paired and self.outcome != "chance":
            spread = "one run measured both ways: no spread" if single else f"paired spread {100 * self.band:.1f}"
            where = {"win": "inside", "loss": "outside", "tie": "at the edge of"}[self.outcome]
            tail = f"{where} the {100 * self.allowance:g}-point allowance ({spread})"
        elif self.outcome != "chance":
            tail += (" the 1-point margin (one run each: no spread)" if single else
                     f" the spread of {100 * self.band:.1f}")
        return (f"{self.a} {self.sample_a.text()} vs {self.b} {self.sample_b.text()}: "
                f"{100 * self.diff:+.1f} points, {tail}")


def judge(c: Comparison) -> str:
    """One comparison as a verdict on the claim "a beats b" (or "a within the allowance of b")."""
    return {"win": REPRODUCED, "loss": NOT_REPRODUCED, "tie": NOT_DISTINGUISHABLE, "chance": NOT_COUNTED}[c.outcome]


def judge_every(comparisons: list[Comparison]) -> str:
    """A claim about every model ("every method beats scratch"): each comparison is judged, those near chance
    are not counted; one counted loss makes it not reproduced; all counted wins, reproduced; else (ties)
    not distinguishable; nothing counted, not counted."""
    outcomes = [judge(c) for c in comparisons if judge(c) != NOT_COUNTED]
    if not outcomes:
        return NOT_COUNTED
    if NOT_REPRODUCED in outcomes:
        return NOT_REPRODUCED
    return REPRODUCED if all(o == REPRODUCED for o in outcomes) else NOT_DISTINGUISHABLE


def judge_most(comparisons: list[Comparison]) -> str:
    """A claim that holds "in most cases" (a curve above another): the majority of the counted comparisons."""
    outcomes = [judge(c) for c in comparisons if judge(c) != NOT_COUNTED]
    if not outcomes:
        return NOT_COUNTED
    if outcomes.count(REPRODUCED) > len(outcomes) / 2:
        return REPRODUCED
    return NOT_REPRODUCED if outcomes.count(NOT_REPRODUCED) > len(outcomes) / 2 else NOT_DISTINGUISHABLE


@dataclass(frozen=True)
class Verdict:
    """A seed's finding, judged in one regime, with the numbers that decided it."""

    seed: str
    regime: str
    finding: str  # the paper's claim in words
    outcome: str  # one of OUTCOMES
    evidence: str  # the numbers

    def note(self) -> str:
        where = f"{self.regime.capitalize()}: " if self.regime else ""
        return f"{where}{self.finding} ({cite(self.seed)}): {self.outcome}. {self.evidence}"


def tally(comparisons: list[Comparison]) -> str:
    """'2 wins, 1 tie, 1 loss, 1 not counted (chance)' over the comparisons."""
    counts = {k: sum(c.outcome == k for c in comparisons) for k in ("win", "tie", "loss", "chance")}
    words = {"win": "win", "tie": "tie", "loss": "loss", "chance": "near chance (not counted)"}
    return ", ".join(f"{v} {words[k]}{'s' if v != 1 and k in ('win', 'tie') else 'es' if v != 1 and k == 'loss' else ''}"
                     for k, v in counts.items() if v)


KD_BASELINE = "scratch"


# ---------------------------------------------------------------- regimes


@dataclass(frozen=True)
class Regime:
    """One question a distillation study asks, and the recipe stages that answer it."""

    name: str
    question: str
    distil: str  # the stage that trains its students (every method, several seeds)
    prune: str  # kd-prune: the stage that prunes its students (the first seed's scratch and best KD student)


COMPRESSION = Regime("compression", "how far the teacher can be compressed: a full-width student on the full training "
                     "split, distilled, then compressed further (kd-prune: pruned to its breakpoint and fine-tuned; kd-quant: "
                     "quantized, uniformly and by a mixed-precision path)", "distil-compression",
                     "prune-compression")
LOW_DATA = Regime("low data", "where the teacher has something to give: a narrow student on few training images, KD "
                  "against the same student trained alone", "distil", "prune-student")
REGIMES = (COMPRESSION, LOW_DATA)


def regime_units(units: list[StoredUnit], regime: Regime) -> list[StoredUnit]:
    return [u for u in units if u.stage == regime.distil]


def _params(point: dict) -> dict:
    params = point.get("params") or {}
    return json.loads(params) if isinstance(params, str) else params


def _seed(unit: StoredUnit) -> int:
    return int(unit.axes.get("train.seed", _params(_student(unit)).get("train", {}).get("seed", 0)))


def budget(distil: list[StoredUnit]) -> str:
    """The regime's training budget, read from what its students recorded: 'cnn_s x0.25, 500 training images,
    8 epochs, seeds 0, 1, 2'."""
    if not distil:
        return "no students ran"
    p = _params(_student(distil[0]))
    images = p.get("train_subset")
    seeds = sorted({_seed(u) for u in distil})
    return (f"{p.get('student', '?')} x{float(p.get('width', 1.0)):g}, "
            f"{f'{images:,}' if images else 'all'} training images, {p.get('train', {}).get('epochs', '?')} epochs, "
            f"{'seed' if len(seeds) == 1 else 'seeds'} {', '.join(map(str, seeds))}")


def student_samples(distil: list[StoredUnit]) -> dict[str, Sample]:
    """Each method's student accuracy over its seeds, in the recipe's order."""
    runs: dict[str, list[float]] = {}
    for u in sorted(distil, key=_seed):
        runs.setdefault(u.method, []).append(_student(u)["accuracy"])
    return {m: Sample.of(*r) for m, r in runs.items()}


def best_kd_method(units: list[StoredUnit], stage: str = LOW_DATA.distil) -> str:
    """The KD method whose students have the highest mean accuracy in `stage` (scratch is not a KD method)."""
    samples = {m: s for m, s in student_samples([u for u in units if u.stage == stage]).items() if m != KD_BASELINE}
    if not samples:
        raise UserError(f"kd-prune: no KD student finished in stage '{stage}'; nothing to prune (the distil sweep "
                        f"needs a method other than scratch)")
    return max(samples, key=lambda m: samples[m].mean)


def chance_of(units: list[StoredUnit]) -> float:
    """Chance accuracy, 1 / classes, from a measured confusion matrix where the points kept one; else 10 classes."""
    for u in units:
        for p in u.points:
            if p.get("confusion"):
                return 1.0 / len(p["confusion"])
    return 0.1


# ---------------------------------------------------------------- kd-prune (seed 002)


def kd_prune_table1(units: list[StoredUnit], regime: Regime = LOW_DATA, chance: float = 0.1) -> pd.DataFrame:
    """Seed 002's Table 1 in one regime: the teacher, the scratch student and each KD method, the students' mean
    and spread over seeds, and each KD method against scratch."""
    columns = ["model", "accuracy (%)", "std (points)", "seeds", "vs scratch (points)", "vs scratch", "parameters"]
    distil = regime_units(units, regime)
    if not distil:
        return pd.DataFrame(columns=columns)
    teacher = _teacher(distil[0])
    samples = student_samples(distil)
    scratch = samples.get(KD_BASELINE)
    params = {u.method: _student(u)["params_total"] for u in distil}
    rows = [{"model": "Teacher", "accuracy (%)": percent(teacher["accuracy"]), "std (points)": 0.0, "seeds": 1,
             "vs scratch (points)": None if scratch is None else percent(teacher["accuracy"] - scratch.mean),
             "vs scratch": "", "parameters": teacher["params_total"]}]
    for method, s in samples.items():
        versus = ""
        if scratch is not None and method != KD_BASELINE:
            versus = {"win": "beats", "loss": "loses", "tie": "within spread", "chance": "near chance"}[
                Comparison(method, KD_BASELINE, s, scratch, chance=chance).outcome]
        rows.append({"model": "Student scratch" if method == KD_BASELINE else method,
                     "accuracy (%)": percent(s.mean), "std (points)": percent(s.std), "seeds": s.n,
                     "vs scratch (points)": None if scratch is None else percent(s.mean - scratch.mean),
                     "vs scratch": versus, "parameters": params[method]})
    return pd.DataFrame(rows, columns=columns)


def kd_prune_curves(units: list[StoredUnit], best: str, regime: Regime = LOW_DATA) -> dict[str, list[dict]]:
    """The pruning runs' points by model: teacher, student scratch (where the regime prunes it), student <best>."""
    curves: dict[str, list[dict]] = {}
    teacher = _one(units, "prune-teacher")
    if teacher is not None:
        curves["teacher"] = teacher.points
    for method, name in ((KD_BASELINE, "student scratch"), (best, f"student {best}")):
        u = _one(units, regime.prune, method)
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


def _table3_results(curves: dict[str, list[dict]]):
    """(column name, teacher curve, teacher result, student name, student curve, student result) per column."""
    t_curve = curve_from_points(curves["teacher"])
    t_results = {r.detector: r for r in detect_all(t_curve)}
    for name, points in curves.items():
        if name == "teacher":
            continue
        s_curve = curve_from_points(points)
        for r in detect_all(s_curve):
            yield f"{name} / {r.detector}", t_curve, t_results[r.detector], name, s_curve, r


def kd_prune_table3(curves: dict[str, list[dict]], trained: dict[str, float] | None = None) -> pd.DataFrame:
    """Seed 002's Table 3, one column per (student, detector) at every detector's defaults (see
    table3_column). ACC(t) and ACC(s) are the trained teacher's and the distilled student's accuracies
    (`trained`, by curve name), else the curve's unpruned point (fine-tuned like every level). Cells a
    detector could not fill are None; `table3_gaps` says why."""
    trained = trained or {}
    if "teacher" not in curves:
        return pd.DataFrame(index=TABLE3_ROWS)
    columns = {column: table3_column(t_curve, t_result, s_curve, s_result, trained.get("teacher"), trained.get(name))
               for column, t_curve, t_result, name, s_curve, s_result in _table3_results(curves)}
    return pd.DataFrame(columns, index=TABLE3_ROWS)


def table3_gaps(curves: dict[str, list[dict]]) -> list[str]:
    """Why a Table 3 column has empty cells: the detector's own reason for finding no breakpoint."""
    if "teacher" not in curves:
        return []
    notes = []
    for column, _, t_result, _, _, s_result in _table3_results(curves):
        for who, r in (("the teacher's", t_result), ("the student's", s_result)):
            if not r.found:
                notes.append(f"Table 3 column '{column}' has empty breakpoint cells: {r.detector} found no breakpoint "
                             f"on {who} curve ({r.reason.rstrip('.')}).")
    return list(dict.fromkeys(notes))


COSTS = (0.01, 0.02, 0.05)  # the accuracy costs (fractions) at which the compression table is read


def compression_at_cost(curves: dict[str, list[dict]], acc_t: float | None, costs=COSTS) -> pd.DataFrame:
    """How far the teacher can be compressed at a stated accuracy cost: for each cost, the pruned model (teacher
    or student, at any sparsity, fine-tuned) with the fewest remaining parameters whose mean accuracy is at least
    the trained teacher's minus the cost."""
    columns = ["cost (points)", "model", "sparsity (%)", "accuracy (%)", "std (points)", "parameters",
               "fewer than the teacher (%)", "compression (x)"]
    if "teacher" not in curves or acc_t is None:
        return pd.DataFrame(columns=columns)
    before = next((p["params_nonzero"] for p in curves["teacher"] if float(p["level"]) == 0.0),
                  max(p["params_nonzero"] for p in curves["teacher"]))
    rows = []
    for cost in costs:
        fits = [(p["params_nonzero"], name, p) for name, points in curves.items() for p in points
                if p["accuracy"] >= acc_t - cost]
        if not fits:
            rows.append({"cost (points)": 100 * cost, "model": "none within the cost", "sparsity (%)": None,
                         "accuracy (%)": None, "std (points)": None, "parameters": None,
                         "fewer than the teacher (%)": None, "compression (x)": None})
            continue
        n, name, p = min(fits, key=lambda f: (f[0], -f[2]["accuracy"]))
        rows.append({"cost (points)": 100 * cost, "model": name, "sparsity (%)": 100 * float(p["level"]),
                     "accuracy (%)": percent(p["accuracy"]), "std (points)": percent(p.get("accuracy_std") or 0.0),
                     "parameters": n, "fewer than the teacher (%)": 100.0 * (before - n) / before,
                     "compression (x)": before / n if n else None})
    return pd.DataFrame(rows, columns=columns)


def _level_sample(p: dict) -> Sample:
    runs = p.get("accuracy_runs")
    return Sample.of(*runs) if runs else Sample.of(p["accuracy"])


def _curve_comparisons(a_name: str, a: list[dict], b_name: str, b: list[dict], chance: float) -> list[Comparison]:
    """a against b at every sparsity both were pruned to (each level's repeats give the spread)."""
    at_b = {float(p["level"]): p for p in b}
    return [Comparison(f"{a_name} at {100 * float(p['level']):.0f} %", b_name, _level_sample(p),
                       _level_sample(at_b[float(p["level"])]), chance=chance)
            for p in sorted(a, key=lambda p: p["level"]) if float(p["level"]) in at_b]


def kd_prune_verdicts(units: list[StoredUnit], regime: Regime, chance: float = 0.1) -> list[Verdict]:
    """Seed 002's findings (and seed 003's "KD beats scratch") judged in one regime."""
    distil = regime_units(units, regime)
    if not distil:
        return []
    verdicts = []
    samples = student_samples(distil)
    scratch = samples.get(KD_BASELINE)
    kd = {m: s for m, s in samples.items() if m != KD_BASELINE}
    if scratch is not None and kd:
        vs = [Comparison(m, KD_BASELINE, s, scratch, chance=chance) for m, s in kd.items()]
        losers = [c.a for c in vs if c.outcome == "loss"]
        evidence = "; ".join(c.text() for c in vs) + f" ({tally(vs)}" + (
            f"; lost: {', '.join(losers)})." if losers else ").")
        verdicts.append(Verdict("002", regime.name, "every KD method beats the student trained alone",
                                judge_every(vs), evidence))
    if "simkd" in kd and len(kd) > 1:
        runner_up = max((m for m in kd if m != "simkd"), key=lambda m: kd[m].mean)
        c = Comparison("simkd", runner_up, kd["simkd"], kd[runner_up], chance=chance)
        verdicts.append(Verdict("002", regime.name, "SimKD is the best distillation method", judge(c),
                                f"{c.text()} (the best other method)."))
    best = max(kd, key=lambda m: kd[m].mean) if kd else None
    if best is None:
        return verdicts
    curves = kd_prune_curves(units, best, regime)
    student, teacher_curve = curves.get(f"student {best}"), curves.get("teacher")
    trained = trained_accuracies(units, best, regime)
    if student is not None and teacher_curve is not None:
        for _, t_curve, t_result, _, s_curve, s_result in _table3_results(
                {"teacher": teacher_curve, f"student {best}": student}):
            detector = s_result.detector
            if not s_result.found:
                verdicts.append(Verdict("002", regime.name, f"{detector}: the pruned student at its breakpoint keeps the "
                                        "teacher's accuracy within 1 point with at least 70 % fewer parameters",
                                        NOT_COUNTED, f"No breakpoint on the student's curve ({s_result.reason.rstrip('.')})."))
            else:
                s_at, before = s_curve.params[s_result.index], t_curve.params[0]
                decrease = 100.0 * (before - s_at) / before
                at = next(p for p in student if float(p["level"]) == float(s_result.level))
                acc_t = trained.get("teacher", t_curve.mean[0])
                c = Comparison(f"student {best} at its breakpoint ({100 * float(s_result.level):.0f} %)", "the teacher",
                               _level_sample(at), Sample.of(acc_t), allowance=MARGIN, chance=chance)
                outcome = NOT_REPRODUCED if decrease < 70 else judge(c)
                verdicts.append(Verdict(
                    "002", regime.name, f"{detector}: the pruned student at its breakpoint keeps the teacher's accuracy "
                    "within 1 point with at least 70 % fewer parameters", outcome,
                    f"{decrease:.1f} % fewer parameters than the teacher ({before / s_at:.1f}x); {c.text()} "
                    f"(allowed: 1 point below)."))
            if s_result.found and t_result.found:
                # "earlier" along the pruning axis: at a lower sparsity (a smaller student always has fewer
                # parameters, so a count would decide nothing); the same level of the grid cannot tell them apart
                s_at, t_at = s_curve.params[s_result.index], t_curve.params[t_result.index]
                s_level, t_level = float(s_result.level), float(t_result.level)
                outcome = (REPRODUCED if s_level < t_level else NOT_DISTINGUISHABLE if s_level == t_level
                           else NOT_REPRODUCED)
                verdicts.append(Verdict("002", regime.name, f"{detector}: the student's breakpoint comes earlier in "
                                        "the pruning than the teacher's", outcome,
                                        f"student at {100 * s_level:.0f} % sparsity ({s_at:,.0f} parameters), teacher "
                                        f"at {100 * t_level:.0f} % ({t_at:,.0f})."))
            elif s_result.found:
                verdicts.append(Verdict("002", regime.name, f"{detector}: the student's breakpoint comes earlier in "
                                        "the pruning than the teacher's", NOT_COUNTED, f"No breakpoint on the teacher's curve "
                                                     f"({t_result.reason.rstrip('.')})."))
        vs = _curve_comparisons(f"student {best}", student, "the teacher", teacher_curve, chance)
        verdicts.append(Verdict("002", regime.name, "the pruned student's curve stays above the pruned teacher's",
                                judge_most(vs), f"Over the sparsities: {tally(vs)}."))
    scratch_curve = curves.get("student scratch")
    if student is not None and scratch_curve is not None:
        vs = _curve_comparisons(f"student {best}", student, "student scratch", scratch_curve, chance)
        verdicts.append(Verdict("002", regime.name, "distilling first helps pruning: the pruned KD student beats the "
                                "pruned scratch student", judge_most(vs), f"Over the sparsities: {tally(vs)}."))
    return verdicts


def trained_accuracies(units: list[StoredUnit], best: str, regime: Regime = LOW_DATA) -> dict[str, float]:
    """The accuracy of each pruned model before pruning: the teacher's and the distilled students' (the seed that
    was pruned)."""
    out = {}
    pruned = {(u.method, u.axes.get("train.seed")) for u in units if u.stage == regime.prune}
    for u in regime_units(units, regime):
        if u.method in (KD_BASELINE, best):
            out["teacher"] = _teacher(u)["accuracy"]
            if not pruned or (u.method, u.axes.get("train.seed")) in pruned:
                out["student scratch" if u.method == KD_BASELINE else f"student {best}"] = _student(u)["accuracy"]
    return out


def kd_prune_regime(units: list[StoredUnit], regime: Regime, chance: float = 0.1
                    ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """One regime's tables, titled with its budget, and its notes (verdicts first)."""
    distil = regime_units(units, regime)
    if not distil:
        return {}, []
    best = best_kd_method(units, regime.distil)
    curves = kd_prune_curves(units, best, regime)
    trained = trained_accuracies(units, best, regime)
    label = f"{regime.name} ({budget(distil)})"
    tables = {f"Table 1, {label}": kd_prune_table1(units, regime, chance)}
    notes = [f"{regime.name.capitalize()} regime: {regime.question}; students {budget(distil)}."]
    if len(curves) > 1:
        tables[f"Pruning, {regime.name}: accuracy and remaining parameters by sparsity"] = kd_prune_pruning_table(curves)
        tables[f"Table 3, {regime.name}: before pruning and at the breakpoint"] = kd_prune_table3(curves, trained)
        if regime is COMPRESSION:
            tables[f"Accuracy cost, {regime.name}: the fewest parameters within 1, 2 and 5 points of the trained "
                   f"teacher"] = compression_at_cost(curves, trained.get("teacher"))
        notes += table3_gaps(curves)
    notes = [notes[0], *(v.note() for v in kd_prune_verdicts(units, regime, chance)), *notes[1:]]
    return tables, notes


ACC_S_NOTE = ("ACC(s) distillation in Table 3 is the distilled student as trained; the pruning curve's 0 % point is the "
              "same student after the pruning stage's last-layer fine-tune, so the two can differ.")


def kd_prune_tables(units: list[StoredUnit], chance: float | None = None) -> tuple[dict[str, pd.DataFrame], list[str]]:
    chance = chance_of(units) if chance is None else chance
    tables: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for regime in REGIMES:
        t, n = kd_prune_regime(units, regime, chance)
        tables.update(t)
        notes += n
    if not tables:
        raise UserError("kd-prune: no student finished in any regime; nothing to tabulate")
    if any(title.startswith("Table 3") for title in tables):
        notes.append(ACC_S_NOTE)
    return tables, notes


# ---------------------------------------------------------------- kd-quant (seed 003)


QUANT_STAGES = {LOW_DATA.name: ("bits", "mixed"), COMPRESSION.name: ("bits-compression", "mixed-compression")}


def _model_name(unit: StoredUnit) -> str:
    return "Teacher" if unit.stage.startswith("teacher") else f"{unit.method} student"


def _bits_samples(units: list[StoredUnit], stage: str) -> dict[str, dict[int, Sample]]:
    """Model -> width -> accuracy over the students' seeds (the teacher's one run first)."""
    runs: dict[str, dict[int, list[float]]] = {}
    for u in sorted((u for u in units if u.stage in ("teacher-bits", stage)), key=lambda u: u.stage != "teacher-bits"):
        for p in u.points:
            runs.setdefault(_model_name(u), {}).setdefault(int(p["level"]), []).append(p["accuracy"])
    return {m: {b: Sample.of(*r) for b, r in sorted(by.items())} for m, by in runs.items()}


def kd_quant_bits_table(units: list[StoredUnit], stage: str = "bits") -> pd.DataFrame:
    """Seed 003's table: one row per model, one column per weight width, mean accuracy in % over the seeds."""
    rows = []
    for model, by_bits in _bits_samples(units, stage).items():
        row: dict[str, Any] = {"model": model, "seeds": next(iter(by_bits.values())).n}
        for b, s in by_bits.items():
            row[f"{b}-bit"] = percent(s.mean)
        rows.append(row)
    return pd.DataFrame(rows)


def kd_quant_mixed_table(units: list[StoredUnit], stage: str = "mixed") -> pd.DataFrame:
    """The greedy mixed-precision path's last step per model: average bits and accuracy against the start."""
    rows = []
    for u in sorted((u for u in units if u.stage in ("teacher-mixed", stage)), key=lambda u: u.stage != "teacher-mixed"):
        steps = sorted(u.points, key=lambda p: p.get("step", 0))
        first, last = steps[0], steps[-1]
        rows.append({"model": _model_name(u), "steps": len(steps) - 1, "start bits": first["level"],
                     "start acc (%)": percent(first["accuracy"]), "average bits": last["level"],
                     "acc (%)": percent(last["accuracy"]), "size (bytes)": last["size_bytes"]})
    return pd.DataFrame(rows)


def kd_quant_verdicts(units: list[StoredUnit], stage: str, regime: str, chance: float = 0.1) -> list[Verdict]:
    samples = _bits_samples(units, stage)
    if "Teacher" not in samples or len(samples) < 2:
        return []
    verdicts = []
    top = max(next(iter(samples.values())))
    if all(8 in by and top in by for by in samples.values()) and top != 8:
        # paired: each run's 8-bit copy against the same run in float, not the seeds' spread of accuracies
        vs = [Comparison(f"{m} at 8 bits", f"{top} bits", by[8], by[top], allowance=MARGIN, chance=chance, paired=True)
              for m, by in samples.items()]
        verdicts.append(Verdict("003", regime, "8 bits stay within 1 point of float for every model", judge_every(vs),
                                "; ".join(c.text() for c in vs) + f" ({tally(vs)})."))
    low = min(next(iter(samples.values())))
    teacher = samples["Teacher"]
    if all(low in by for by in samples.values()):
        vs = [Comparison(f"the teacher at {low} bits", f"{m}", teacher[low], by[low], chance=chance)
              for m, by in samples.items() if m != "Teacher"]
        verdicts.append(Verdict("003", regime, f"the quantized teacher is the most robust: it beats every quantized "
                                f"student at {low} bits", judge_every(vs),
                                "; ".join(c.text() for c in vs) + f" ({tally(vs)})."))
    return verdicts


def kd_quant_notes(bits: pd.DataFrame, mixed: pd.DataFrame, regime: str = "") -> list[str]:
    """The notes that are descriptions, not verdicts: the best students and the mixed-precision path."""
    notes = []
    if bits.empty or "Teacher" not in set(bits["model"]):
        return [f"No teacher row: nothing to compare with {cite('003')}."]
    where = f"{regime.capitalize()}: " if regime else ""
    table = bits.set_index("model").drop(columns="seeds", errors="ignore")
    low, top = table.columns[0], table.columns[-1]
    students = table.drop(index="Teacher")
    if not students.empty:
        notes.append(f"{where}best student at {top}: {students[top].idxmax()}; at {low}: {students[low].idxmax()} "
                     f"({cite('003')}, CIFAR-10: the mixup student at every width; CIFAR-100: VKD/DML).")
    if not mixed.empty:
        below = mixed[mixed["average bits"] < 8]
        notes.append(f"{where}the greedy mixed-precision path takes {len(below)} of {len(mixed)} models below 8 average "
                     f"bits within the 1-point validation budget (lowest: {mixed['average bits'].min():.2f} bits, "
                     f"{mixed.loc[mixed['average bits'].idxmin(), 'model']}) ({cite('003')}: the greedy path reduces the "
                     f"student's bit size): {REPRODUCED if len(below) else NOT_REPRODUCED}.")
    return notes


def kd_quant_tables(units: list[StoredUnit], chance: float | None = None) -> tuple[dict[str, pd.DataFrame], list[str]]:
    chance = chance_of(units) if chance is None else chance
    tables: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for regime in REGIMES:
        bits_stage, mixed_stage = QUANT_STAGES[regime.name]
        distil = regime_units(units, regime)
        if not any(u.stage == bits_stage for u in units):
            continue
        label = f"{regime.name} ({budget(distil)})"
        bits, mixed = kd_quant_bits_table(units, bits_stage), kd_quant_mixed_table(units, mixed_stage)
        tables[f"Accuracy (%) by weight width, {label}"] = bits
        tables[f"Greedy mixed precision, {regime.name}"] = mixed
        notes += [f"{regime.name.capitalize()} regime: {regime.question}; students {budget(distil)}.",
                  *(v.note() for v in kd_quant_verdicts(units, bits_stage, regime.name, chance)),
                  *kd_quant_notes(bits, mixed, regime.name)]
    return tables, notes


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


def compare_tables(units: list[StoredUnit], chance: float | None = None) -> tuple[dict[str, pd.DataFrame], list[str]]:
    df = compare_table(units)
    return {"Techniques compared": df}, compare_notes(df)
