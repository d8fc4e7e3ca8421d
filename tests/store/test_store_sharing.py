"""Several processes use one store file at once: each holds it only for a read or a group commit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.cli.main import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A writer process: one run, ROWS metric rows (with progress) and POINTS points, then finished.
# It starts logging when GO exists, and with ROWS = 0 logs until STOP exists.
LOG_RUN = """
import os, sys, time
from store import Store
db, tag, rows, points, go, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
store = Store(db)
run_id = store.create_run("log", {"tag": tag}, name=tag)
store.start_run(run_id)
print("ready", run_id, flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
step = 0
while (step < rows) if rows else not os.path.exists(stop):
    store.log_metrics(run_id, {"loss": float(step)}, step=step)
    store.set_progress(run_id, step / max(rows, 1))
    if rows and step % (rows // points) == 0:
        store.add_point(run_id, {"accuracy": step / rows, "method": tag, "params": {"step": step}})
    if not rows:
        if step == 20:
            store.flush()
            print("logged", flush=True)
        time.sleep(0.005)
    step += 1
store.end_run(run_id, "finished")
store.close()
print(f"done {run_id} rows={step} dropped={store.writer.dropped}", flush=True)
"""


def start_writer(background, db: str, tag: str, rows: int, points: int, tmp_path):
    return background("-c", LOG_RUN, db, tag, str(rows), str(points), str(tmp_path / "go"),
                      str(tmp_path / f"stop-{tag}"), cwd=REPO)


def stored_statuses(db: str) -> dict[str, tuple[str, str | None]]:
    """{run_id: (status, message)} as recorded in the file, not as a reader's view shows them."""
    from store import reading

    with reading(db) as store:
        rows = store._read(lambda cur: cur.execute("SELECT run_id, status, message FROM runs").fetchall())
    return {r[0]: (r[1], r[2]) for r in rows}


def test_two_processes_log_a_thousand_rows_and_a_hundred_points_each_into_one_file(tmp_path, background):
    db = str(tmp_path / "lab.duckdb")
    writers = [start_writer(background, db, tag, 1000, 100, tmp_path) for tag in ("a", "b")]
    for w in writers:
        w.wait_for("ready")
    (tmp_path / "go").touch()
    for w in writers:
        w.wait_for("dropped=")
        assert w.proc.wait(60) == 0 and "dropped=0" in w.output.decode()

    from store import reading

    with reading(db) as store:
        runs = store.list_runs()
        assert sorted(runs.name) == ["a", "b"] and set(runs.status) == {"finished"}
        assert set(runs.pid) == {w.proc.pid for w in writers}
        spans = []
        for run_id in runs.run_id:
            history = store.metric_history(run_id)
            assert list(history.step) == list(range(1000)) and list(history.value) == [float(s) for s in range(1000)]
            assert len(store.run_points(run_id)) == 100
            spans.append((history.time.min(), history.time.max()))
        (a0, a1), (b0, b1) = spans
        assert a0 < b1 and b0 < a1  # the two processes wrote at the same time, not one after the other


def test_sigkill_of_one_of_two_writers_interrupts_its_run_only(tmp_path, background):
    db = str(tmp_path / "lab.duckdb")
    killed, kept = (start_writer(background, db, tag, 0, 0, tmp_path) for tag in ("killed", "kept"))
    killed.wait_for("ready")
    kept.wait_for("ready")
    (tmp_path / "go").touch()
    killed.wait_for("logged")
    kept.wait_for("logged")
    killed_id = killed.output.decode().split("ready ")[1].split()[0]
    kept_id = kept.output.decode().split("ready ")[1].split()[0]
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait(30)

    # the surviving writer's next heartbeat commit records it, with no other process opening the file
    deadline = time.monotonic() + 30
    while stored_statuses(db)[killed_id][0] != "interrupted":
        assert time.monotonic() < deadline, stored_statuses(db)
        time.sleep(0.5)
    status, message = stored_statuses(db)[killed_id]
    assert f"its process {killed.proc.pid} ended without finishing it" in message
    assert stored_statuses(db)[kept_id][0] == "running"

    (tmp_path / "stop-kept").touch()
    kept.wait_for("dropped=0")
    logged = int(kept.output.decode().split("rows=")[1].split()[0])

    from store import reading

    with reading(db) as store:
        runs = store.list_runs().set_index("run_id")
        assert runs.loc[kept_id, "status"] == "finished" and runs.loc[killed_id, "status"] == "interrupted"
        assert len(store.metric_history(kept_id)) == logged
        assert len(store.metric_history(killed_id)) >= 21  # what it committed before the kill survives it
        assert any("marked interrupted by process" in m for m in store.events(killed_id).message)


def test_runs_lists_a_live_training_and_a_second_training_finishes_meanwhile(tmp_path, background, capsys):
    db = str(tmp_path / "lab.duckdb")
    first = background("-m", "engine", "train", "--dataset", "digits", "--model", "cnn_s", "--epochs", "500",
                       "--no-latency", "--out", str(tmp_path / "ck1"), "--db", db, cwd=REPO)
    first.wait_for("epoch 2/500")
    deadline = time.monotonic() + 30
    while True:
        assert main(["runs", "--db", db, "--json"]) == 0
        (listed,) = json.loads(capsys.readouterr().out)
        if listed["progress"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert listed["status"] == "running" and 0 < listed["progress"] < 0.1 and listed["pid"] == first.proc.pid
    assert "epoch" in listed["message"]

    second = subprocess.run(
        [sys.executable, "-m", "engine", "train", "--dataset", "digits", "--model", "cnn_s", "--epochs", "1",
         "--no-latency", "--out", str(tmp_path / "ck2"), "--json", "--db", db],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert second.returncode == 0, second.stderr
    assert main(["show", listed["run_id"], "--db", db]) == 0
    assert "running" in capsys.readouterr().out

    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(60) == 128 + signal.SIGTERM
    assert main(["runs", "--db", db, "--json"]) == 0
    runs = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert len(runs) == 2 and runs.pop(listed["run_id"])["status"] == "interrupted"
    (done,) = runs.values()
    assert done["status"] == "finished" and done["n_points"] == 1 and done["pid"] not in (first.proc.pid, os.getpid())


def test_a_live_run_keeps_a_heartbeat_without_logging_anything(db_path, monkeypatch):
    import store.store as store_module
    from store import Store

    monkeypatch.setattr(store_module, "HEARTBEAT_S", 0.2)
    with Store(db_path) as store:
        run_id = store.create_run("train", {})
        store.start_run(run_id)
        first = store.get_run(run_id)["heartbeat_at"]
        time.sleep(1.0)
        assert store.get_run(run_id)["heartbeat_at"] > first
        store.end_run(run_id, "finished")
        ended = store.get_run(run_id)["heartbeat_at"]
        time.sleep(0.5)
        assert store.get_run(run_id)["heartbeat_at"] == ended  # an ended run is no longer stamped


def test_a_run_on_another_host_is_interrupted_only_once_its_heartbeat_is_stale(db_path):
    from store import Store
    from store.store import STALE_AFTER_S

    with Store(db_path) as store:
        now = time.time()
        for run_id, beat in (("fresh0000001", now - 5), ("stale0000001", now - STALE_AFTER_S - 5)):
            store._write(lambda cur, run_id=run_id, beat=beat: cur.execute(
                "INSERT INTO runs (run_id, name, kind, status, config, created_at, pid, process_started, host, "
                "heartbeat_at) VALUES (?, 'x', 'train', 'running', '{}', ?, 4242, 'boot:1', 'other-host', ?)",
                [run_id, beat, beat]))
        view = store.list_runs().set_index("run_id")
        assert view.loc["fresh0000001", "status"] == "running"
        assert view.loc["stale0000001", "status"] == "interrupted"
        assert "on other-host has written no heartbeat for" in view.loc["stale0000001", "message"]
        store.flush()  # the read asked the writer to record what it saw
        recorded = dict(store._read(lambda cur: cur.execute("SELECT run_id, status FROM runs").fetchall()))
        assert recorded == {"fresh0000001": "running", "stale0000001": "interrupted"}


# holds the file for writing for a while, as a user's own DuckDB session might, then lets go
HOLD_FOR = """
import sys, time
import duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
print("released", flush=True)
time.sleep(60)
"""


def test_rows_logged_while_another_process_holds_the_file_stay_queued_until_it_lets_go(db_path, background, point):
    from store import Store, StoreLockedError

    with Store(db_path, wait_s=0.2) as store:
        run_id = store.create_run("train", {})
        holder = background("-c", HOLD_FOR, db_path, "2", cwd=REPO)
        holder.wait_for("holding")
        for step in range(100):
            store.log_metrics(run_id, {"loss": step}, step=step)
        with pytest.raises(StoreLockedError, match=f"in use by process {holder.proc.pid} .*waited 0.[12] s"):
            store.add_point(run_id, point)  # a call fails once the wait is over...
        holder.wait_for("released")
        history = store.metric_history(run_id)  # ...while the deferred rows waited for the next commit
        assert list(history.step) == list(range(100))
        assert store.writer.held_commits >= 1 and store.writer.dropped == 0
        store.add_point(run_id, point)
        assert len(store.run_points(run_id)) == 1
