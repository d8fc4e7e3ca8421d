"""The Runs page: a selected run's details, re-run with the same config, and delete with its checkpoints."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.core.config import Config
from engine.core.progress import Progress
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


def table_key(at) -> str:
    return at.dataframe[0].key


def select_row(at, index: int) -> AppTest:
    """What clicking a row of the runs table does (its selection state), then the rerun it triggers."""
    at.session_state[table_key(at)] = {"selection": {"rows": [index], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    return at


def test_after_a_delete_nothing_is_selected_or_armed_and_the_message_stays(db):
    # issue #22: after "Delete for good" the neighbouring row became selected with its Delete popover open, and
    # the "Deleted" message was gone: one more click deleted the wrong run
    at = runs_page()
    table = at.dataframe[0].value
    first, neighbour = table["run_id"].iloc[0], table["run_id"].iloc[1]
    select_row(at, 0)
    assert at.session_state["runs.selected"] == first
    at.checkbox(key="runs.delete_files").set_value(False)  # the session's checkpoints are shared by other tests
    button(at, "runs.delete").click().run()
    assert not at.exception, at.exception
    for _ in range(2):  # the rerun after the delete, and the next one
        assert any(f"Deleted run {table['name'].iloc[0]}" in s.value for s in at.success), [s.value for s in at.success]
        assert "runs.selected" not in at.session_state or not at.session_state["runs.selected"]
        assert not [b for b in at.button if b.key == "runs.delete"]  # no armed confirmation
        assert "runs.delete_files" not in at.session_state
        assert list(at.dataframe[0].value["run_id"]) == [r for r in table["run_id"] if r != first]
        assert neighbour not in {s.value for s in at.subheader}
        at.run()


def test_a_run_added_on_top_does_not_move_the_selection_to_another_run(db):
    at = runs_page()
    chosen = at.dataframe[0].value["run_id"].iloc[0]
    select_row(at, 0)
    from store import open_store

    open_store(db).create_run("quantize.fake", {}, name="newest", status="queued")  # lands on row 0
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["runs.selected"] == chosen
    assert at.dataframe[0].value["name"].iloc[0] == "newest"


@dataclass
class SlowConfig(Config):
    steps: int = 200
    step_s: float = 0.2


def slow_task(cfg: SlowConfig, ctx) -> list:
    for i in range(cfg.steps):
        ctx.cancel.raise_if_cancelled()
        time.sleep(cfg.step_s)
        ctx.progress(Progress((i + 1) / cfg.steps, f"step {i + 1}"))
        ctx.log_metrics({"val_accuracy": i / cfg.steps}, step=i + 1)
    return []


def slow_runner(db):
    from engine.methods.tasks import TASKS, register_task
    from engine.run.jobs import get_runner

    if "test_slow" not in TASKS:
        register_task("test_slow", SlowConfig, "sleeps; for the runs page tests")(slow_task)
    return get_runner(db)


def wait_until(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_cancel_says_cancelling_at_once_in_the_table_and_the_active_list(db):
    # issue #22: on a busy machine the run stayed "running" for 11 s after Cancel
    runner = slow_runner(db)
    run_id = runner.submit("test_slow", {"steps": 200, "step_s": 1.0})
    wait_until(lambda: runner.active().get(run_id) == "running")
    at = runs_page()
    button(at, "runs.cancel").click().run()
    assert not at.exception, at.exception
    row = at.dataframe[0].value.set_index("run_id").loc[run_id]
    assert (row["status"], row["message"]) == ("cancelling", "cancelling…"), row
    assert "cancelling…" in at.selectbox(key="runs.active").format_func(run_id)
    assert button(at, "runs.cancel").disabled
    assert any("Cancelling" in t.value for t in at.toast)
    assert runner.wait(run_id, timeout=30)
    at.run()
    assert at.dataframe[0].value.set_index("run_id").loc[run_id, "status"] == "cancelled"


def test_a_running_runs_details_refresh_and_a_finished_runs_do_not(db, monkeypatch):
    # issue #22: the selected run's curves, progress and points were drawn once and never updated
    import streamlit

    made = []
    real = streamlit.fragment

    def spy(func=None, *, run_every=None, **kw):
        def wrap(f):
            made.append((f.__name__, run_every))
            return real(f, run_every=run_every, **kw)
        return wrap(func) if func is not None else wrap

    monkeypatch.setattr(streamlit, "fragment", spy)
    runner = slow_runner(db)
    run_id = runner.submit("test_slow", {"steps": 200, "step_s": 0.2})
    wait_until(lambda: not runner.store.metric_history(run_id).empty)
    at = runs_page(run_id)
    assert ("run_details", 2) in made, made
    assert any(p.proto.text.startswith("step") for p in at.get("progress")) or at.get("progress")
    before = len(at.session_state["runs.curves"]) if "runs.curves" in at.session_state else None
    assert before is not None  # the curves of the epochs logged so far
    runner.cancel(run_id)
    assert runner.wait(run_id, timeout=30)
    made.clear()
    at.run()
    assert not at.exception, at.exception
    assert ("run_details", None) in made, made  # ended: drawn once, static
    done = run_of(db, "quantize.fake")
    made.clear()
    runs_page(done["run_id"])
    assert ("run_details", None) in made and ("run_details", 2) not in made


def test_a_run_without_a_seed_says_nothing_about_a_seed(db):
    """Issue #22 item 14: a What-if run's header said "seed None"."""
    from store import open_store

    store = open_store(db)
    run_id = store.create_run("whatif", {}, name="a what-if", status="running")  # What-if runs take no seed
    store.end_run(run_id, "finished")
    store.flush()
    at = runs_page(run_id)
    header = next(m.value for m in at.markdown if "run `" in m.value)
    assert "None" not in header and "seed" not in header and "whatif" in header
    seeded = run_of(db, "prune.global_unstructured")
    at = runs_page(seeded["run_id"])
    assert f"seed {seeded['seed']}" in next(m.value for m in at.markdown if "run `" in m.value)


