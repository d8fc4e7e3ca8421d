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
