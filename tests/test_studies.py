"""Studies end to end on digits: the --quick recipes (plus a test-only smaller budget) run through the recipe
runner, every table is built from the stored points of the recipe's child runs, and the notes judge them."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json

import pandas as pd
import pytest

from engine.analysis.study_tables import (
    COMPRESSION,
    LOW_DATA,
    NOT_COUNTED,
    NOT_DISTINGUISHABLE,
    NOT_REPRODUCED,
    PAPERS,
    REPRODUCED,
    TABLE3_ROWS,
    Comparison,
    Sample,
    StoredUnit,
    cite,
    compression_at_cost,
    judge,
    judge_every,
    kd_prune_tables,
    kd_prune_verdicts,
    kd_quant_verdicts,
    table3_gaps,
)
from engine.cli.studies import add_commands
from engine.core.context import RunContext
from engine.core.errors import ConfigError, UserError
from engine.model.data import catalog, load_dataset
from engine.model.hard_digits import LABEL_NOISE
from engine.run.recipes import Recipe
from engine.run.studies import (
    QUICK,
    QUICK_FINETUNE_SAMPLES,
    STUDIES,
    apply_overrides,
    run_study,
    study_recipe,
)
from store import open_store

FAST = {"batch_size": 128, "epochs": 1}
SMALL_TEACHER = {"arch": "cnn_s", "width": 0.5, "train": FAST}
# on top of --quick: the smallest budgets that still give every table its shape
TINY_COMPRESSION = {"config": {"width": 0.5, "train": FAST}, "sweep": {"method": ["scratch", "kd"], "train": {"seed": [0]}}}
TINY = {
    "kd-prune": {"teacher": SMALL_TEACHER, "stages": {
        "distil": {"config": {"train_subset": 200, "train": FAST},
                   "sweep": {"method": ["scratch", "kd"], "train": {"seed": [0, 1]}}},
        "distil-compression": TINY_COMPRESSION,
        "prune-teacher": {"config": {"sparsities": [0.0, 0.5, 0.9]}},
        "prune-student": {"config": {"sparsities": [0.0, 0.5, 0.9]}},
        "prune-compression": {"config": {"sparsities": [0.0, 0.5, 0.9]}}}},
    "kd-quant": {"teacher": SMALL_TEACHER, "stages": {
        "distil": {"config": {"train_subset": 200, "train": FAST},
                   "sweep": {"method": ["kd", "dkd"], "train": {"seed": [0, 1]}}},
        "distil-compression": {**TINY_COMPRESSION, "sweep": {"method": ["kd"], "train": {"seed": [0]}}},
        "mixed-compression": {"config": {"bits": [8, 4], "val_samples": 100, "save": False}},
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


def test_every_study_names_its_papers_by_authors_year_and_title():
    def one_finding(units, chance):
        return {}, ["a finding"]

    notes = {name: dataclasses.replace(study, tables=one_finding).results([], 0.1)[1] for name, study in STUDIES.items()}
    assert notes["kd-prune"][0].startswith("Reproducing Malihi and Heidemann (2023), \u201cEfficient and Controllable")
    assert "Kieu and Sood (2023)" in notes["compare-techniques"][0] and "Aghav" in notes["compare-techniques"][0]
    assert all(n[-1] == "a finding" and ".md" not in n[0] for n in notes.values())


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


def test_quick_keeps_every_stage_and_fine_tunes_pruning_on_a_subset():
    """--quick shrinks budgets, never the study's shape: every stage (both regimes) stays; pruning fine-tunes run on
    a fixed subset in quick only; kd-quant's low-data students are a subset of the full sweep's methods."""
    for name in STUDIES:
        full, quick = study_recipe(name), study_recipe(name, quick=True)
        assert [s["name"] for s in quick["stages"]] == [s["name"] for s in full["stages"]]
        for s_full, s_quick in zip(full["stages"], quick["stages"], strict=True):
            if "finetune" in s_full.get("config", {}):
                assert "samples" not in s_full["config"]["finetune"]  # the full study fine-tunes on every image
                assert s_quick["config"]["finetune"]["samples"] == QUICK_FINETUNE_SAMPLES
    full, quick = ({s["name"]: s for s in study_recipe("kd-quant", quick=q)["stages"]} for q in (False, True))
    low = quick["distil"]["sweep"]["method"]
    assert set(low) < set(full["distil"]["sweep"]["method"]) and len(quick["distil"]["sweep"]["train"]["seed"]) == 2


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
    # 2 low-data seeds x (scratch, kd) + 1 compression seed x (scratch, kd); the second recipe reused them all
    assert len(store.list_runs(kind="distill")) == 6
    assert len(store.list_runs(kind="prune.l1_unstructured")) == 4  # teacher, 2 low data, 1 compression

    table1 = titled(result, "Table 1, low data")
    assert "cnn_s x0.25, 200 training images, 1 epochs, seeds 0, 1" in next(t for t in result.tables if "low data" in t)
    assert list(table1["model"]) == ["Teacher", "Student scratch", "kd"]
    assert list(table1["seeds"]) == [1, 2, 2]
    kd = [u for u in result.units if u.stage == "distil" and u.method == "kd"]
    stored = [next(p for p in store.run_points(u.run_id) if p["role"] == "student")["accuracy"] for u in kd]
    assert table1.set_index("model").loc["kd", "accuracy (%)"] == pytest.approx(100 * sum(stored) / 2)
    assert list(titled(result, "Table 1, compression")["model"]) == ["Teacher", "Student scratch", "kd"]

    pruning = titled(result, "Pruning, low data")
    assert list(pruning["sparsity (%)"]) == [0.0, 50.0, 90.0]
    assert {"teacher acc (%)", "student scratch acc (%)", "student kd acc (%)"} <= set(pruning.columns)
    teacher_run = next(u for u in result.units if u.stage == "prune-teacher").run_id
    at_half = next(p for p in store.run_points(teacher_run) if p["level"] == 0.5)
    assert pruning.loc[1, "teacher params"] == at_half["params_nonzero"]
    assert "student scratch acc (%)" not in titled(result, "Pruning, compression").columns

    table3 = titled(result, "Table 3, low data")
    assert list(table3.index) == TABLE3_ROWS
    assert {c.split(" / ")[0] for c in table3.columns} == {"student scratch", "student kd"}
    assert table3.loc["P(t) before pruning"].iloc[0] == next(
        p for p in store.run_points(teacher_run) if p["level"] == 0.0)["params_nonzero"]
    for title, df in result.tables.items():  # an empty Table 3 cell has a note naming its column
        if title.startswith("Table 3"):
            for column in df.columns[df.isna().any()]:
                assert any(f"'{column}'" in n for n in result.notes), column
    cost = titled(result, "Accuracy cost, compression")
    assert list(cost["cost (points)"]) == [1.0, 2.0, 5.0]
    assert any(n.startswith("Low data: every KD method beats the student trained alone") for n in result.notes)
    assert any(n.startswith("Compression: every KD method beats") for n in result.notes)
    assert result.notes[-1].startswith("--quick")


def titled(result, prefix: str) -> pd.DataFrame:
    (df,) = [df for title, df in result.tables.items() if title.startswith(prefix)]
    return df


def test_kd_quant_quick_builds_the_model_by_bits_table_and_the_mixed_path(shared, capsys, monkeypatch):
    db, out = shared
    overrides = {**TINY["kd-quant"], **out}
    result = run_study("kd-quant", db, dataset="digits", quick=True, overrides=overrides)
    bits = titled(result, "Accuracy (%) by weight width, low data")
    assert list(bits["model"]) == ["Teacher", "kd student", "dkd student"]
    assert list(bits["seeds"]) == [1, 2, 2]
    assert list(bits.columns[2:]) == ["2-bit", "4-bit", "8-bit", "32-bit"]
    assert list(titled(result, "Accuracy (%) by weight width, compression")["model"]) == ["Teacher", "kd student"]
    store = open_store(db)
    teacher_bits = next(u for u in result.units if u.stage == "teacher-bits")
    at2 = next(p for p in store.run_points(teacher_bits.run_id) if p["level"] == 2)
    assert bits.loc[0, "2-bit"] == pytest.approx(100 * at2["accuracy"])
    mixed = titled(result, "Greedy mixed precision, low data")
    assert list(mixed["model"]) == ["Teacher", "kd student", "dkd student"]  # the first seed's students only
    assert (mixed["average bits"] <= mixed["start bits"]).all()
    assert any("quantized teacher is the most robust" in n for n in result.notes)
    assert any("8 bits stay within 1 point of float for every model" in n for n in result.notes)

    # the same study again from the CLI reuses every unit and prints strict JSON with the same tables
    distilled = len(store.list_runs(kind="distill"))
    monkeypatch.setattr("engine.cli.studies.run_study", functools.partial(run_study, overrides=overrides))
    out = cli("study", "kd-quant", "--dataset", "digits", "--quick", "--db", db, "--json")
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(out))
    low = next(t for t in printed["tables"] if t.startswith("Accuracy (%) by weight width, low data"))
    assert printed["tables"][low][0]["2-bit"] == pytest.approx(bits.loc[0, "2-bit"])
    assert len(store.list_runs(kind="distill")) == distilled  # nothing ran twice
    assert len(store.list_runs(kind="train")) == 1  # one teacher for both studies (same settings, same key)


def test_study_list_names_every_study_and_its_recipe(capsys):
    rows = cli("study", "--list")
    assert [r["name"] for r in rows] == list(STUDIES)
    text = capsys.readouterr().out
    assert "examples/study-kd-prune.yaml" in text and "seed 002" in text


# ---------------------------------------------------------------- verdicts on constructed points


def test_a_difference_beyond_the_spread_is_a_win_or_a_loss():
    kd, scratch = Sample.of(0.80, 0.82, 0.81), Sample.of(0.70, 0.72, 0.71)  # std 1 point each, 10 points apart
    assert Comparison("kd", "scratch", kd, scratch).outcome == "win" and judge(Comparison("kd", "scratch", kd, scratch)) \
        == REPRODUCED
    assert judge(Comparison("scratch", "kd", scratch, kd)) == NOT_REPRODUCED


def test_a_difference_inside_the_spread_is_not_distinguishable():
    a, b = Sample.of(0.80, 0.86, 0.83), Sample.of(0.79, 0.81, 0.80)  # 3 points apart, a's std 3 points
    c = Comparison("kd", "scratch", a, b)
    assert c.band == pytest.approx(0.03) and c.outcome == "tie" and judge(c) == NOT_DISTINGUISHABLE
    assert "within the spread of 3.0" in c.text()
    # two seeds that agree closely do not make a one-image difference a loss: the band is at least half a point
    close = Comparison("kd", "scratch", Sample.of(0.959, 0.9592), Sample.of(0.960, 0.9601))
    assert close.band == pytest.approx(0.005) and judge(close) == NOT_DISTINGUISHABLE
    # one run each: no spread, so a 1-point margin decides
    assert judge(Comparison("kd", "scratch", Sample.of(0.805), Sample.of(0.80))) == NOT_DISTINGUISHABLE
    assert judge(Comparison("kd", "scratch", Sample.of(0.83), Sample.of(0.80))) == REPRODUCED


def test_an_allowance_turns_a_small_loss_into_within_one_point():
    student, teacher = Sample.of(0.951, 0.953), Sample.of(0.96)  # 0.8 points below, spread 0.14
    assert judge(Comparison("student", "teacher", student, teacher)) == NOT_REPRODUCED
    assert judge(Comparison("student", "teacher", student, teacher, allowance=0.01)) == REPRODUCED


def test_a_comparison_of_two_models_near_chance_is_not_counted():
    c = Comparison("student at 90 %", "teacher", Sample.of(0.21), Sample.of(0.10), chance=0.1)
    assert c.outcome != "chance"  # 21 % is 11 points above chance: counted
    c = Comparison("student at 90 %", "teacher", Sample.of(0.13), Sample.of(0.10), chance=0.1)
    assert judge(c) == NOT_COUNTED and "chance" in c.text()


def test_an_every_method_finding_with_one_loser_is_not_reproduced():
    scratch = Sample.of(0.50, 0.52, 0.51)
    wins = [Comparison(m, "scratch", Sample.of(a, a + 0.01, a + 0.02), scratch) for m, a in (("kd", 0.7), ("dkd", 0.8))]
    loser = Comparison("sp", "scratch", Sample.of(0.42, 0.43, 0.44), scratch)
    tie = Comparison("at", "scratch", Sample.of(0.50, 0.53, 0.51), scratch)
    near_chance = Comparison("vid", "scratch", Sample.of(0.1), Sample.of(0.11))
    assert judge_every(wins) == REPRODUCED
    assert judge_every([*wins, loser]) == NOT_REPRODUCED
    assert judge_every([*wins, tie]) == NOT_DISTINGUISHABLE
    assert judge_every([*wins, near_chance]) == REPRODUCED  # the chance comparison is left out
    assert judge_every([near_chance]) == NOT_COUNTED


def _distil(stage: str, method: str, seed: int, acc: float, teacher: float = 0.95, width: float = 0.25) -> StoredUnit:
    params = {"student": "cnn_s", "width": width, "train_subset": 500, "train": {"epochs": 8, "seed": seed}}
    return StoredUnit(stage, "distill", {"method": method, "train.seed": seed}, f"{stage}-{method}-{seed}", [
        {"role": "teacher", "accuracy": teacher, "params_total": 400_000, "params": params},
        {"role": "student", "accuracy": acc, "params_total": 6_000, "params": params}])


def _low_data(accs: dict[str, list[float]]) -> list[StoredUnit]:
    return [_distil("distil", m, s, a) for m, runs in accs.items() for s, a in enumerate(runs)]


def test_every_method_note_names_the_loser_and_the_regime():
    units = _low_data({"scratch": [0.50, 0.52, 0.51], "kd": [0.70, 0.71, 0.72], "sp": [0.42, 0.43, 0.44]})
    (every,) = [v for v in kd_prune_verdicts(units, LOW_DATA) if v.finding.startswith("every KD method")]
    assert every.outcome == NOT_REPRODUCED and "lost: sp" in every.evidence
    note = every.note()
    assert note.startswith("Low data: every KD method beats the student trained alone (Malihi and Heidemann (2023)): "
                           "not reproduced.")
    tables, notes = kd_prune_tables(units, chance=0.1)
    (title,) = tables
    assert title == "Table 1, low data (cnn_s x0.25, 500 training images, 8 epochs, seeds 0, 1, 2)"
    assert list(tables[title]["vs scratch"]) == ["", "", "beats", "loses"]


def test_simkd_within_the_spread_of_the_best_other_method_is_not_distinguishable():
    units = _low_data({"scratch": [0.5, 0.5], "kd": [0.80, 0.84], "simkd": [0.82, 0.83]})
    (best,) = [v for v in kd_prune_verdicts(units, LOW_DATA) if v.finding.startswith("SimKD")]
    assert best.outcome == NOT_DISTINGUISHABLE


def _curve(accs: list[float], params: int = 100_000, std: float = 0.002) -> list[dict]:
    levels = [0.0, 0.3, 0.5, 0.7, 0.8, 0.9]
    return [{"level": lv, "level_name": "sparsity", "stage": "variant", "accuracy": a, "accuracy_std": std,
             "accuracy_runs": [a - std, a + std], "params_nonzero": int(params * (1 - lv))}
            for lv, a in zip(levels, accs, strict=True)]


def test_the_compression_regime_reads_how_far_the_teacher_compresses_at_each_cost():
    teacher = _curve([0.97, 0.97, 0.965, 0.95, 0.80, 0.30], params=400_000)
    student = _curve([0.965, 0.965, 0.962, 0.958, 0.94, 0.60], params=95_000)
    table = compression_at_cost({"teacher": teacher, "student kd": student}, acc_t=0.97)
    one, two, five = table.to_dict(orient="records")
    assert one["model"] == "student kd" and one["sparsity (%)"] == 50.0  # 96.2 % >= 97 - 1
    assert one["fewer than the teacher (%)"] == pytest.approx(100 * (400_000 - 47_500) / 400_000)
    assert two["sparsity (%)"] == 70.0 and five["sparsity (%)"] == 80.0


def test_the_breakpoint_finding_is_judged_with_the_one_point_allowance():
    units = [_distil("distil-compression", m, s, a, teacher=0.97, width=1.0)
             for m, runs in {"scratch": [0.95, 0.951], "kd": [0.965, 0.966]}.items() for s, a in enumerate(runs)]
    teacher = _curve([0.97, 0.97, 0.97, 0.968, 0.96, 0.30], params=400_000)  # its knee at 80 %
    student = _curve([0.966, 0.966, 0.965, 0.964, 0.70, 0.20], params=95_000)  # its knee at 70 %
    units += [StoredUnit("prune-teacher", "prune.l1_unstructured", {}, "pt", teacher),
              StoredUnit("prune-compression", "prune.l1_unstructured", {"method": "kd", "train.seed": 0}, "ps", student)]
    verdicts = kd_prune_verdicts(units, COMPRESSION)
    kneedle = next(v for v in verdicts if v.finding.startswith("kneedle: the pruned student at its breakpoint"))
    assert kneedle.outcome == REPRODUCED, kneedle.note()  # the knee at 70 %: 96.4 %, 0.6 points below, 1 allowed
    assert "fewer parameters than the teacher" in kneedle.evidence
    first = next(v for v in verdicts if v.finding.startswith("kneedle: the student's breakpoint comes earlier"))
    assert first.outcome == REPRODUCED and first.evidence.startswith("student at 70 % sparsity")
    above = next(v for v in verdicts if v.finding.startswith("the pruned student's curve stays above"))
    # 0.4 to 0.5 points below the teacher at three sparsities (ties: within half a point), further below at three
    assert above.outcome == NOT_DISTINGUISHABLE and "3 ties, 3 losses" in above.evidence, above.evidence


def test_an_empty_table3_cell_comes_with_the_detectors_reason():
    teacher = _curve([0.97] * 6, params=400_000)  # never falls: no breakpoint
    student = _curve([0.96, 0.96, 0.95, 0.90, 0.5, 0.2])
    gaps = table3_gaps({"teacher": teacher, "student kd": student})
    assert any("'student kd / kneedle'" in g and "the teacher's curve" in g for g in gaps)


def test_eight_bits_for_every_model_is_judged_on_every_model():
    def bits(stage: str, method: str, seed: int, at: dict[int, float]) -> StoredUnit:
        return StoredUnit(stage, "quantize.fake", {"method": method, "train.seed": seed}, f"{stage}{method}{seed}",
                          [{"level": b, "accuracy": a} for b, a in at.items()])
    units = [bits("teacher-bits", "", 0, {2: 0.6, 8: 0.97, 32: 0.97}),
             bits("bits", "kd", 0, {2: 0.3, 8: 0.90, 32: 0.905}), bits("bits", "kd", 1, {2: 0.32, 8: 0.91, 32: 0.91}),
             bits("bits", "dkd", 0, {2: 0.1, 8: 0.80, 32: 0.90}), bits("bits", "dkd", 1, {2: 0.11, 8: 0.81, 32: 0.91})]
    eight, robust = kd_quant_verdicts(units, "bits", "low data")
    assert eight.outcome == NOT_REPRODUCED and "dkd student at 8 bits" in eight.evidence
    assert robust.outcome == REPRODUCED


def test_notes_name_the_paper_not_the_seed_file_or_a_command():
    units = _low_data({"scratch": [0.90, 0.91], "kd": [0.93, 0.92], "simkd": [0.92, 0.925]})
    _, notes = kd_prune_tables(units, chance=0.1)
    text = " ".join(notes)
    assert "seed 00" not in text and "python -m" not in text
    assert "Malihi and Heidemann (2023)" in text
    assert cite("002", full=True).startswith("Malihi and Heidemann (2023), \u201cEfficient and Controllable Model")
    assert cite("000/001") == "Kieu and Sood (2023); Aghav, Mundra and Pandey"
    assert set(PAPERS) == {"000", "001", "002", "003"}


def test_mnist5k_hard_is_embedded_distorted_and_noisy_in_train_only():
    assert {"name": "mnist5k-hard", "availability": "embedded"}.items() <= next(
        r for r in catalog() if r["name"] == "mnist5k-hard").items()
    hard, plain = load_dataset("mnist5k-hard"), load_dataset("mnist5k")
    assert [len(hard.train), len(hard.val), len(hard.test)] == [len(plain.train), len(plain.val), len(plain.test)]
    assert hard.test.y.tolist() == plain.test.y.tolist() and hard.val.y.tolist() == plain.val.y.tolist()
    flipped = (hard.train.y != plain.train.y).float().mean().item()
    assert flipped == pytest.approx(LABEL_NOISE, abs=0.005)
    assert (hard.test.x.float() - plain.test.x.float()).abs().mean() > 20  # distorted and cluttered, not a copy


def test_simkd_paper_projector_is_measured_with_its_head(tmp_path):
    from engine.core.context import RunContext as Context
    from engine.methods.distill.task import DistillTask, distill_task
    from engine.methods.tasks import get_task
    from engine.methods.train import TrainTask

    get_task("train").run(TrainTask.from_dict({"model": "cnn_s", "width": 0.5, "dataset": "digits", "latency": False,
                                               "out": str(tmp_path / "t"), "train": FAST}), Context())
    common = {"teacher": str(tmp_path / "t"), "method": "simkd", "width": 0.25, "train_subset": 300, "latency": False,
              "train": FAST}
    points = {proj: distill_task(DistillTask.from_dict({**common, "settings": {"projector": proj}, "save": False}),
                                 Context()) for proj in ("linear", "conv")}
    linear, conv = (points[p][1].measurement.params_total for p in ("linear", "conv"))
    # the linear projector folds into the student's own classifier; the paper's conv projector and the teacher's
    # head travel with the student
    assert conv > linear
    assert 0.0 <= points["conv"][1].accuracy <= 1.0


def test_eight_bits_within_one_point_is_judged_on_each_runs_own_float_copy():
    def bits(stage: str, method: str, seed: int, at: dict[int, float]) -> StoredUnit:
        return StoredUnit(stage, "quantize.fake", {"method": method, "train.seed": seed}, f"{stage}{method}{seed}",
                          [{"level": b, "accuracy": a} for b, a in at.items()])
    # the teacher's one run loses nothing at 8 bits; the kd seeds differ by 10 points but each loses 0.2 or less
    units = [bits("teacher-bits", "", 0, {2: 0.6, 8: 0.97, 32: 0.97}),
             bits("bits", "kd", 0, {2: 0.3, 8: 0.798, 32: 0.80}), bits("bits", "kd", 1, {2: 0.32, 8: 0.90, 32: 0.90})]
    eight, _ = kd_quant_verdicts(units, "bits", "low data")
    assert eight.outcome == REPRODUCED and "inside the 1-point allowance" in eight.evidence
    units[0] = bits("teacher-bits", "", 0, {2: 0.6, 8: 0.955, 32: 0.97})  # 1.5 points lost: outside it
    assert kd_quant_verdicts(units, "bits", "low data")[0].outcome == NOT_REPRODUCED
