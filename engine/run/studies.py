"""Studies: presets that reproduce a seed's experiment on a chosen dataset and print its tables.

A study is a recipe in examples/ (study-<name>.yaml), run through the recipe runner (the `recipe` task,
so every unit is a stored child run and a rerun reuses what is finished), plus a table builder and a
note. The table builders are pure functions from the stored points of the recipe's child runs
(`StoredUnit`: the unit's stage, its swept values and its points, read back from the store) to pandas
DataFrames in the seed's layout; the notes compare the measured numbers with the seed's findings.

- `kd-prune` (seed 002): Table 1 (teacher, scratch student, each KD method), the teacher, the scratch
  student and the best KD student pruned 0-90 % with repeats and a last-layer fine-tune, and Table 3
  per breakpoint detector. It runs as two recipes in sequence: the best KD student is only known once
  the students are trained, and a recipe is a fixed graph, so the second run narrows the distil sweep to
  scratch and the winner (both reused by key) and adds their pruning.
- `kd-quant` (seed 003): the teacher and four students at 12 weight widths, and a greedy
  mixed-precision path on each.
- `compare-techniques` (seeds 000 and 001): baseline, int8 PTQ, QAT, iterative and structured pruning
  and a distilled student on accuracy, size, latency and parameters.

`--quick` applies QUICK[name] to the recipe document before validation: fewer epochs, fewer methods,
levels and widths, a shorter mixed-precision ladder, one repeat, and pruning fine-tunes on a fixed subset of the
training split. Every stage stays (both regimes' tables and verdicts print); the numbers are then for wiring, not
findings.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from engine.analysis.study_tables import (
    KD_BASELINE,
    LOW_DATA,
    REGIMES,
    StoredUnit,
    best_kd_method,
    cite,
    compare_tables,
    kd_prune_tables,
    kd_quant_tables,
)
from engine.analysis.tables import Table
from engine.core.config import Config, param
from engine.core.errors import ConfigError, UserError
from engine.core.point import Point
from engine.methods.tasks import check_dataset_name, register_task
from engine.model.data import DEFAULT_ROOT, load_dataset
from engine.run.executors import EXECUTORS, make_executor
from engine.run.jobs import StoreContext, run_sync
from engine.run.recipes import Recipe, UnitTally, finished_units, run_recipe
from store import open_store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SWEEP_BITS = [2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 26, 32]  # seed 003's widths
QUICK_LEVELS = [0.0, 0.3, 0.5, 0.7, 0.9]


# ---------------------------------------------------------------- overrides: --dataset, --quick


def apply_overrides(doc: dict, overrides: dict) -> dict:
    """The recipe document with `overrides` merged in: mappings merge, other values (lists too) replace.
    `stages` in overrides maps a stage name to its changes ({config: ..., sweep: ...}); a stage name
    that the recipe lacks is an error, so an override cannot silently miss."""
    out = copy.deepcopy(doc)
    for key, value in overrides.items():
        if key == "stages":
            by_name = {s.get("name", s.get("task")): s for s in out["stages"]}
            for name, changes in value.items():
                if name not in by_name:
                    raise ConfigError(f"override: the recipe has no stage '{name}'; stages are: {', '.join(by_name)}")
                by_name[name].update(_merge(by_name[name], changes))
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in changes.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


QUICK_TEACHER = {"teacher": {"train": {"epochs": 1}}}
# the low-data students keep their full budget (500 images, 8 epochs: cheap): fewer steps leave a quarter-width cnn_s
# at chance, and then no finding can show; two seeds still give a spread. The full-width students get one epoch on
# the full split and one seed (their findings are then judged against a 1-point margin, not a spread); on 1,000
# images one epoch left them at chance.
# kd-quant's low data: kd and dkd (mixup_kd cannot use cached teacher outputs and dml trains two students: they took
# 60 % of the quick study's student training)
QUICK_LOW_DATA = {"sweep": {"method": ["kd", "dkd"], "train": {"seed": [0, 1]}}}
QUICK_COMPRESSION = {"config": {"train": {"epochs": 1}}, "sweep": {"train": {"seed": [0]}}}
# pruning fine-tunes on a fixed random subset of the training split: a last-layer fine-tune first runs the pruned body
# over every image it trains on (once per level), which costs a third of a teacher epoch per level on the full split
QUICK_FINETUNE_SAMPLES = 1000
QUICK_PRUNE = {"config": {"sparsities": QUICK_LEVELS, "repeats": 1, "finetune": {"samples": QUICK_FINETUNE_SAMPLES}}}
QUICK_BITS = {"config": {"bits": [2, 4, 8, 32]}}
QUICK_MIXED = {"config": {"bits": [8, 4, 2], "val_samples": 200}}  # greedy tries layers x rungs x layers: fewer rungs
# --quick, per study: what shrinks (documented here, applied before validation)
QUICK: dict[str, dict] = {
    "kd-prune": {**QUICK_TEACHER, "stages": {
        "distil": {"sweep": {"method": ["scratch", "kd"], "train": {"seed": [0, 1]}}},
        "distil-compression": {**QUICK_COMPRESSION, "sweep": {"method": ["scratch", "kd"], "train": {"seed": [0]}}},
        "prune-teacher": QUICK_PRUNE, "prune-student": QUICK_PRUNE, "prune-compression": QUICK_PRUNE}},
    "kd-quant": {**QUICK_TEACHER, "stages": {
        "distil": QUICK_LOW_DATA,
        "distil-compression": {**QUICK_COMPRESSION, "sweep": {"method": ["kd"], "train": {"seed": [0]}}},
        "bits": QUICK_BITS, "bits-compression": QUICK_BITS, "teacher-bits": QUICK_BITS,
        "mixed": QUICK_MIXED, "mixed-compression": QUICK_MIXED, "teacher-mixed": QUICK_MIXED}},
    "compare-techniques": {"model": {"train": {"epochs": 1}}, "stages": {
        "qat": {"config": {"train": {"epochs": 1}, "calib_batches": 2}},
        "ptq-int8": {"config": {"calib_batches": 2}},
        # each iteration's all-layer fine-tune on the full split costs a teacher epoch
        "iterative": {"config": {"iterations": 2, "finetune": {"samples": QUICK_FINETUNE_SAMPLES}}},
        "structured": {"config": {"finetune": {"samples": QUICK_FINETUNE_SAMPLES}}}}},
}


# ---------------------------------------------------------------- what the table builders read


def stored_units(store, recipe: Recipe) -> list[StoredUnit]:
    """The recipe's units that a finished run in the store computed, in the recipe's order."""
    found = finished_units(store, recipe.units)
    return [StoredUnit(u.stage, u.task, dict(u.axes), *found[u.key]) for u in recipe.units if u.key in found]


# ---------------------------------------------------------------- kd-prune (seed 002)


DISTIL_STAGES = tuple(r.distil for r in REGIMES)


def _stage(doc: dict, name: str) -> dict | None:
    return next((s for s in doc["stages"] if s.get("name") == name), None)


def _distil_methods(doc: dict, name: str = LOW_DATA.distil) -> list[str]:
    stage = _stage(doc, name)
    if stage is None:
        return []
    return list(stage.get("sweep", {}).get("method", [stage.get("config", {}).get("method", "kd")]))


def _first_seed(stage: dict) -> list[int] | None:
    seeds = stage.get("sweep", {}).get("train", {}).get("seed")
    return None if seeds is None else list(seeds)[:1]


def narrowed(doc: dict, methods: dict[str, list[str]]) -> dict:
    """`doc` with each named distil stage's sweep cut to `methods[stage]` and its first seed: the students a
    second recipe prunes or quantizes further (each reused by key)."""
    changes = {}
    for name, keep in methods.items():
        stage = _stage(doc, name)
        if stage is None:
            continue
        sweep: dict = {"method": keep}
        seed = _first_seed(stage)
        if seed is not None:
            sweep["train"] = {"seed": seed}
        changes[name] = {"sweep": sweep}
    return apply_overrides(doc, {"stages": changes})


def _prunes_scratch(name: str) -> bool:
    return name == LOW_DATA.distil  # the compression regime asks about the teacher: only its best KD student


def kd_prune_second(doc: dict, units: list[StoredUnit]) -> dict:
    """The second recipe: each regime's distil sweep narrowed to its first seed's scratch and best KD student."""
    methods = {}
    for name in DISTIL_STAGES:
        if any(u.stage == name for u in units):
            best = best_kd_method(units, name)
            keep = [KD_BASELINE, best] if _prunes_scratch(name) else [best]
            methods[name] = [m for m in keep if m in _distil_methods(doc, name)]
    return narrowed(doc, methods)


def kd_prune_planned(doc: dict) -> dict:
    """The second recipe as planned before the students are trained: a stand-in KD method (the first of the
    sweep) in place of the best one; it has as many units as the real second recipe (for the study's progress)."""
    methods = {}
    for name in DISTIL_STAGES:
        sweep = _distil_methods(doc, name)
        stand_in = next((m for m in sweep if m != KD_BASELINE), KD_BASELINE)
        keep = [KD_BASELINE, stand_in] if _prunes_scratch(name) else [stand_in]
        if sweep:
            methods[name] = list(dict.fromkeys(m for m in keep if m in sweep))
    return narrowed(doc, methods)


def _later(doc: dict) -> set[str]:
    """The stages that start from a regime's students (pruning or the mixed-precision path): the second recipe's."""
    return {s.get("name", s.get("task")) for s in doc["stages"]
            if s.get("from") in DISTIL_STAGES and s.get("task") != "quantize.fake"}


def study_first(doc: dict) -> dict:
    """The first recipe: everything but the stages that take the students further (pruning, mixed precision)."""
    later = _later(doc)
    return {**doc, "stages": [s for s in doc["stages"] if s.get("name", s.get("task")) not in later]}


# ---------------------------------------------------------------- kd-quant (seed 003)


def kd_quant_second(doc: dict, units: list[StoredUnit]) -> dict:
    """The second recipe: the students' sweeps narrowed to the first seed, for the greedy mixed-precision path."""
    return narrowed(doc, {name: _distil_methods(doc, name) for name in DISTIL_STAGES if _stage(doc, name)})


def kd_quant_planned(doc: dict) -> dict:
    return kd_quant_second(doc, [])


# ---------------------------------------------------------------- compare-techniques (seeds 000, 001)


# ---------------------------------------------------------------- the registry and the runner


@dataclass(frozen=True)
class Study:
    name: str
    seeds: str  # which seeds it reproduces
    description: str
    # stored units and chance accuracy (1 / classes) -> titled tables and notes
    tables: Callable[[list[StoredUnit], float | None], tuple[dict[str, pd.DataFrame], list[str]]]
    # a study whose recipe depends on results runs `first(doc)`, then `second(doc, stored units of the first)`
    first: Callable[[dict], dict] | None = None
    second: Callable[[dict, list[StoredUnit]], dict] | None = None
    planned: Callable[[dict], dict] | None = None  # the second recipe as planned before the first has run

    def results(self, units: list[StoredUnit], chance_acc: float | None) -> tuple[dict[str, pd.DataFrame], list[str]]:
        """The tables and notes, the notes led by the paper(s) in full: authors, year and title."""
        tables, notes = self.tables(units, chance_acc)
        papers = cite(self.seeds, full=True)
        return tables, [f"Reproducing {papers}.", *notes] if papers else notes

    @property
    def recipe_path(self) -> Path:
        return EXAMPLES / f"study-{self.name}.yaml"


STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("kd-prune", "002", "two regimes (compression: full-width students on all images; low data: narrow ones "
          "on 500): KD methods over seeds, then the teacher and the best KD student pruned 0-90 % with a last-layer "
          "fine-tune; Table 3 per breakpoint detector; verdicts against the seeds' spread", kd_prune_tables,
          first=study_first, second=kd_prune_second, planned=kd_prune_planned),
    Study("kd-quant", "003", "the teacher and kd/mixup_kd/dml/dkd students at 12 weight widths, and a greedy "
          "mixed-precision path on each", kd_quant_tables,
          first=study_first, second=kd_quant_second, planned=kd_quant_planned),
    Study("compare-techniques", "000, 001", "baseline vs int8 PTQ vs QAT vs iterative and structured pruning vs a "
          "KD student: accuracy, size, latency, parameters", compare_tables),
)}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise UserError(f"unknown study '{name}'; choose from: {', '.join(STUDIES)}")
    return STUDIES[name]


