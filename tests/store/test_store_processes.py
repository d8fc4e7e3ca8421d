"""The store across real processes: the CLI records a run, a killed run is found, a held file is explained."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.cli.main import main
from engine.core.errors import ConfigError
from engine.core.point import METRIC_FIELDS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# a process that keeps the file open for writing, as a DuckDB shell or a script of the user's would
# (a Compression Lab process holds it only for the moment of each read or commit)
HOLD_FILE = """
import sys, time
import duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(120)
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def test_cli_train_with_db_records_the_run_its_epochs_and_its_point(tmp_path, capsys):
    db, ck = str(tmp_path / "lab.duckdb"), str(tmp_path / "ck")
    out = cli("train", "--dataset", "digits", "--model", "cnn_s", "--epochs", "2", "--no-latency", "--out", ck,
              "--json", "--db", db)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)

    from store import reading

    with reading(db) as store:
        (run,) = store.list_runs().to_dict("records")
        assert (run["kind"], run["status"], run["seed"], run["progress"]) == ("train", "finished", 0, 1.0)
        assert run["config"] and run["code_version"] and run["device"].startswith("cpu") and run["n_points"] == 1
        history = store.metric_history(run["run_id"])
        epochs = history[history.key == "val_accuracy"]
        assert list(epochs.step) == [1, 2] and epochs.value.between(0, 1).all()
        batches_per_epoch = -(-1293 // 64)  # digits: 1293 training images, batch 64
        assert (history.key == "batch_loss").sum() == 2 * batches_per_epoch
        (point,) = store.run_points(run["run_id"])
        assert {k: point[k] for k in METRIC_FIELDS} == {k: printed[k] for k in METRIC_FIELDS}
        assert point["artifact"] == ck and point["params"]["epochs"] == 2 and point["family"] == "train"
        art = store.artifacts(run["run_id"]).iloc[0]
        assert art["path"] == ck and art["kind"] == "checkpoint" and art["bytes"] > 100_000
        assert "started train" in " ".join(store.events(run["run_id"]).message)

    assert main(["runs", "--db", db, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [run["run_id"]] and listed[0]["status"] == "finished"
    assert main(["show", run["run_id"][:6], "--db", db, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run"]["run_id"] == run["run_id"] and shown["points"][0]["accuracy"] == printed["accuracy"]
    assert {m["key"] for m in shown["metrics"]} >= {"val_accuracy", "train_loss", "batch_loss"}
    assert main(["show", run["run_id"], "--db", db]) == 0
    text = capsys.readouterr().out
    assert "finished" in text and "val_accuracy" in text and "per-batch batch_loss" in text
    assert main(["runs", "--db", db, "--status", "failed"]) == 0
    assert "no runs with status failed" in capsys.readouterr().out


def test_a_run_killed_with_sigkill_is_marked_interrupted_on_the_next_open(tmp_path, background):
    db = str(tmp_path / "lab.duckdb")
    child = background("-m", "engine", "train", "--dataset", "digits", "--model", "cnn_s", "--epochs", "500",
                       "--no-latency", "--out", str(tmp_path / "ck"), "--db", db, cwd=REPO)
    child.wait_for("epoch 2/500")  # mid-run: the progress bar has reached the second epoch
    time.sleep(1.0)  # past the writer's 0.25 s group commit, so batch metrics and progress are on disk
    child.proc.send_signal(signal.SIGKILL)
    child.proc.wait(30)

    from store import Store, reading

    with reading(db) as ro:  # a reader shows what the next writer will record, and records nothing
        (row,) = ro.list_runs().to_dict("records")
        assert ro.read_only and row["status"] == "interrupted" and "ended without" in row["message"]
        assert ro.get_run(row["run_id"])["status"] == "interrupted"
    with Store(db) as store:
        (run,) = store.list_runs().to_dict("records")
        assert store.recovered == [run["run_id"]]
        assert run["status"] == "interrupted" and run["pid"] == child.proc.pid
        assert f"its process {child.proc.pid} ended without finishing it" in run["message"]
        assert run["ended_at"] is not None and 0 < run["progress"] < 0.05
        # what the killed process had committed survives it: epoch 1's per-batch losses at least
        assert (store.metric_history(run["run_id"]).key == "batch_loss").sum() >= 21
        assert "marked interrupted" in " ".join(store.events(run["run_id"]).message)


def test_a_file_held_past_the_wait_gets_a_clear_message_after_the_wait(tmp_path, background, capsys, monkeypatch):
    from store import Store, StoreLockedError, reading

    monkeypatch.setenv("COMPRESSION_LAB_DB_WAIT_S", "0.5")
    db = str(tmp_path / "lab.duckdb")
    Store(db).close()
    holder = background("-c", HOLD_FILE, db, cwd=REPO)
    holder.wait_for("holding")
    t0 = time.monotonic()
    with pytest.raises(StoreLockedError, match=f"in use by process {holder.proc.pid} .*waited 0.5 s.*--db OTHER"):
        Store(db)
    assert 0.4 < time.monotonic() - t0 < 5  # it retried for the wait, and not for ever
    with pytest.raises(StoreLockedError, match=f"cannot read the run store .*process {holder.proc.pid}"), \
            reading(db):
        pass
    assert main(["runs", "--db", db]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot read the run store") and str(holder.proc.pid) in err[0]
    out = cli("train", "--dataset", "digits", "--epochs", "1", "--db", db)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "is in use by process" in lines[0], out.stderr


def test_sigterm_to_the_cli_records_the_run_as_interrupted_before_it_exits(tmp_path, background):
    db = str(tmp_path / "lab.duckdb")
    child = background("-m", "engine", "train", "--dataset", "digits", "--model", "cnn_s", "--epochs", "500",
                       "--no-latency", "--out", str(tmp_path / "ck"), "--db", db, cwd=REPO)
    child.wait_for("epoch 1/500")
    child.proc.send_signal(signal.SIGTERM)
    assert child.proc.wait(60) == 128 + signal.SIGTERM

    from store import Store

    with Store(db) as store:
        (run,) = store.list_runs().to_dict("records")
        assert store.recovered == []  # the process recorded it itself on the way out
        assert run["status"] == "interrupted" and run["message"] == "interrupted: the process received SIGTERM"


def test_a_negative_limit_or_a_file_in_place_of_a_folder_is_one_line_and_exit_2(tmp_path, capsys):
    from store import Store

    db = str(tmp_path / "lab.duckdb")
    Store(db).close()
    assert main(["runs", "--db", db, "--limit", "-5"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --limit must be a number of runs >= 0 (0 lists all), got -5"]
    with Store(db, read_only=True) as store, pytest.raises(ConfigError, match=r"limit must be a whole number of runs from 0 to .*, got -1"):
        store.list_runs(limit=-1)

    blocker = tmp_path / "somefile"
    blocker.write_text("mine")
    inside = str(blocker / "s.duckdb")
    for argv, says in ((["runs", "--db", inside], f"no run store at {inside}"),
                       (["show", "abc", "--db", inside], f"no run store at {inside}"),
                       (["train", "--dataset", "digits", "--epochs", "1", "--db", inside],
                        f"cannot create the run store {inside}: {blocker} is a file, not a folder")):
        assert main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: {says}"), line
    assert blocker.read_text() == "mine"
