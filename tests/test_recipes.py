"""Recipes: validation before anything runs, grid expansion, reuse of finished units, resume after a cancel."""

from __future__ import annotations

import argparse
import copy
import json

import pytest

from engine.cli.recipes import add_commands
from engine.core.context import RunContext
from engine.core.errors import Cancelled, ConfigError, UserError
from engine.methods.tasks import run_task
from engine.run.executors import Executor, LocalExecutor, Outcome
from engine.run.jobs import StoreContext, create_run, execute_run, run_sync
from engine.run.recipes import RECIPE_TASK, Recipe, RecipeTask, finished_units, load_recipe, run_recipe
from store import open_store

QUICK = {"batch_size": 128, "epochs": 1}
SMALL_TEACHER = {"arch": "cnn_s", "width": 0.5, "latency": False, "train": QUICK}


def kd_then_prune(out: str, sparsities=(0.0, 0.5, 0.9)) -> dict:
    return {
        "name": "kd-prune",
        "dataset": "digits",
        "out": out,
        "teacher": SMALL_TEACHER,
        "model": {"arch": "cnn_s", "width": 0.25},
        "stages": [
            {"name": "distil", "task": "distill",
             "config": {"method": "kd", "train_subset": 256, "latency": False, "train": QUICK}},
            {"name": "prune", "task": "prune.l1_unstructured", "config": {"latency": False},
             "sweep": {"sparsities": list(sparsities)}},
        ],
    }


def cli(*argv: str):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.func(args)


def runs_of(db: str, kind: str | None = None):
    return open_store(db).list_runs(kind=kind)


# ---------------------------------------------------------------- validation


def with_stage(recipe: dict, index: int, **changes) -> dict:
    r = copy.deepcopy(recipe)
    r["stages"][index].update(changes)
    return r


@pytest.mark.parametrize("change, words", [
    ({"sweep": {"sparsities": [0.5, 1.5]}}, ["stage 'prune'", "sparsit", "1.5"]),
    ({"config": {"latency": "no"}}, ["stage 'prune'", "latency", "true or false"]),
    ({"config": {"sparsity": 0.5}}, ["stage 'prune'", "no field sparsity"]),
    ({"sweep": {"train": {"lr": [0.1]}}}, ["stage 'prune'", "sweep.train.lr", "no field train"]),
    ({"sweep": {"sparsities": 0.5}}, ["stage 'prune'", "sweep.sparsities", "list"]),
    ({"task": "prune.l3_magic"}, ["stage 'prune'", "unknown task 'prune.l3_magic'", "prune.l1_unstructured"]),
    ({"from": "teacher_model"}, ["stage 'prune'", "from 'teacher_model'", "distil"]),
    ({"config": {"checkpoint": "somewhere"}}, ["stage 'prune'", "checkpoint is set by the runner", "from:"]),
])
def test_an_invalid_stage_fails_naming_the_stage_and_the_field(tmp_path, change, words):
    bad = with_stage(kd_then_prune(str(tmp_path)), 1, **change)
    with pytest.raises(ConfigError) as e:
        Recipe.from_dict(bad)
    for word in words:
        assert word in str(e.value)


def test_an_invalid_teacher_setting_names_the_teacher_and_the_field(tmp_path):
    bad = kd_then_prune(str(tmp_path))
    bad["teacher"] = {**SMALL_TEACHER, "train": {"epochs": -1}}
    with pytest.raises(ConfigError, match=r"teacher \(train\): epochs must be in \[0"):
        Recipe.from_dict(bad)


def test_an_invalid_recipe_fails_before_anything_runs(tmp_path):
    db = str(tmp_path / "runs.duckdb")
    bad = with_stage(kd_then_prune(str(tmp_path)), 1, sweep={"sparsities": [0.5, 2.0]})
    with pytest.raises(ConfigError, match="stage 'prune'"):
        run_sync(RECIPE_TASK, {"recipe": bad}, db)
    assert runs_of(db).empty


def test_a_recipe_never_builds_python_objects(tmp_path):
    marker = tmp_path / "ran"
    text = (f"dataset: digits\nmodel: !!python/object/apply:os.system ['touch {marker}']\n"
            "stages: [{task: measure}]\n")
    with pytest.raises(ConfigError, match="no !!python"):
        load_recipe(text)
    assert not marker.exists()