def study_recipe(name: str, dataset: str | None = None, quick: bool = False, overrides: dict | None = None) -> dict:
    """The study's recipe document: the file, then --dataset, then QUICK (with --quick), then `overrides`."""
    study = get_study(name)
    doc = yaml.safe_load(study.recipe_path.read_text(encoding="utf-8"))
    if dataset is not None:
        check_dataset_name(dataset)
        doc["dataset"] = dataset
    if quick:
        doc = apply_overrides(doc, QUICK[name])
    if overrides:
        doc = apply_overrides(doc, overrides)
    doc["name"] = f"study-{name}{'-quick' if quick else ''}"
    Recipe.from_dict(doc)  # validates every stage before anything runs
    return doc


@dataclass
class StudyResult:
    name: str
    seeds: str
    dataset: str
    quick: bool
    run_ids: list[str]  # the study run (its recipes' units are its children)
    tables: dict[str, pd.DataFrame]
    notes: list[str]
    units: list[StoredUnit] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain values for strict JSON: each table as records."""
        return {"study": self.name, "seeds": self.seeds, "dataset": self.dataset, "quick": self.quick,
                "runs": self.run_ids, "notes": self.notes,
                "tables": {title: _records(df) for title, df in self.tables.items()}}


def _records(df: pd.DataFrame) -> list[dict]:
    """Rows as dicts; a table whose rows are named (Table 3) keeps the name under `row`."""
    if not isinstance(df.index, pd.RangeIndex):
        df = df.rename_axis("row").reset_index()
    return [{k: _plain(v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def _plain(v: Any) -> Any:
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and not math.isfinite(v) else v


@dataclass
class StudyTask(Config):
    study: str = param("kd-prune", "which study (see `study --list`)", choices=tuple(STUDIES))
    dataset: str | None = param(None, "run it on this dataset instead of the recipe's (e.g. digits)")
    quick: bool = param(False, "cut the budgets for a fast check (the numbers are then not findings)")
    overrides: dict[str, Any] = param(default_factory=dict, help="changes merged into the recipe document",
                                      cli=False)
    executor: str = param("local", "where the units run (see `run --help`)")
    workers: int = param(1, "units the local executor runs at once", lo=1, hi=64)

    def validate(self) -> None:
        EXECUTORS.get(self.executor).check_available()
        study_recipe(self.study, self.dataset, self.quick, self.overrides)  # every stage checked before a run


def study_documents(cfg: StudyTask, store) -> list[dict]:
    """The study's recipe documents in order; a two-phase study's second one is built from the first's
    stored results, so it is listed only once those are in `store`."""
    study = get_study(cfg.study)
    doc = study_recipe(cfg.study, cfg.dataset, cfg.quick, cfg.overrides)
    if study.first is None:
        return [doc]
    first = study.first(doc)
    units = stored_units(store, Recipe.from_dict(first))
    if study.second is None or not units:
        return [first]
    return [first, study.second(doc, units)]


def planned_units(cfg: StudyTask, store) -> set[str]:
    """The keys of every unit the study will run, known up front: a second recipe not yet built from the first's
    results is counted as planned (Study.planned), so the study's progress is over the whole study."""
    study = get_study(cfg.study)
    docs = study_documents(cfg, store)
    if study.first is not None and study.planned is not None and len(docs) == 1:
        docs = [*docs, study.planned(study_recipe(cfg.study, cfg.dataset, cfg.quick, cfg.overrides))]
    return {u.key for doc in docs for u in Recipe.from_dict(doc).units}


