"""Studies end to end on digits: the --quick recipes (plus a test-only smaller budget) run through the recipe
runner, every table is built from the stored points of the recipe's child runs, and the notes judge them."""

from __future__ import annotations

import argparse
import functools
import json

import pandas as pd
import pytest

from engine.analysis.study_tables import PAPERS, TABLE3_ROWS, cite, kd_headline, kd_prune_notes
from engine.cli.studies import add_commands
from engine.core.context import RunContext
from engine.core.errors import ConfigError, UserError
from engine.run.recipes import Recipe
from engine.run.studies import QUICK, STUDIES, apply_overrides, run_study, study_recipe
from store import open_store

FAST = {"batch_size": 128, "epochs": 1}
SMALL_TEACHER = {"arch": "cnn_s", "width": 0.5, "train": FAST}
# on top of --quick: the smallest budgets that still give every table its shape
TINY = {
    "kd-prune": {"teacher": SMALL_TEACHER, "stages": {
        "distil": {"config": {"train_subset": 200, "train": FAST}, "sweep": {"method": ["scratch", "kd"]}},
        "prune-teacher": {"config": {"sparsities": [0.0, 0.5, 0.9]}},
        "prune-student": {"config": {"sparsities": [0.0, 0.5, 0.9]}}}},
    "kd-quant": {"teacher": SMALL_TEACHER, "stages": {
        "distil": {"config": {"train_subset": 200, "train": FAST}, "sweep": {"method": ["kd", "dkd"]}},
        "mixed": {"config": {"bits": [8, 4], "val_samples": 100, "save": False}},
        "teacher-mixed": {"config": {"bits": [8, 4], "val_samples": 100, "save": False}}}},
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One store and output root for both studies: the second finds the first's teacher and kd student."""
    root = tmp_path_factory.mktemp("studies")
    return str(root / "runs.duckdb"), {"out": str(root / "ckpt")}


class Progressions(RunContext):
    """An echo that keeps every progress report of the study run (not its units')."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list = []

    def progress(self, p) -> None:
        self.reports.append(p)

    def messages(self) -> list[str]:
        return [p.message for p in self.reports]


def cli(*argv: str):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_every_study_recipe_is_valid_full_and_quick_on_any_embedded_dataset():
    for name in STUDIES:
        for quick in (False, True):
            doc = study_recipe(name, dataset="digits", quick=quick)
            assert doc["dataset"] == "digits"
            assert Recipe.from_dict(doc).units


def test_quick_shrinks_the_budgets_it_names():
    full, quick = study_recipe("kd-prune"), study_recipe("kd-prune", quick=True)
    stage = {s["name"]: s for s in quick["stages"]}
    assert stage["prune-student"]["config"]["repeats"] == 1
    assert len(stage["prune-student"]["config"]["sparsities"]) < 10
    assert quick["teacher"]["train"]["epochs"] < full["teacher"]["train"]["epochs"]
    assert set(QUICK) == set(STUDIES)


def test_an_override_naming_a_missing_stage_is_an_error():
    with pytest.raises(ConfigError, match="no stage 'prune'.*distil"):
        apply_overrides(study_recipe("kd-prune"), {"stages": {"prune": {"config": {}}}})


def test_an_unknown_study_or_dataset_is_refused_by_name():
    with pytest.raises(UserError, match="unknown study 'kd-magic'.*kd-prune"):
        study_recipe("kd-magic")
    with pytest.raises(ConfigError, match="nodata"):
        study_recipe("kd-prune", dataset="nodata")


def test_kd_prune_quick_runs_two_recipes_and_builds_seed_002_tables_from_the_stored_points(shared):
    db, out = shared
    seen = Progressions()
    result = run_study("kd-prune", db, dataset="digits", quick=True, overrides={**TINY["kd-prune"], **out}, echo=seen)
    store = open_store(db)
    # issue #22: the progress was 100 % at "4/4 units" (the first recipe), then 83 % at "5/6"; now it is over
    # the whole study (both recipes' units planned up front), never goes back and ends at 1
    fractions = [p.fraction for p in seen.reports]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0, seen.messages()
    assert len({m.split(" units")[0].split("/")[1] for m in seen.messages()}) == 1, seen.messages()  # one total
    # one study run; its units are its children: the students first, then the pruning of the best one
    (study_run,) = result.run_ids
    assert store.get_run(study_run)["status"] == "finished"
    children = store.list_runs(parent=study_run)
    study_row = store.list_runs(kind="study").set_index("run_id").loc[study_run]
    assert study_row["n_points"] == children["n_points"].sum() > 0  # its units' points (it logs none itself)
    assert {"train", "distill", "prune.l1_unstructured"} <= set(children["kind"]) and set(children["status"]) == {"finished"}
    assert len(store.list_runs(kind="distill")) == 2  # the second recipe reused both students

    table1 = result.tables["Table 1: distillation"]
    assert list(table1["model"]) == ["Teacher", "Student scratch", "kd"]
    kd = next(u for u in result.units if u.stage == "distil" and u.method == "kd")
    stored_kd = next(p for p in store.run_points(kd.run_id) if p["role"] == "student")
    assert table1.set_index("model").loc["kd", "accuracy (%)"] == pytest.approx(100 * stored_kd["accuracy"])

    pruning = result.tables["Pruning: accuracy and remaining parameters by sparsity"]
    assert list(pruning["sparsity (%)"]) == [0.0, 50.0, 90.0]
    assert {"teacher acc (%)", "student scratch acc (%)", "student kd acc (%)"} <= set(pruning.columns)
    teacher_run = next(u for u in result.units if u.stage == "prune-teacher").run_id
    at_half = next(p for p in store.run_points(teacher_run) if p["level"] == 0.5)
    assert pruning.loc[1, "teacher params"] == at_half["params_nonzero"]

    table3 = result.tables["Table 3: before pruning and at the breakpoint"]
    assert list(table3.index) == TABLE3_ROWS
    assert {c.split(" / ")[0] for c in table3.columns} == {"student scratch", "student kd"}
    assert table3.loc["P(t) before pruning"].iloc[0] == next(
        p for p in store.run_points(teacher_run) if p["level"] == 0.0)["params_nonzero"]
    assert any(n.startswith(("KD beat scratch", "KD lost to scratch", "KD tied with scratch")) and "reproduced" in n
               for n in result.notes)
    assert result.notes[-1].startswith("--quick")


def test_kd_quant_quick_builds_the_model_by_bits_table_and_the_mixed_path(shared, capsys, monkeypatch):
    db, out = shared
    overrides = {**TINY["kd-quant"], **out}
    result = run_study("kd-quant", db, dataset="digits", quick=True, overrides=overrides)
    bits = result.tables["Accuracy (%) by weight width"]
    assert list(bits["model"]) == ["Teacher", "kd student", "dkd student"]
    assert list(bits.columns[1:]) == ["2-bit", "4-bit", "8-bit", "32-bit"]
    store = open_store(db)
    teacher_bits = next(u for u in result.units if u.stage == "teacher-bits")
    at2 = next(p for p in store.run_points(teacher_bits.run_id) if p["level"] == 2)
    assert bits.loc[0, "2-bit"] == pytest.approx(100 * at2["accuracy"])
    mixed = result.tables["Greedy mixed precision"]
    assert list(mixed["model"]) == ["Teacher", "kd student", "dkd student"]
    assert (mixed["average bits"] <= mixed["start bits"]).all()
    assert any("quantized teacher" in n for n in result.notes)

    # the same study again from the CLI reuses every unit and prints strict JSON with the same tables
    distilled = len(store.list_runs(kind="distill"))
    monkeypatch.setattr("engine.cli.studies.run_study", functools.partial(run_study, overrides=overrides))
    out = cli("study", "kd-quant", "--dataset", "digits", "--quick", "--db", db, "--json")
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(out))
    assert printed["tables"]["Accuracy (%) by weight width"][0]["2-bit"] == pytest.approx(bits.loc[0, "2-bit"])
    assert len(store.list_runs(kind="distill")) == distilled  # nothing ran twice
    assert len(store.list_runs(kind="train")) == 1  # one teacher for both studies (same settings, same key)


def test_study_list_names_every_study_and_its_recipe(capsys):
    rows = cli("study", "--list")
    assert [r["name"] for r in rows] == list(STUDIES)
    text = capsys.readouterr().out
    assert "examples/study-kd-prune.yaml" in text and "seed 002" in text


def test_the_kd_note_is_headed_by_what_was_found_not_by_the_hoped_for_result():
    table1 = pd.DataFrame({"model": ["Teacher", "Student scratch", "kd"], "accuracy (%)": [95.0, 90.0, 83.5]})
    notes = kd_prune_notes(table1, {}, pd.DataFrame(index=TABLE3_ROWS), "kd")
    assert notes[0].startswith("KD lost to scratch:") and "-6.5 points" in notes[0] and "not reproduced" in notes[0]
    assert kd_headline(2.0) == "KD beat scratch" and kd_headline(0.5) == "KD tied with scratch"


def test_notes_name_the_paper_not_the_seed_file_or_a_command():
    table1 = pd.DataFrame({"model": ["Teacher", "Student scratch", "kd", "simkd"],
                           "accuracy (%)": [95.0, 90.0, 93.0, 92.0]})
    table3 = pd.DataFrame({"student kd / kneedle": [None] * len(TABLE3_ROWS)}, index=TABLE3_ROWS)
    notes = kd_prune_notes(table1, {}, table3, "kd")
    text = " ".join(notes)
    assert "seed 00" not in text and "python -m" not in text
    assert "Malihi and Heidemann (2023)" in text
    assert cite("002", full=True).startswith("Malihi and Heidemann (2023), \u201cEfficient and Controllable Model")
    assert cite("000/001") == "Kieu and Sood (2023); Aghav, Mundra and Pandey"
    assert set(PAPERS) == {"000", "001", "002", "003"}