def test_recipes_round_trip_through_plain_dicts_and_json(tmp_path):
    recipe = Recipe.from_dict(kd_then_prune(str(tmp_path)))
    again = load_recipe(json.dumps(recipe.to_dict()))
    assert again.to_dict() == recipe.to_dict()
    assert [u.key for u in again.units] == [u.key for u in recipe.units]


# ---------------------------------------------------------------- expansion and keys


def test_sweeps_multiply_along_the_chain_and_validate_prints_the_grid_size(tmp_path, capsys):
    doc = with_stage(kd_then_prune(str(tmp_path)), 0, sweep={"method": ["kd", "dkd"]})
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(doc))
    summary = cli("validate", str(path))
    # teacher 1 + distil 2 methods + prune 3 levels after each student
    assert summary["stages"] == {"teacher": 1, "distil": 2, "prune": 6}
    assert summary["runs"] == 9
    assert "9 run(s)" in capsys.readouterr().out
    prune = [u for u in summary["units"] if u["stage"] == "prune"]
    assert len({tuple(u["inputs"].values()) for u in prune}) == 2  # each student feeds its own three levels


def test_unit_keys_ignore_output_paths_but_follow_upstream_changes(tmp_path):
    base = Recipe.from_dict(kd_then_prune(str(tmp_path / "a")))
    moved = Recipe.from_dict(kd_then_prune(str(tmp_path / "b")))
    assert [u.key for u in moved.units] == [u.key for u in base.units]
    slower = kd_then_prune(str(tmp_path / "a"))
    slower["teacher"] = {**SMALL_TEACHER, "train": {**QUICK, "epochs": 2}}
    changed = Recipe.from_dict(slower)
    assert not {u.key for u in changed.units} & {u.key for u in base.units}  # a new teacher: nothing is shared


def test_from_picks_an_earlier_stage_instead_of_the_previous_one(tmp_path):
    doc = kd_then_prune(str(tmp_path))
    doc["stages"].append({"name": "int8", "task": "quantize.dynamic_int8", "from": "distil",
                          "config": {"latency": False}})
    recipe = Recipe.from_dict(doc)
    distil = next(u for u in recipe.units if u.stage == "distil")
    int8 = next(u for u in recipe.units if u.stage == "int8")
    assert int8.inputs == {"checkpoint": distil.key}


def test_a_stage_after_a_quantize_stage_is_refused_unless_it_measures(tmp_path):
    doc = kd_then_prune(str(tmp_path))
    doc["stages"].insert(1, {"name": "int8", "task": "quantize.dynamic_int8", "config": {"latency": False}})
    with pytest.raises(ConfigError, match="stage 'prune' takes its checkpoint from stage 'int8'.*quantize last"):
        Recipe.from_dict(doc)
    doc["stages"][2] = {"name": "check", "task": "measure", "config": {"latency": False}}
    assert Recipe.from_dict(doc).grid()["check"] == 1


# ---------------------------------------------------------------- running: reuse and resume


def test_a_sweep_after_a_distil_stage_trains_the_teacher_once_and_distils_once(tmp_path, capsys):
    db = str(tmp_path / "runs.duckdb")
    out = str(tmp_path / "ckpt")
    points = run_sync(RECIPE_TASK, RecipeTask(recipe=kd_then_prune(out)), db)
    assert len(runs_of(db, "train")) == 1
    assert len(runs_of(db, "distill")) == 1
    prune = runs_of(db, "prune.l1_unstructured")
    assert len(prune) == 3 and set(prune["status"]) == {"finished"}
    parent = runs_of(db, "recipe")
    assert len(parent) == 1 and set(prune["parent_id"]) == {parent["run_id"].iloc[0]}
    distilled = next(p for p in points if p.extra["recipe_stage"] == "distil" and p.role == "student").artifact
    assert {p.input_checkpoint for p in points if p.family == "prune"} == {distilled}

    # another recipe asking for the same teacher and student, pruned at a new level, reuses both (from the CLI)
    path = tmp_path / "again.json"
    path.write_text(json.dumps(kd_then_prune(out, sparsities=(0.5, 0.7))))
    cli("run", str(path), "--db", db, "--json")
    rows = json.loads(capsys.readouterr().out)
    assert len(runs_of(db, "train")) == 1
    assert len(runs_of(db, "distill")) == 1
    assert len(runs_of(db, "prune.l1_unstructured")) == 4  # 0.5 reused, 0.7 new
    assert sorted((p["recipe_stage"], p["reused"]) for p in rows if p["stage"] != "baseline") == [
        ("distil", True), ("prune", False), ("prune", True)]