def study_units(cfg: StudyTask, store) -> list[StoredUnit]:
    """Every stored unit of the study's recipes, once each (the second recipe reuses units of the first)."""
    units: dict[str, StoredUnit] = {}
    for doc in study_documents(cfg, store):
        for u in stored_units(store, Recipe.from_dict(doc)):
            units.setdefault(u.run_id, u)
    return list(units.values())


@register_task("study", StudyTask, "run one of the seeds' studies: its recipe(s) as child runs, then its tables")
def study_task(cfg: StudyTask, ctx) -> list[Point]:
    if not isinstance(ctx, StoreContext):
        raise UserError("a study runs in a run store (its units are runs): run it with engine.run.jobs.run_sync "
                        "or the job runner")
    study = get_study(cfg.study)
    executor = make_executor(cfg.executor, ctx.store, workers=cfg.workers)
    points: list[Point] = []
    done = 0
    tally = UnitTally()
    try:
        while True:
            docs = study_documents(cfg, ctx.store)
            if done == len(docs):
                break
            tally.planned = planned_units(cfg, ctx.store)  # the stand-in second recipe gives way to the real one
            for doc in docs[done:]:
                ctx.log_event(f"study {study.name}: recipe {done + 1} ({doc['name']})")
                points += [p for r in run_recipe(Recipe.from_dict(doc), ctx, executor, tally) for p in r.points]
                done += 1
    finally:
        executor.shutdown()
    _, notes = study.results(study_units(cfg, ctx.store), chance(study_recipe(cfg.study, cfg.dataset, cfg.quick,
                                                                             cfg.overrides)))
    for note in notes:
        ctx.log_event(f"study {study.name}: {note}")
    return [p.replace(extra={k: v for k, v in p.extra.items() if k not in ("recipe_stage", "recipe_key", "run_id",
                                                                             "reused")}) for p in points]


