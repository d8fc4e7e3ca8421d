"""The Runs page: a selected run's details, re-run with the same config, and delete with its checkpoints."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.pages.conftest import APP


def runs_page(selected: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/runs.py")
    if selected:
        at.session_state["runs.selected"] = selected  # what selecting the run's row sets
    at.run()
    assert not at.exception, at.exception
    return at


def button(at, key):
    return next(b for b in at.button if b.key == key)


def run_of(db, kind: str) -> dict:
    from store import open_store

    store = open_store(db)
    return store.get_run(store.list_runs(kind=kind)["run_id"].iloc[0])


def test_the_table_lists_runs_with_status_text_and_no_emoji(db):
    at = runs_page()
    table = at.dataframe[0].value
    assert set(table["status"]) == {"finished"} and len(table) == 3
    assert all(s.isascii() for s in table["status"])


def test_a_selected_run_shows_config_lineage_points_and_log(db):
    prune = run_of(db, "prune.global_unstructured")
    at = runs_page(prune["run_id"])
    assert any(prune["name"] in h.value for h in at.subheader)
    lineage = " ".join(m.value for m in at.markdown)
    assert "train -> global_unstructured (sparsity 0.6)" in lineage
    points = next(d.value for d in at.dataframe if {"method", "accuracy"} <= set(d.value.columns))
    assert sorted(points["level"]) == [0.0, 0.3, 0.6, 0.9]


def test_rerun_queues_the_same_config(db):
    fake = run_of(db, "quantize.fake")
    at = runs_page(fake["run_id"])
    button(at, "runs.rerun").click().run()
    assert not at.exception and any("Queued run" in s.value for s in at.success), [e.value for e in at.error]
    from engine.run.jobs import get_runner

    runner = get_runner(db)
    assert runner.wait(timeout=120)
    runs = runner.store.list_runs(kind="quantize.fake")
    assert len(runs) == 2 and runs["config"].iloc[0] == runs["config"].iloc[1]


def test_delete_removes_the_run_and_its_own_checkpoints_but_keeps_ones_other_runs_use(db, lab_store, tmp_path):
    from engine.run.jobs import run_sync
    from store import open_store

    # a run of this test's own (the session's runs share their checkpoints with other tests)
    out = tmp_path / "pruned"
    run_sync("prune.global_unstructured", {"checkpoint": lab_store["checkpoint"], "sparsities": [0.0, 0.5],
                                           "latency": False, "out": str(out)}, db, name="to delete")
    store = open_store(db)
    run_id = store.list_runs()["run_id"].iloc[0]
    assert (out / "sparsity-0.500" / "meta.json").exists()
    at = runs_page(run_id)
    button(at, "runs.delete").click().run()
    assert not at.exception and any("Deleted run" in s.value for s in at.success), [e.value for e in at.error]
    assert run_id not in set(store.list_runs()["run_id"])
    assert store.points(run_id).empty
    # the sweep's own variant is gone (and its emptied output folder); the trained checkpoint it started from
    # is used by other runs: kept
    assert not out.exists()
    assert (Path(lab_store["checkpoint"]) / "meta.json").exists()


def test_delete_keeps_a_checkpoint_that_a_queued_run_is_about_to_read_and_says_why(db, tmp_path):
    from engine.run.jobs import run_sync
    from store import open_store

    a = tmp_path / "a"
    run_sync("train", {"dataset": "digits", "model": "cnn_s", "width": 0.25, "out": str(a), "latency": False,
                       "train": {"epochs": 1}}, db, name="model A")
    store = open_store(db)
    a_id = store.list_runs(kind="train", name_contains="model A")["run_id"].iloc[0]
    waiting = store.create_run("prune.global_unstructured", {"checkpoint": str(a), "sparsities": [0.5]},
                               name="prune A later", status="queued")
    at = runs_page(a_id)
    button(at, "runs.delete").click().run()
    assert not at.exception and any("Deleted run" in s.value for s in at.success), [e.value for e in at.error]
    assert a_id not in set(store.list_runs()["run_id"])
    assert (a / "meta.json").exists()  # the queued prune reads it
    left = " ".join(c.value for c in at.caption)
    assert str(a) in left and "queued" in left and "prune A later" in left and waiting in left, left


def test_the_selected_run_is_renamed_tagged_and_noted_and_the_table_filters_by_tag_and_name(db):
    from store import open_store

    fake = run_of(db, "quantize.fake")
    rid = fake["run_id"]
    at = runs_page(rid)
    next(t for t in at.text_input if t.key == f"runs.label_name.{rid}").set_value("4-bit check of the teacher")
    next(t for t in at.text_input if t.key == f"runs.label_tags.{rid}").set_value("quant, keep")
    next(t for t in at.text_area if t.key == f"runs.label_note.{rid}").set_value("compare with QAT")
    button(at, "runs.label_save").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run = open_store(db).get_run(rid)
    assert (run["name"], run["tags"], run["note"]) == ("4-bit check of the teacher", ["quant", "keep"],
                                                       "compare with QAT")
    assert any("4-bit check of the teacher" in h.value for h in at.subheader)
    table = at.dataframe[0].value
    assert list(table.loc[table["run_id"] == rid, "tags"].iloc[0]) == ["quant", "keep"]

    at.selectbox(key="runs.filter_tag").set_value("keep").run()
    assert list(at.dataframe[0].value["run_id"]) == [rid]
    at.selectbox(key="runs.filter_tag").set_value(None)
    at.text_input(key="runs.filter_name").set_value("PRUNE").run()
    assert list(at.dataframe[0].value["name"]) == ["prune cnn_s"]
    at.text_input(key="runs.filter_name").set_value("no such run").run()
    assert any("No run matches" in i.value for i in at.info)


def test_a_bad_tag_on_the_runs_page_is_named_and_changes_nothing(db):
    from store import open_store

    rid = run_of(db, "quantize.fake")["run_id"]
    at = runs_page(rid)
    next(t for t in at.text_input if t.key == f"runs.label_name.{rid}").set_value("renamed")
    next(t for t in at.text_input if t.key == f"runs.label_tags.{rid}").set_value("ok, " + "x" * 41)
    button(at, "runs.label_save").click().run()
    assert any("a tag has at most 40" in e.value for e in at.error), [e.value for e in at.error]
    assert open_store(db).get_run(rid)["name"] == "fake-quant cnn_s"
