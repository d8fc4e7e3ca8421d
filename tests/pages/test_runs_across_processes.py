"""The app and a terminal share one run store: each sees the runs the other records, live."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")

# A terminal's process: one finished run with a point, and one left running at half way until STOP exists.
RECORD_RUNS = """
import os, sys, time
from store import Store
db, stop = sys.argv[1], sys.argv[2]
store = Store(db)
done = store.create_run("train", {"model": "cnn_s"}, name="terminal finished")
store.start_run(done)
store.add_point(done, {"accuracy": 0.75, "method": "train", "params": {}})
store.end_run(done, "finished")
live = store.create_run("train", {"model": "cnn_s"}, name="terminal running")
store.start_run(live)
store.set_progress(live, 0.5, "epoch 1/2")
store.flush()
print("recorded", done, live, flush=True)
while not os.path.exists(stop):
    time.sleep(0.05)
store.end_run(live, "finished")
store.close()
"""


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "lab.duckdb"
    monkeypatch.setenv("COMPRESSION_LAB_DB", str(path))
    yield str(path)
    from engine.run.jobs import shutdown_all

    shutdown_all("test finished")


def test_the_runs_page_shows_runs_a_terminal_recorded_with_live_progress(db, tmp_path):
    stop = tmp_path / "stop"
    terminal = subprocess.Popen([sys.executable, "-c", RECORD_RUNS, db, str(stop)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        line = terminal.stdout.readline()
        assert line.startswith("recorded"), line + terminal.stdout.read()
        done, live = line.split()[1:]
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("pages/runs.py").run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        table = at.dataframe[0].value.set_index("run_id")
        assert "finished" in table.loc[done, "status"] and table.loc[done, "n_points"] == 1
        assert "running" in table.loc[live, "status"] and table.loc[live, "progress"] == 0.5
        assert table.loc[live, "message"] == "epoch 1/2"
        at.session_state["runs.selected"] = done  # what selecting its row in the table sets
        at.run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert points_table(at)["accuracy"].iloc[0] == 0.75
    finally:
        stop.touch()
        terminal.wait(60)


def test_a_terminal_lists_and_shows_a_run_the_app_is_running(db):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/launch.py").run()
    at.selectbox(key="launch.form.train.dataset").set_value("digits")
    at.selectbox(key="launch.form.train.model").set_value("cnn_s")
    at.number_input(key="launch.form.train.train.epochs").set_value(200)
    at.button(key="launch.form.train.submit").click().run()
    assert not at.exception and any("Queued 1 run" in s.value for s in at.success), [e.value for e in at.error]

    from engine.run.jobs import get_runner

    runner = get_runner(db)
    (run_id,) = runner.active()
    deadline = time.monotonic() + 120
    while runner.store.get_run(run_id)["progress"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    try:
        out = subprocess.run([sys.executable, "-m", "engine", "runs", "--db", db, "--json"], capture_output=True,
                             text=True, timeout=120, cwd=REPO)
        assert out.returncode == 0, out.stderr
        (listed,) = json.loads(out.stdout)
        assert listed["run_id"] == run_id and listed["status"] == "running" and listed["progress"] > 0
        out = subprocess.run([sys.executable, "-m", "engine", "show", run_id[:6], "--db", db, "--json"],
                             capture_output=True, text=True, timeout=120, cwd=REPO)
        assert out.returncode == 0, out.stderr
        shown = json.loads(out.stdout)
        assert shown["run"]["status"] == "running" and any(m["key"] == "batch_loss" for m in shown["metrics"])
    finally:
        runner.cancel(run_id)
        assert runner.wait(run_id, timeout=60)
    assert runner.store.get_run(run_id)["status"] == "cancelled"


def points_table(at):
    """The selected run's points table on the Runs page."""
    return next(d.value for d in at.dataframe if {"method", "accuracy", "stage"} <= set(d.value.columns))