def test_chosen_points_are_re_timed_as_one_run_and_keep_their_history(db, monkeypatch):
    """Issue #23 item 3: choose points on Runs, re-time them now as one background run; the points then show the
    new timing, and a point timed twice lists both in its latency history."""
    import engine.methods.remeasure
    from engine.deploy.timing import Policy
    from engine.run.jobs import get_runner

    BRIEF = Policy(rounds=3, block_seconds=0.01, budget_s=1.0, bootstrap=50)  # noqa: N806
    from store import open_store

    real = engine.methods.remeasure.measure_latency
    monkeypatch.setattr(engine.methods.remeasure, "measure_latency",  # the protocol, briefly (wiring, not speed)
                        lambda runner, x, reference=None: real(runner, x, reference=reference, policy=BRIEF))
    prune = run_of(db, "prune.global_unstructured")
    at = runs_page(prune["run_id"])
    assert at.multiselect(key="runs.retime_points").value == []  # nothing was timed (latency off): none chosen
    store = open_store(db)
    ids = [int(i) for i in store.points(prune["run_id"], expand=False)["point_id"]][-2:]
    for _ in range(2):  # twice, so the last point has a history of two timings
        at.multiselect(key="runs.retime_points").set_value(ids).run()
        button(at, "runs.points.retime").click().run()
        assert not at.exception, at.exception
        assert any("Re-timing 2 point(s)" in s.value for s in at.success)
        assert get_runner(db).wait(timeout=120)
    runs = store.list_runs(kind="remeasure")
    assert len(runs) == 2 and set(runs["status"]) == {"finished"}
    points = store.points(prune["run_id"], expand=False).set_index("point_id")
    assert points.loc[ids, "latency_ms_b1"].notna().all() and points.loc[ids, "speedup_b1"].notna().all()
    at.run()
    assert any(e.label.startswith(f"Latency history of point #{ids[-1]} (2 timings)") for e in at.expander)