class CancelAfter(StoreContext):
    """The parent run's context, cancelled once `n` units have finished (as the app's Cancel button does)."""

    n = 2

    def progress(self, p):
        super().progress(p)
        if p.message.startswith(f"{self.n}/"):
            self.cancel.cancel()


def test_a_cancelled_recipe_keeps_finished_children_and_a_rerun_runs_only_the_missing_ones(tmp_path):
    db = str(tmp_path / "runs.duckdb")
    doc = {"name": "prune-ft", "dataset": "digits", "out": str(tmp_path / "ckpt"),
           "model": SMALL_TEACHER,
           "stages": [
               {"name": "prune", "task": "prune.l1_unstructured", "config": {"latency": False},
                "sweep": {"sparsities": [0.3, 0.6, 0.9]}},
               {"name": "ft", "task": "finetune",
                "config": {"latency": False, "finetune": {"mode": "last", "train": QUICK}}},
           ]}
    store = open_store(db)
    config = RecipeTask(recipe=doc)
    parent = create_run(store, RECIPE_TASK, config)
    with pytest.raises(Cancelled):
        execute_run(store, parent, RECIPE_TASK, config, CancelAfter(store, parent))  # model trained + 1 level
    assert store.get_run(parent)["status"] == "cancelled"
    first = runs_of(db)
    kept = set(first.loc[first["status"] == "finished", "run_id"])
    assert 2 <= len(kept) < 7  # the model and at least one level survive the cancel; not everything ran
    assert "cancelled" in set(first["status"])

    points = run_sync(RECIPE_TASK, config, db)
    after = runs_of(db)
    new = after[~after["run_id"].isin(first["run_id"]) & (after["kind"] != RECIPE_TASK)]
    assert len(new) == 7 - len(kept)  # only what had not finished ran again
    assert set(new["status"]) == {"finished"}
    reused = {p.extra["run_id"] for p in points if p.extra["reused"]}
    assert reused == kept
    # fine-tuning the classifier keeps the pruned weights at zero
    tuned = sorted((p.level, p.measurement.sparsity) for p in points if p.extra["recipe_stage"] == "ft")
    assert [level for level, _ in tuned] == [0.3, 0.6, 0.9]
    for level, sparsity in tuned:  # measured over every weight
        assert sparsity == pytest.approx(level, abs=0.02)


def test_every_example_is_a_valid_recipe():
    from pathlib import Path

    examples = sorted(Path(__file__).resolve().parents[1].glob("examples/*.yaml"))
    assert len(examples) >= 4
    for path in examples:
        assert load_recipe(path).units, path


def test_a_failed_child_leaves_its_siblings_results_and_skips_what_depends_on_it(tmp_path):
    db = str(tmp_path / "runs.duckdb")
    doc = {"name": "one-fails", "dataset": "digits", "out": str(tmp_path / "ckpt"), "model": SMALL_TEACHER,
           "stages": [
               {"name": "kd", "task": "distill", "teacher": "model", "from": "none",
                "config": {"student": "cnn_s", "width": 0.25, "latency": False, "train": QUICK},
                "sweep": {"train_subset": [64, 100_000]}},  # digits has fewer training images: that child fails
               {"name": "prune", "task": "prune.l1_unstructured", "config": {"latency": False, "sparsities": [0.5]}},
           ]}
    message = r"2 of 5 recipe units did not finish.*train_subset=100000: failed: train_subset must be"
    with pytest.raises(UserError, match=message):
        run_sync(RECIPE_TASK, RecipeTask(recipe=doc), db)
    assert list(runs_of(db, RECIPE_TASK)["status"]) == ["failed"]
    runs = runs_of(db).query("kind != @RECIPE_TASK")
    status = dict(zip(runs["name"], runs["status"], strict=True))
    assert status == {"one-fails/model": "finished", "one-fails/kd train_subset=64": "finished",
                      "one-fails/kd train_subset=100000": "failed", "one-fails/prune train_subset=64": "finished"}
    # the stage and swept values are the runs' own fields, not words of their names
    fields = sorted(zip(runs["stage"], runs["sweep"].map(json.loads), runs["status"], strict=True), key=str)
    assert fields == sorted([("model", {}, "finished"), ("kd", {"train_subset": 64}, "finished"),
                             ("kd", {"train_subset": 100_000}, "failed"),
                             ("prune", {"train_subset": 64}, "finished")], key=str)
    assert runs["unit_key"].str.fullmatch("[0-9a-f]{64}").all()


