"""Home: counts and recent runs from the store, an empty state that guides, and the one-click demo."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.pages.conftest import APP


def test_home_shows_the_store_counts_and_recent_runs(db):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    counts = {m.label: m.value for m in at.metric}
    assert counts["finished"] == "3" and counts["failed"] == "0"
    assert len(at.dataframe[0].value) == 3


def test_an_empty_store_guides_to_the_demo_which_queues_a_study(tmp_path, monkeypatch):
    db = str(tmp_path / "empty.duckdb")
    monkeypatch.setenv("COMPRESSION_LAB_DB", db)
    monkeypatch.setenv("COMPRESSION_LAB_STORE_DIR", str(tmp_path))
    from engine.run.jobs import get_runner, shutdown_all

    try:
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert not at.exception and any("No runs yet" in i.value for i in at.info)
        next(b for b in at.button if b.key == "home.demo").click().run()
        assert not at.exception, at.exception
        assert any("Queued the demo" in s.value for s in at.success), [e.value for e in at.error]
        runner = get_runner(db)
        (run_id,) = runner.active()
        run = runner.store.get_run(run_id)
        assert run["kind"] == "study" and (run["config"]["study"], run["config"]["dataset"]) == ("kd-prune", "mnist5k")
        runner.cancel(run_id)  # minutes of work: the test checks the wiring
        assert runner.wait(timeout=120)
    finally:
        shutdown_all("test finished")
