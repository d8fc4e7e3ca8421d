"""The Launch page: generated forms for every method, inline validation, uploads, studies and recipes."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.pages.conftest import APP


def launch(db) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/launch.py").run()
    assert not at.exception, at.exception
    return at


def by_key(widgets, key):
    return next(w for w in widgets if w.key == key)


def finished(db, timeout=180) -> list:
    from engine.run.jobs import get_runner

    runner = get_runner(db)
    assert runner.wait(timeout=timeout)
    return runner.store


@pytest.mark.parametrize("family", ["train", "measure", "quantize", "prune", "distill", "finetune"])
def test_every_family_draws_its_generated_form_without_an_error(db, family):
    at = launch(db)
    by_key(at.selectbox, "launch.family").set_value(family).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_every_method_of_every_family_has_a_form(db):
    from engine.run.launch import family_names, methods_of

    at = launch(db)
    for family in family_names():
        if family == "distill":
            continue
        by_key(at.selectbox, "launch.family").set_value(family).run()
        for choice in methods_of(family):
            key = f"launch.method.{family}"
            by_key(at.selectbox, key).set_value(choice.method).run()
            assert not at.exception, (family, choice.method, at.exception)
            assert any(b.key == f"launch.form.{choice.task}.submit" for b in at.button), choice.method


def test_launching_a_prune_sweep_from_a_finished_runs_checkpoint_queues_a_job_that_finishes(db, lab_store):
    at = launch(db)
    by_key(at.selectbox, "launch.family").set_value("prune").run()
    by_key(at.selectbox, "launch.method.prune").set_value("global_unstructured").run()
    picker = by_key(at.selectbox, "launch.prune.ckpt.run")
    assert "cnn_s on digits · trained · 98.9% · cnn_s" in picker.options  # every saved float checkpoint is offered
    picker.set_value(lab_store["checkpoint"]).run()
    form = "launch.form.prune.global_unstructured"
    by_key(at.text_input, f"{form}.sparsities").set_value("0,0.5").run()
    by_key(at.checkbox, f"{form}.latency").uncheck().run()
    by_key(at.button, f"{form}.submit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Queued 1 run" in s.value for s in at.success)
    store = finished(db)
    run = store.list_runs(kind="prune.global_unstructured").iloc[0]
    assert run["status"] == "finished"
    assert sorted(p["level"] for p in store.run_points(run["run_id"])) == [0.0, 0.5]


def test_a_bad_value_is_shown_next_to_its_field_and_nothing_is_queued(db):
    at = launch(db)
    by_key(at.selectbox, "launch.family").set_value("quantize").run()
    by_key(at.selectbox, "launch.method.quantize").set_value("fake").run()
    form = "launch.form.quantize.fake"
    by_key(at.text_input, f"{form}.bits").set_value("4,lots").run()
    by_key(at.button, f"{form}.submit").click().run()
    assert not at.exception
    assert any("bits" in e.value and "lots" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.success
    by_key(at.text_input, f"{form}.bits").set_value("4,40").run()
    by_key(at.button, f"{form}.submit").click().run()
    assert any("bits" in e.value for e in at.error), [e.value for e in at.error]  # out of range: a config error


def test_a_bad_recipe_shows_its_message(db):
    at = launch(db)
    by_key(at.text_area, "launch.recipe.text").set_value("name: x\ndataset: digits\nmodel: cnn_s\nstages: [{name: a, task: nosuchtask}]").run()
    by_key(at.button, "launch.recipe.submit").click().run()
    assert not at.exception
    assert any("The recipe is not valid" in e.value and "nosuchtask" in e.value for e in at.error), \
        [e.value for e in at.error]
    by_key(at.text_area, "launch.recipe.text").set_value("stages: [unclosed").run()
    by_key(at.button, "launch.recipe.submit").click().run()
    assert any("not valid YAML" in e.value for e in at.error)


def test_a_pasted_recipe_whose_aliases_expand_past_the_budget_is_refused(db):
    from tests.test_hostile_inputs import laughs

    at = launch(db)
    by_key(at.text_area, "launch.recipe.text").set_value(laughs(9)).run()
    by_key(at.button, "launch.recipe.submit").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("The recipe is not valid" in e and "aliases" in e and len(e) < 500 for e in errors), errors


def test_a_study_preset_queues_a_study_run(db):
    at = launch(db)
    by_key(at.selectbox, "launch.study.name").set_value("compare-techniques").run()
    by_key(at.selectbox, "launch.study.dataset").set_value("digits").run()
    by_key(at.button, "launch.study.submit").click().run()
    assert not at.exception and any("Queued 1 run" in s.value for s in at.success)
    from engine.run.jobs import get_runner

    runner = get_runner(db)
    (run_id,) = runner.active()
    assert runner.store.get_run(run_id)["kind"] == "study"
    runner.cancel(run_id)  # a study is minutes of work: the test checks the wiring only
    assert runner.wait(timeout=120)


def test_the_run_name_and_tags_typed_on_launch_are_the_queued_runs(db):
    from engine.run.jobs import get_runner

    at = launch(db)
    form = "launch.form.train"
    by_key(at.selectbox, f"{form}.dataset").set_value("digits")
    by_key(at.selectbox, f"{form}.model").set_value("cnn_s")
    by_key(at.text_input, f"{form}.run_tags").set_value("a,,b")
    by_key(at.button, f"{form}.submit").click().run()
    assert any("empty tag between commas" in e.value for e in at.error), [e.value for e in at.error]
    runner = get_runner(db)
    assert not runner.active()  # a bad tag queues nothing

    by_key(at.text_input, f"{form}.run_name").set_value("cnn_s from the digits folder")
    by_key(at.text_input, f"{form}.run_tags").set_value("baseline, digits")
    by_key(at.button, f"{form}.submit").click().run()
    assert not at.exception and any("Queued 1 run" in s.value for s in at.success), [e.value for e in at.error]
    (run_id,) = runner.active()
    run = runner.store.get_run(run_id)
    assert (run["kind"], run["name"], run["tags"]) == ("train", "cnn_s from the digits folder", ["baseline", "digits"])
    runner.cancel(run_id)  # the test checks what reached the runner, not the training
    assert runner.wait(timeout=120)
