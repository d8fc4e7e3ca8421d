"""The job runner and run_sync: runs recorded from queued to their end, cancellation, failures, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pandas as pd
import pytest

from engine.core.config import Config, check_range
from engine.core.context import RunContext
from engine.core.errors import Cancelled, ConfigError
from engine.core.progress import Progress
from engine.methods.tasks import TASKS, register_task
from engine.model.train import TrainConfig
from engine.run.jobs import JobRunner, StoreContext, get_runner, run_sync

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class StepsTask(Config):
    steps: int = 5  # how many steps
    step_s: float = 0.01  # seconds each step sleeps
    fail_at: int | None = None  # raise at this step

    def validate(self) -> None:
        check_range("steps", self.steps, 0, 100_000)


def steps_task(cfg: StepsTask, ctx: RunContext) -> list[dict]:
    """A task that behaves like training (progress, metrics, a cancel check per step) without a model."""
    for i in range(cfg.steps):
        ctx.cancel.raise_if_cancelled()
        if cfg.fail_at == i:
            raise RuntimeError(f"boom at step {i}")
        time.sleep(cfg.step_s)
        ctx.progress(Progress((i + 1) / cfg.steps, f"step {i + 1}/{cfg.steps}", metrics={"loss": 1 / (i + 1)}))
        ctx.log_metrics({"value": float(i)}, step=i + 1)
    point = {"accuracy": 0.5, "method": "steps", "params": {"steps": cfg.steps}, "stage": "final", "artifact": None}
    ctx.log_point(point)
    return [point]


if "test_steps" not in TASKS:
    register_task("test_steps", StepsTask, "sleeps through steps; for the job runner tests")(steps_task)


@pytest.fixture
def runner(tmp_path):
    r = JobRunner(str(tmp_path / "jobs.duckdb"), workers=1)
    yield r
    r.shutdown(grace_s=10)
    r.store.close()


def wait_status(store, run_id: str, statuses: tuple[str, ...], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = store.get_run(run_id)
        if run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s")
        time.sleep(0.02)


def test_submit_returns_at_once_and_the_run_finishes_with_its_record(runner):
    t0 = time.perf_counter()
    run_id = runner.submit("test_steps", {"steps": 20, "step_s": 0.05}, name="twenty steps")
    assert time.perf_counter() - t0 < 0.9  # the job itself takes at least 1 s
    assert runner.store.get_run(run_id)["status"] in ("queued", "running")
    assert runner.wait(run_id, timeout=60)
    run = runner.store.get_run(run_id)
    assert (run["status"], run["progress"], run["name"], run["kind"]) == ("finished", 1.0, "twenty steps", "test_steps")
    assert run["config"] == {"steps": 20, "step_s": 0.05, "fail_at": None}
    history = runner.store.metric_history(run_id)
    assert list(history[history.key == "value"].step) == list(range(1, 21))
    assert list(history[history.key == "batch_loss"].step) == list(range(1, 21))
    assert runner.store.run_points(run_id)[0]["params"] == {"steps": 20}


def test_a_failure_is_stored_with_its_traceback_and_the_worker_moves_on(runner):
    bad = runner.submit("test_steps", {"steps": 5, "fail_at": 2})
    good = runner.submit("test_steps", {"steps": 2})
    assert runner.wait(timeout=60)
    failed = runner.store.get_run(bad)
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom at step 2"
    assert "steps_task" in failed["traceback"] and "raise RuntimeError" in failed["traceback"]
    assert runner.store.get_run(good)["status"] == "finished"


def test_the_queue_keeps_its_order(runner):
    ids = [runner.submit("test_steps", {"steps": 1}) for _ in range(4)]
    assert list(runner.active()) == ids
    assert runner.wait(timeout=60)
    started = [runner.store.get_run(i)["started_at"] for i in ids]
    assert started == sorted(started)


def test_cancelling_a_queued_job_is_immediate_and_a_running_one_stops_within_a_step(runner):
    first = runner.submit("test_steps", {"steps": 10_000, "step_s": 0.01})
    queued = runner.submit("test_steps", {"steps": 1})
    assert runner.cancel(queued)
    run = runner.store.get_run(queued)
    assert run["status"] == "cancelled" and run["started_at"] is None
    wait_status(runner.store, first, ("running",))
    while runner.store.metric_history(first).empty:  # it is inside its loop
        time.sleep(0.02)
    t0 = time.perf_counter()
    assert runner.cancel(first)
    assert runner.wait(first, timeout=30)
    assert time.perf_counter() - t0 < 5
    run = runner.store.get_run(first)
    assert run["status"] == "cancelled" and 0 < run["progress"] < 1
    assert not runner.cancel(first) and not runner.cancel("no-such-run")


def test_a_cancelled_running_job_is_listed_as_cancelling_at_once_until_its_worker_stops(runner):
    # issue #22: on a busy machine the run stayed "running" for 11 s after Cancel; the list says so at once
    run_id = runner.submit("test_steps", {"steps": 100, "step_s": 0.5})
    wait_status(runner.store, run_id, ("running",))
    assert runner.active() == {run_id: "running"}
    assert runner.cancel(run_id)
    assert runner.active() == {run_id: "cancelling"}  # the worker still sleeps inside its step
    assert runner.wait(run_id, timeout=30)
    assert runner.active() == {}
    assert runner.store.get_run(run_id)["status"] == "cancelled"


def test_a_real_training_job_reports_progress_and_is_cancelled_within_a_batch(runner):
    from engine.methods.train import TrainTask

    cfg = TrainTask(dataset="digits", model="cnn_s", latency=False, train=TrainConfig(epochs=200))
    run_id = runner.submit("train", cfg)
    deadline = time.monotonic() + 120
    while (runner.store.metric_history(run_id, keys="batch_loss").shape[0] < 3
           and time.monotonic() < deadline):
        time.sleep(0.05)
    cancelled_at = time.time()
    runner.cancel(run_id)
    assert runner.wait(run_id, timeout=30)
    run = runner.store.get_run(run_id)
    assert run["status"] == "cancelled" and run["progress"] > 0 and run["message"].startswith("cancelled")
    # the loop checks the token before every batch: at most the batch under way (and one ending as the
    # cancel lands) is logged after it; rows carry the time they were logged, so a slow read cannot blur it
    logged = runner.store.metric_history(run_id, keys="batch_loss")
    after = logged[logged["time"] > pd.Timestamp(cancelled_at, unit="s", tz="UTC")]
    assert len(logged) >= 3 and len(after) <= 2
    assert run["seed"] == 0 and run["config"]["train"]["epochs"] == 200


def test_a_bad_config_is_refused_at_submit(runner):
    with pytest.raises(ConfigError, match="steps must be in"):
        runner.submit("test_steps", {"steps": -1})
    with pytest.raises(ConfigError, match="StepsTask has no field speed"):
        runner.submit("test_steps", {"speed": 2})
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        runner.submit("nope", {})
    assert runner.store.list_runs().empty


def test_shutdown_marks_running_and_queued_jobs_interrupted(tmp_path):
    r = JobRunner(str(tmp_path / "jobs.duckdb"))
    running = r.submit("test_steps", {"steps": 10_000, "step_s": 0.01})
    queued = r.submit("test_steps", {"steps": 1})
    wait_status(r.store, running, ("running",))
    r.shutdown(reason="the app stopped")
    for run_id in (running, queued):
        run = r.store.get_run(run_id)
        assert run["status"] == "interrupted" and "the app stopped" in run["message"]
    with pytest.raises(Exception, match="shut down"):
        r.submit("test_steps", {})
    r.store.close()


def test_many_workers_log_concurrently_without_losing_rows(tmp_path):
    r = JobRunner(str(tmp_path / "jobs.duckdb"), workers=4)
    ids = [r.submit("test_steps", {"steps": 300, "step_s": 0}) for _ in range(8)]
    assert r.wait(timeout=120)
    history = r.store.metric_history(ids)
    assert all(r.store.get_run(i)["status"] == "finished" for i in ids)
    assert len(history) == 8 * 300 * 2  # value + batch_loss per step
    r.shutdown()
    r.store.close()


def test_get_runner_is_one_runner_per_file_from_any_thread(tmp_path):
    db = str(tmp_path / "shared.duckdb")
    got: list[JobRunner] = []
    threads = [threading.Thread(target=lambda: got.append(get_runner(db))) for _ in range(8)]
    for t in threads:  # like Streamlit script threads: not the main thread, so no signal handler
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(g is got[0] for g in got)
    assert get_runner(os.path.relpath(db)) is got[0]
    got[0].shutdown()
    got[0].store.close()


def test_run_sync_records_the_run_and_echoes_progress(tmp_path):
    seen: list[Progress] = []
    events: list[str] = []

    class Echo(RunContext):
        def progress(self, p):
            seen.append(p)

        def log_event(self, message, level="info"):
            events.append(message)

    db = str(tmp_path / "sync.duckdb")
    points = run_sync("test_steps", StepsTask(steps=3), db, echo=Echo())
    assert len(seen) == 3 and points[0]["params"] == {"steps": 3}
    from store import open_store

    store = open_store(db)
    (run,) = store.list_runs().to_dict("records")
    assert run["status"] == "finished" and f"recording run {run['run_id']}" in events[0]
    with pytest.raises(RuntimeError, match="boom"):
        run_sync("test_steps", {"steps": 3, "fail_at": 1}, db)
    echo = Echo()
    echo.cancel.cancel()
    with pytest.raises(Cancelled):
        run_sync("test_steps", {"steps": 3}, db, echo=echo)
    assert sorted(store.list_runs().status) == ["cancelled", "failed", "finished"]
    store.close()


def test_progress_writes_are_throttled_but_the_last_one_is_kept(tmp_path):
    from store import Store

    with Store(tmp_path / "t.duckdb") as store:
        run_id = store.create_run("test_steps", {})
        store.start_run(run_id)
        ctx = StoreContext(store, run_id, progress_interval_s=60)
        writes: list[float] = []
        original = store.set_progress
        store.set_progress = lambda rid, fraction, *a, **k: (writes.append(fraction), original(rid, fraction, *a, **k))
        for i in range(1, 1001):
            ctx.progress(Progress(i / 1000 * 0.99, "epoch 1/1", metrics={"loss": 1.0}))
        assert writes == [0.00099]  # the first report; the other 999 within the interval wait
        ctx.flush_progress()
        assert store.get_run(run_id)["progress"] == pytest.approx(0.99)
        assert len(store.metric_history(run_id, keys="batch_loss")) == 1000


SIGTERM_SCRIPT = """
import sys, time
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
import test_jobs  # registers test_steps
from engine.run.jobs import get_runner
runner = get_runner(sys.argv[1])
run_id = runner.submit("test_steps", {{"steps": 100000, "step_s": 0.01}})
while runner.active().get(run_id) != "running":
    time.sleep(0.01)
