"""Runs tasks and records them in the run store: `run_sync` for the CLI, `JobRunner` for the app.

Both record a run (queued -> running -> finished | failed | cancelled | interrupted), hand the
task a `StoreContext` (progress, metrics, points, events, artifacts and its cancel token) and
store the error with its traceback when it fails. The runner serves a FIFO queue with worker
threads (one by default: PyTorch already uses every core). `get_runner()` gives a process one
runner per store file; the app wraps it in `st.cache_resource`, so a rerun, a page switch or a
closed tab neither stops a job nor starts it twice. Workers never call `st.*`.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import math
import queue
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.config import Config, check_range
from engine.core.context import RunContext
from engine.core.errors import Cancelled, ConfigError, UserError
from engine.core.point import Point
from engine.core.progress import CancelToken, Progress
from engine.methods.tasks import Task, get_task, run_task
from engine.model.train import pick_device
from store import Store, open_store, resolve_db_path

PROGRESS_INTERVAL_S = 0.5  # at most two progress writes a second per run: the train loop reports every batch
SHUTDOWN_GRACE_S = 5.0  # how long a shutdown waits for running jobs to stop at their next batch


class Terminated(SystemExit):
    """SIGTERM arrived while a run executed in the main thread (the CLI)."""


# ---------------------------------------------------------------- the context a job sees


class StoreContext(RunContext):
    """Writes what a task reports to the store; mirrors progress and events to `echo` (the CLI's bar).

    Each progress report's metrics (the train loop's per-batch losses) go to the metric history
    as `batch_<name>` at step = the batch number within the run; the progress row itself is
    written at most every `progress_interval_s` (and whenever its message changes).
    """

    def __init__(self, store: Store, run_id: str, *, echo: RunContext | None = None,
                 cancel: CancelToken | None = None, progress_interval_s: float = PROGRESS_INTERVAL_S) -> None:
        super().__init__(cancel or (echo.cancel if echo is not None else None))
        self.store = store
        self.run_id = run_id
        self.echo = echo
        self.progress_interval_s = progress_interval_s
        self.interrupt_reason: str | None = None  # set by a shutdown: a Cancelled then means interrupted
        self._batch = 0
        self._last_write = -math.inf
        self._last_message: str | None = None
        self._unwritten: Progress | None = None
        self._first: tuple[float, float] | None = None  # (time, fraction) of the first report: the ETA's origin

    def progress(self, p: Progress) -> None:
        if p.metrics:
            self._batch += 1
            self.store.log_metrics(self.run_id, {f"batch_{k}": v for k, v in p.metrics.items()}, step=self._batch)
        now = time.monotonic()
        if self._first is None:
            self._first = (now, p.fraction)
        elif p.eta_s is None and p.fraction > self._first[1]:  # a level counter: the ETA from the pace so far
            began, f0 = self._first
            p = dataclasses.replace(p, eta_s=(now - began) * (1 - p.fraction) / (p.fraction - f0))
        if now - self._last_write >= self.progress_interval_s or p.message != self._last_message or p.fraction >= 1:
            self._write_progress(p, now)
        else:
            self._unwritten = p
        if self.echo is not None:
            self.echo.progress(p)

    def _write_progress(self, p: Progress, now: float) -> None:
        self.store.set_progress(self.run_id, p.fraction, p.message, p.eta_s)
        self._last_write, self._last_message, self._unwritten = now, p.message, None

    def flush_progress(self) -> None:
        """Writes the latest progress that the throttle held back."""
        if self._unwritten is not None:
            self._write_progress(self._unwritten, time.monotonic())

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.store.log_metrics(self.run_id, metrics, step)
        if self.echo is not None:
            self.echo.log_metrics(metrics, step)

    def log_point(self, point: Point) -> None:
        super().log_point(point)
        self.store.add_point(self.run_id, point)

    def log_timing(self, point_id: int, timing: dict) -> None:
        super().log_timing(point_id, timing)
        self.store.add_timing(point_id, self.run_id, timing)

    def log_event(self, message: str, level: str = "info") -> None:
        self.store.log_event(self.run_id, message, level)
        if self.echo is not None:
            self.echo.log_event(message, level)

    def log_artifact(self, path: str, kind: str) -> None:
        self.store.add_artifact(self.run_id, path, kind)
        if self.echo is not None:
            self.echo.log_artifact(path, kind)


# ---------------------------------------------------------------- what a run record holds


def resolve_task(task_name: str, config: Config | dict) -> tuple[Task, Config]:
    """The task and its validated config (a dict from a page or recipe is parsed, never executed)."""
    task = get_task(task_name)
    if isinstance(config, dict):
        config = task.config.from_dict(config)
    if not isinstance(config, task.config):
        raise ConfigError(f"task '{task_name}' takes a {task.config.__name__}, got {type(config).__name__}")
    return task, config


def find_seed(d: dict) -> int | None:
    """The config's `seed`, at the top level or in a nested section (e.g. train.seed)."""
    if isinstance(d.get("seed"), int):
        return d["seed"]
    for v in d.values():
        if isinstance(v, dict) and (seed := find_seed(v)) is not None:
            return seed
    return None