def run_study(name: str, db: str | None = None, *, dataset: str | None = None, quick: bool = False,
              overrides: dict | None = None, echo=None, run_name: str | None = None,
              tags: Iterable[str] = ()) -> StudyResult:
    """Runs the study task (its recipe or two recipes as child runs) in the store `db`, then builds the
    tables from the stored points of those child runs. `run_name` and `tags` label the study's run."""
    study = get_study(name)
    cfg = StudyTask(study=name, dataset=dataset, quick=quick, overrides=overrides or {})
    store = open_store(db)
    before = set(store.list_runs(kind="study")["run_id"])
    run_sync("study", cfg, db, echo=echo, name=run_name or f"study {name}{' (quick)' if quick else ''}", tags=tags)
    run_ids = [str(r) for r in store.list_runs(kind="study")["run_id"] if r not in before]
    units = study_units(cfg, store)
    doc = study_recipe(name, dataset, quick, overrides)
    tables, notes = study.results(units, chance(doc))
    if quick:
        notes.append("--quick: budgets are cut for a fast check (fewer epochs and samples); these numbers are "
                     "not findings.")
    return StudyResult(name, study.seeds, doc["dataset"], quick, run_ids, tables, notes, units)


def chance(doc: dict) -> float | None:
    """Chance accuracy on the recipe's dataset (1 / classes); None where the dataset cannot be opened here."""
    try:
        return 1.0 / load_dataset(doc.get("dataset") or "mnist5k", doc.get("data_root") or DEFAULT_ROOT).num_classes
    except UserError:
        return None