print("running", run_id, flush=True)
time.sleep(120)
"""


def test_sigterm_marks_the_running_job_interrupted_before_the_process_exits(tmp_path):
    db = str(tmp_path / "term.duckdb")
    script = SIGTERM_SCRIPT.format(repo=REPO, tests=os.path.join(REPO, "tests"))
    proc = subprocess.Popen([sys.executable, "-c", script, db], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line.startswith("running"), proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    from store import Store

    with Store(db) as store:
        run = store.get_run(line.split()[1])
        assert store.recovered == []  # the process recorded it itself
        assert run["status"] == "interrupted" and "SIGTERM" in run["message"]


def test_a_scaled_progress_carries_an_eta_that_reaches_the_runs_table(tmp_path):
    from engine.core.progress import scaled
    from store import Store

    with Store(tmp_path / "t.duckdb") as store:
        run_id = store.create_run("test_steps", {})
        store.start_run(run_id)
        ctx = StoreContext(store, run_id, progress_interval_s=0)
        seen: list[Progress] = []
        level = scaled(lambda p: (seen.append(p), ctx.progress(p)), 0.5, 0.75)  # the third of four sweep levels
        time.sleep(0.05)
        level(Progress(0.5, "epoch 1/2"))  # half of the level: a quarter of the parent left after it
        assert seen[-1].fraction == pytest.approx(0.625)
        # 0.125 of the parent took >= 0.05 s, so the 0.375 left takes >= 0.15 s at that pace
        assert seen[-1].eta_s is not None and 0.15 <= seen[-1].eta_s < 30
        ctx.flush_progress()
        runs = store.list_runs()
        assert runs.set_index("run_id").loc[run_id, "eta_s"] == pytest.approx(seen[-1].eta_s)


def test_progress_reported_without_an_eta_gets_one_from_the_pace_so_far(tmp_path):
    from store import Store

    with Store(tmp_path / "t.duckdb") as store:
        run_id = store.create_run("test_steps", {})
        store.start_run(run_id)
        ctx = StoreContext(store, run_id, progress_interval_s=0)
        ctx.progress(Progress(0.1, "level 1/10"))  # a sweep's level counter: no ETA of its own
        time.sleep(0.05)
        ctx.progress(Progress(0.2, "level 2/10"))
        ctx.flush_progress()
        eta = store.list_runs().set_index("run_id").loc[run_id, "eta_s"]
        assert 0.4 <= eta < 30  # 0.1 of the run took >= 0.05 s, so the 0.8 left takes >= 0.4 s