def default_run_name(task_name: str, d: dict) -> str:
    words = [task_name] + [Path(str(d[k])).name for k in ("method", "model", "dataset", "checkpoint") if d.get(k)]
    return " ".join(words)


@functools.cache
def code_version() -> str | None:
    """The git commit of this code, with +dirty when the working tree differs from it."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=root, capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.returncode == 1 else "")


def device_name() -> str:
    import torch

    device = pick_device()
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu, {torch.get_num_threads()} threads"


def create_run(store: Store, task_name: str, config: Config, name: str | None = None,
               parent: str | None = None, *, tags: Iterable[str] = (), stage: str | None = None,
               sweep: dict | None = None, unit_key: str | None = None) -> str:
    """Records a queued run of the task: the user's name (else one made from the config) and tags, and for a
    recipe unit its stage, swept values and key."""
    d = config.to_dict()
    name = name if name and name.strip() else default_run_name(task_name, d)
    return store.create_run(task_name, d, name=name, parent_id=parent, seed=find_seed(d),
                            code_version=code_version(), device=device_name(), tags=tags, stage=stage, sweep=sweep,
                            unit_key=unit_key)


def execute_run(store: Store, run_id: str, task_name: str, config: Config, ctx: StoreContext) -> list[Point]:
    """Runs a created run to its end status; re-raises what stopped it."""
    if not store.start_run(run_id):
        raise Cancelled(f"run {run_id} was no longer queued")
    started = time.perf_counter()
    ctx.log_event(f"started {task_name} on {device_name()}")
    try:
        points = run_task(task_name, config, ctx)
    except Cancelled as e:
        ctx.flush_progress()
        status = "interrupted" if ctx.interrupt_reason else "cancelled"
        message = f"interrupted: {ctx.interrupt_reason}" if ctx.interrupt_reason else str(e)
        store.end_run(run_id, status, message=message)
        store.log_event(run_id, message, "warning")
        raise
    except Exception as e:
        ctx.flush_progress()
        error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        store.end_run(run_id, "failed", message="failed", error=error, traceback=traceback.format_exc())
        store.log_event(run_id, f"failed: {error}", "error")
        raise
    except BaseException as e:  # Ctrl-C, or SIGTERM turned into Terminated
        ctx.flush_progress()
        reason = "the process received SIGTERM" if isinstance(e, SystemExit) else "interrupted by Ctrl-C"
        store.end_run(run_id, "interrupted", message=f"interrupted: {reason}")
        store.log_event(run_id, f"interrupted: {reason}", "warning")
        raise
    ctx.flush_progress()
    store.log_event(run_id, f"finished: {len(points)} point(s) in {time.perf_counter() - started:.1f} s")
    store.end_run(run_id, "finished", message="finished")
    return points


# ---------------------------------------------------------------- the CLI: one run in this thread


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """In the main thread, SIGTERM raises Terminated so the run is recorded as interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_sync(task_name: str, config: Config | dict, db_path: str | None, *, echo: RunContext | None = None,
             name: str | None = None, parent: str | None = None, tags: Iterable[str] = ()) -> list[Point]:
    """Runs a task in the calling thread and records it in the store at `db_path` (default path if None)."""
    _, cfg = resolve_task(task_name, config)
    store = open_store(db_path)
    run_id = create_run(store, task_name, cfg, name, parent, tags=tags)
    ctx = StoreContext(store, run_id, echo=echo)
    if echo is not None:
        echo.log_event(f"recording run {run_id} in {store.path}")
    try:
        with _sigterm_raises():
            return execute_run(store, run_id, task_name, cfg, ctx)
    finally:
        store.flush()


# ---------------------------------------------------------------- the app: a queue and worker threads


@dataclass
class _Job:
    run_id: str
    task: str
    config: Config
    ctx: StoreContext
    state: str = "queued"  # queued | running | cancelling (asked to stop, still inside a step) | done
    submitted: float = field(default_factory=time.time)