class HandsPointsBack(Executor):
    """Stands in for a remote executor: each unit runs with a plain RunContext (no store) and its points
    come back in the Outcome, for the driver to record."""

    def __init__(self):
        self.ended: list[Outcome] = []

    def submit(self, unit, config, run_id):
        handle = (run_id,)
        points = run_task(unit.task, config, RunContext())
        self.ended.append(Outcome(handle, run_id, "finished", points, [p.artifact for p in points if p.artifact],
                                  recorded=False))
        return handle

    def wait(self, handles, timeout=None):
        done = [o for o in self.ended if o.handle in handles]
        self.ended = [o for o in self.ended if o not in done]
        return done

    def cancel(self, handle, reason=None):
        pass

    def run_id(self, handle):
        return handle[0]


def test_an_executor_that_hands_points_back_has_them_recorded_by_the_driver(tmp_path):
    db = str(tmp_path / "runs.duckdb")
    doc = {"name": "remote", "dataset": "digits", "out": str(tmp_path / "ckpt"), "model": SMALL_TEACHER,
           "stages": [{"name": "check", "task": "measure", "from": "model", "config": {"latency": False}}]}
    store = open_store(db)
    parent = create_run(store, RECIPE_TASK, RecipeTask(recipe=doc))
    store.start_run(parent)
    results = run_recipe(Recipe.from_dict(doc), StoreContext(store, parent), HandsPointsBack())
    assert [r.status for r in results] == ["finished", "finished"]
    children = runs_of(db).query("parent_id == @parent")
    assert set(children["status"]) == {"finished"} and list(children["n_points"]) == [1, 1]
    assert children["started_at"].notna().all()
    # what the driver recorded is found again: a local run of the same recipe reuses both units
    again = create_run(store, RECIPE_TASK, RecipeTask(recipe=doc))
    store.start_run(again)
    executor = LocalExecutor(store)
    assert {r.status for r in run_recipe(Recipe.from_dict(doc), StoreContext(store, again), executor)} == {"reused"}
    executor.shutdown()


def test_a_finished_unit_is_found_by_its_recorded_key_not_by_its_name(tmp_path):
    db = str(tmp_path / "runs.duckdb")
    doc = {"name": "by-key", "dataset": "digits", "out": str(tmp_path / "ckpt"), "model": SMALL_TEACHER,
           "stages": [{"name": "seeds", "task": "train", "config": {"width": 0.25, "latency": False, "train": QUICK},
                       "sweep": {"train": {"seed": [0]}}}]}
    recipe = Recipe.from_dict(doc)
    (unit,) = recipe.units
    store = open_store(db)
    # a finished run whose name holds the unit's key, as names did before schema 5, but no unit_key: not the unit
    fake = store.create_run("train", {}, name=f"by-key/seeds train.seed=0 key={unit.key[:16]}", status="running")
    store.end_run(fake, "finished")
    assert finished_units(store, recipe.units) == {}

    run_sync(RECIPE_TASK, RecipeTask(recipe=doc), db)
    child = runs_of(db, "train").query("run_id != @fake").iloc[0]
    assert child["name"] == "by-key/seeds train.seed=0"  # readable, and no key in it
    assert (child["stage"], json.loads(child["sweep"]), child["unit_key"]) == ("seeds", {"train.seed": 0}, unit.key)
    store.rename_run(child["run_id"], "my seed-0 baseline")  # the user renames and tags it: still the same unit
    store.set_tags(child["run_id"], ["keep"])
    assert list(finished_units(store, recipe.units)) == [unit.key]
    points = run_sync(RECIPE_TASK, RecipeTask(recipe=doc), db)
    assert [p.extra["run_id"] for p in points] == [child["run_id"]] and points[0].extra["reused"]
    assert len(runs_of(db, "train")) == 2  # the fake and the one unit run: nothing trained again