def study_rows(study: Study) -> dict:
    return {"name": study.name, "seeds": study.seeds, "recipe": str(study.recipe_path.relative_to(EXAMPLES.parent)),
            "description": study.description}


# ---------------------------------------------------------------- a stored study run's tables


@dataclass
class StudyTables:
    study: str
    seeds: str
    run_id: str
    tables: list[Table]
    notes: list[str]


def study_name(recipe_doc: dict) -> str | None:
    """The study a recipe document runs (its name is study-<name>[-quick]), or None."""
    name = str(recipe_doc.get("name") or "")
    if not name.startswith("study-"):
        return None
    name = name.removeprefix("study-").removesuffix("-quick")
    return name if name in STUDIES else None


def study_tables(store, run_id: str) -> StudyTables | None:
    """The study's own tables and notes for a study run (kind `study`) or a study's recipe run, rebuilt
    from the finished unit runs the store holds ; None when the run is not a study's."""
    run = store.get_run(run_id)
    config = run.get("config") or {}
    if run["kind"] == "study":
        cfg = StudyTask.from_dict(config)
        name, units = cfg.study, study_units(cfg, store)
        doc = study_recipe(name, cfg.dataset, cfg.quick, cfg.overrides)
    else:
        doc = config.get("recipe") or {}
        name = study_name(doc)
        if name is None:
            return None
        units = stored_units(store, Recipe.from_dict(doc))
    seen = {(u.stage, json.dumps(u.axes, sort_keys=True, default=str)) for u in units}
    for u in _child_units(store, run["run_id"]):  # runs made by an older code version have other keys
        if (u.stage, json.dumps(u.axes, sort_keys=True, default=str)) not in seen:
            units.append(u)
    study = STUDIES[name]
    tables, notes = study.results(units, chance(doc))
    return StudyTables(name, study.seeds, run["run_id"],
                       [Table(title, df, [], study.seeds) for title, df in tables.items()], notes)


def _child_units(store, recipe_run_id: str) -> list[StoredUnit]:
    """The recipe run's finished child runs that are recipe units, with the stage and swept values each
    run recorded (runs.stage, runs.sweep)."""
    runs = store.list_runs(status="finished", parent=recipe_run_id)
    runs = runs[runs["stage"].notna()]
    units = [StoredUnit(str(stage), str(kind), json.loads(sweep) if isinstance(sweep, str) else {}, str(run_id),
                        store.run_points(run_id))
             for run_id, stage, sweep, kind in zip(runs["run_id"], runs["stage"], runs["sweep"], runs["kind"],
                                                   strict=True)]
    return units[::-1]  # list_runs gives the newest first