class JobRunner:
    """A FIFO queue of tasks served by `workers` background threads, each run recorded in the store."""

    def __init__(self, db_path: str | None = None, workers: int = 1) -> None:
        check_range("workers", workers, 1, 64)
        self.store = open_store(db_path)
        self.workers = workers
        self.closed = False
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._threads = [threading.Thread(target=self._work, name=f"compression-lab-job-{i + 1}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, task_name: str, config: Config | dict, name: str | None = None,
               parent: str | None = None, tags: Iterable[str] = ()) -> str:
        """Validates the config, records the run as queued (with the user's name and tags, if any) and
        returns its id at once."""
        _, cfg = resolve_task(task_name, config)
        with self._lock:
            if self.closed:
                raise UserError("the job runner has been shut down; start a new one")
            run_id = create_run(self.store, task_name, cfg, name, parent, tags=tags)
            job = _Job(run_id, task_name, cfg, StoreContext(self.store, run_id))
            self._jobs[run_id] = job
            self._queue.put(job)
        return run_id

    def cancel(self, run_id: str) -> bool:
        """A queued job is cancelled now; a running one is `cancelling` (active() says so at once) until it stops
        at its next batch. False if not ours or done."""
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None:
                return False
            job.ctx.cancel.cancel()
            was_queued = job.state == "queued"
            if was_queued:
                job.state = "done"
                del self._jobs[run_id]
                self._changed.notify_all()
            elif job.state == "running":
                job.state = "cancelling"
        if was_queued:
            self.store.end_run(run_id, "cancelled", message="cancelled before it started")
        return True

    def active(self) -> dict[str, str]:
        """{run_id: "queued" | "running" | "cancelling"} for this runner's unfinished jobs, in submission order
        (cancelling: cancel() was called and the worker has not stopped yet)."""
        with self._lock:
            return {j.run_id: j.state for j in self._jobs.values()}

    def wait(self, run_id: str | None = None, timeout: float | None = None) -> bool:
        """Blocks until that job (or every job) is done; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while (run_id in self._jobs) if run_id is not None else bool(self._jobs):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.state != "queued":
                    continue  # cancelled while it waited
                job.state = "running"
            try:
                execute_run(self.store, job.run_id, job.task, job.config, job.ctx)
            except Exception:  # noqa: BLE001, S110 - recorded in the store by execute_run; next job
                pass
            finally:
                with self._lock:
                    job.state = "done"
                    self._jobs.pop(job.run_id, None)
                    self._changed.notify_all()

    def shutdown(self, reason: str = "the job runner was shut down", grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stops taking jobs; queued ones and running ones that do not stop within `grace_s` become interrupted."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self.store.closed:  # nothing left to record in
                for j in self._jobs.values():
                    j.ctx.cancel.cancel()
                return
            queued = [j for j in self._jobs.values() if j.state == "queued"]
            running = [j for j in self._jobs.values() if j.state in ("running", "cancelling")]
            for j in queued:
                j.state = "done"
                del self._jobs[j.run_id]
            for j in running:
                j.ctx.interrupt_reason = reason
                j.ctx.cancel.cancel()
        for j in queued:
            self.store.end_run(j.run_id, "interrupted", message=f"interrupted: {reason} before it started")
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + grace_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for j in running:
            if j.state != "done":  # still inside a step that does not check its token
                self.store.end_run(j.run_id, "interrupted", message=f"interrupted: {reason}")
        self.store.flush()


# ---------------------------------------------------------------- one runner per store file per process

_RUNNERS: dict[str, JobRunner] = {}
_RUNNERS_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


def get_runner(db_path: str | None = None, workers: int = 1) -> JobRunner:
    """The process's runner for that store file (created on first use; `workers` counts only then)."""
    key = resolve_db_path(db_path)
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(key)
        if runner is None or runner.closed:
            runner = JobRunner(key, workers)
            _RUNNERS[key] = runner
            _install_shutdown_hooks()
        return runner


def shutdown_all(reason: str = "the process is exiting") -> None:
    with _RUNNERS_LOCK:
        runners = list(_RUNNERS.values())
    for runner in runners:
        runner.shutdown(reason)


def _install_shutdown_hooks() -> None:
    """atexit always; a SIGTERM handler only from the main thread (Streamlit runs pages elsewhere,
    where signal.signal raises; there Streamlit's own SIGTERM handling ends in atexit)."""
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(shutdown_all)
    if threading.current_thread() is not threading.main_thread():
        return
    previous: Any = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        shutdown_all("the process received SIGTERM")
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
