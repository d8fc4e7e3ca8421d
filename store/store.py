"""The run store: one DuckDB file with every run, its metric history, points, artifacts and events.

DuckDB lets one process write a file (many threads inside it) or several processes read it. So
no process keeps the file: every group commit of a process's single writer thread (store/writer.py)
attaches it for writing and lets go after, and every read attaches it read-only for the moment it
reads (store/sharing.py). The app, a terminal's `runs` and any number of `--db` commands thus use
one file at once; one that finds the file busy retries for a few seconds, then gets
`StoreLockedError`, a message naming the process that holds the file.

The first open for writing migrates an older file (store/schema.py); a DuckDB file with tables
of its own and no store in it is refused, untouched. Each process keeps a heartbeat on the runs
it owns, and marks `interrupted` any queued or running run whose process is gone whenever it
opens the file, commits (at most every few seconds), or reads such a run.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from engine.core.config import check_choice
from engine.core.machine import fingerprint
from engine.core.point import LATENCY_FIELDS, METRIC_FIELDS
from store import queries
from store.errors import StoreError, StoreLockedError, StoreOutdatedError, StoreVersionError
from store.labels import check_name, check_note, check_tags
from store.process import process_alive, this_process
from store.schema import (
    ACTIVE_STATUSES,
    CONTRACT_COLUMNS,
    RUN_STATUSES,
    SCHEMA_VERSION,
    migrate,
    read_version,
    table_columns,
)
from store.sharing import lock_message, share, unshare
from store.writer import Writer

DEFAULT_DB_PATH = "./compression_lab.duckdb"
DB_ENV = "COMPRESSION_LAB_DB"
END_STATUSES = tuple(s for s in RUN_STATUSES if s not in ACTIVE_STATUSES)
EVENT_LEVELS = ("debug", "info", "warning", "error")

# runs this process created and has not ended: never "orphaned" while we still run them
_LIVE_RUNS: set[str] = set()
_ACTIVE_RUNS_SQL = ("SELECT run_id, pid, process_started, host, heartbeat_at FROM runs "
                    "WHERE status IN ('queued', 'running')")
_END_RUN_SQL = ("UPDATE runs SET status = ?, ended_at = ?, heartbeat_at = ?, message = coalesce(?, message), error = ?, "
                "traceback = ?, progress = CASE WHEN ? = 'finished' THEN 1.0 ELSE progress END "
                "WHERE run_id = ? AND status IN ('queued', 'running') RETURNING run_id")
HEARTBEAT_S = 5.0  # how often a process with live runs stamps their heartbeat_at (and sweeps for orphans)
STALE_AFTER_S = 60.0  # a run on another host whose heartbeat is older than this is interrupted


def default_db_path() -> str:
    """$COMPRESSION_LAB_DB, else ./compression_lab.duckdb."""
    return os.environ.get(DB_ENV) or DEFAULT_DB_PATH


def resolve_db_path(path: str | os.PathLike | None = None) -> str:
    return str(Path(path or default_db_path()).expanduser().resolve())


def orphan_reason(run_id: str, pid: int | None, started: str | None, host: str | None,
                  heartbeat_at: float | None, now: float | None = None) -> str | None:
    """Why a queued or running run can no longer progress, or None if its process may still run it.

    On this host the pid and its start time say whether that very process lives; a process on
    another host (the file on a shared disk) is judged by its heartbeat, which every process
    writes for its runs every HEARTBEAT_S.
    """
    if run_id in _LIVE_RUNS:
        return None
    if pid is None:
        return "no process was recorded for it"
    alive = process_alive(pid, started, host)
    if alive is None:
        silent = (time.time() if now is None else now) - (heartbeat_at or 0.0)
        if silent > STALE_AFTER_S:
            return f"its process {pid} on {host} has written no heartbeat for {silent:.0f} s"
        return None
    if not alive:
        return f"its process {pid} ended without finishing it"
    if pid == os.getpid():
        return "this process no longer runs it"
    return None


def to_json(value: Any) -> str:
    """JSON text keeping NaN/Inf; numpy and torch scalars become numbers, anything else its str()."""
    return json.dumps(value, default=_plain)


def _plain(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    return str(obj)


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, str | bytes) or value is None:
        raise TypeError(f"metric '{key}' must be a number, got {value!r}")
    return float(value)


def describe_artifact(path: str | os.PathLike) -> tuple[int | None, str | None]:
    """(bytes, sha256) of a file, or of a directory's files taken in sorted order with their names."""
    p = Path(path)
    if not p.exists():
        return None, None
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    size = 0
    for f in files:
        if f is not p:
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
                size += len(chunk)
    return size, h.hexdigest()


class Store:
    """One run-store file. Thread-safe: any thread may read or write through one instance."""

    def __init__(self, path: str | os.PathLike | None = None, read_only: bool = False,
                 linger_s: float = 0.25, wait_s: float | None = None) -> None:
        self.path = resolve_db_path(path)
        self.read_only = read_only
        self.migrated_from: int | None = None  # the version a writer found the file at
        self._live: set[str] = set()  # runs this store created and has not ended: they get a heartbeat
        self._machines_known: set[str] = set()  # machine ids whose fingerprint this instance has written
        self.file = share(self.path, wait_s)
        try:
            self._point_columns = self._open_schema()
        except BaseException:
            unshare(self.file)
            raise
        self._writer = None if read_only else Writer(self.file, linger_s, tend=self._tend, tend_every_s=HEARTBEAT_S,
                                                      needs_tending=lambda: bool(self._live))
        self.closed = False
        _EVERY_STORE.add(self)
        self.recovered: list[str] = [] if read_only else self._recover()

    def _open_schema(self) -> set[str]:
        """Checks the file's schema version (a writer migrates an older one) and returns the points columns.

        An existing file is looked at read-only first, so a file that needs nothing is never
        attached for writing here, and a foreign one is refused untouched."""
        if self.read_only or Path(self.path).exists():
            try:
                with self.file.use(write=False) as cur:
                    version = self._check_version(cur)
                    columns = set(table_columns(cur, "points")) if version else set()
            except StoreLockedError as e:
                if self.read_only:
                    raise
                raise StoreLockedError(lock_message(self.path, e.duck_message, False, e.waited_s)) from None
            if self.read_only:
                return columns
            if version == SCHEMA_VERSION and set(METRIC_FIELDS) <= columns:
                self.migrated_from = version
                return columns
        with self.file.use(write=True) as cur:
            self._check_version(cur)  # again: another process may have changed it in between
            self.migrated_from, _ = migrate(cur, time.time())
            return set(table_columns(cur, "points"))

    def _check_version(self, cur) -> int:
        version = read_version(cur)
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"{self.path} was written by a newer Compression Lab (store schema version {version}; this "
                f"code reads up to {SCHEMA_VERSION}): update the code, or use another --db file")
        if version == 0:
            tables = [r[0] for r in cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
                "ORDER BY table_name").fetchall()]
            if tables:
                shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
                raise StoreError(f"{self.path} is a DuckDB file with tables of its own ({shown}) and no run store "
                                 "in it; it was left untouched: record runs in another file (--db NEW.duckdb, or "
                                 "the app's Settings)")
            if self.read_only:
                raise StoreError(f"{self.path} is not a Compression Lab run store (it has no schema_version table)")
        elif self.read_only and version < SCHEMA_VERSION:
            raise StoreOutdatedError(
                f"{self.path} has store schema version {version}; open it once for writing to migrate it to "
                f"{SCHEMA_VERSION}")
        return version

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Writes what is queued and lets go of the file (other threads' reads then fail)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            unshare(self.file)
            with _OPEN_LOCK:
                if _OPEN.get(self.path) is self:
                    del _OPEN[self.path]

    def flush(self) -> None:
        """Returns once every write queued so far is committed."""
        if self._writer is not None:
            self._writer.flush()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            raise StoreError(f"{self.path} is open read-only")
        return self._writer

    def _write(self, fn) -> Any:
        if self.closed:
            raise StoreError(f"the run store {self.path} is closed")
        return self.writer.call(fn)

    def _read(self, fn) -> Any:
        if self.closed:
            raise StoreError(f"the run store {self.path} is closed")
        if self._writer is not None and self._writer.pending:
            self._writer.flush()  # read your own writes
        with self.file.use(write=False) as cur:
            return fn(cur)

    # ------------------------------------------------------------ runs whose process is gone

    def _recover(self) -> list[str]:
        """Marks the runs whose process is gone when the store is opened; attaches for writing only if any."""
        rows = self._read(lambda cur: cur.execute(_ACTIVE_RUNS_SQL).fetchall())
        if not any(orphan_reason(*r) for r in rows):
            return []
        return self._write(self._sweep)

    def _sweep(self, cur) -> list[str]:
        """In the writer: every queued or running run whose process is gone becomes interrupted."""
        now = time.time()
        gone = [(r[0], reason) for r in cur.execute(_ACTIVE_RUNS_SQL).fetchall()
                if (reason := orphan_reason(*r, now=now))]
        for run_id, reason in gone:
            cur.execute(_END_RUN_SQL, ["interrupted", now, now, f"interrupted: {reason}", None, None, "interrupted",
                                       run_id])
            cur.execute("INSERT INTO events VALUES (?, ?, ?, ?)",
                        [run_id, now, "warning", f"marked interrupted by process {os.getpid()}: {reason}"])
        return [run_id for run_id, _ in gone]

    def _tend(self, cur) -> None:
        """In the writer, every HEARTBEAT_S: the heartbeat of this store's runs, then the sweep."""
        live = list(self._live)
        if live:
            cur.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
                        "AND status IN ('queued', 'running')", [time.time(), live])
        self._sweep(cur)

    # ------------------------------------------------------------ runs

    def create_run(self, kind: str, config: Mapping[str, Any], *, name: str | None = None,
                   parent_id: str | None = None, seed: int | None = None, code_version: str | None = None,
                   device: str | None = None, status: str = "queued", tags: Iterable[str] = (), note: str = "",
                   stage: str | None = None, sweep: Mapping[str, Any] | None = None,
                   unit_key: str | None = None) -> str:
        """Records a new run owned by this process; returns its id.

        `name` is what lists show (default: the kind); `tags` and `note` are the user's. A recipe unit also
        gets its `stage`, the `sweep` values that made it and its `unit_key` (what the recipe reuses it by)."""
        check_choice("status", status, ACTIVE_STATUSES)
        display = check_name(name) if name is not None and name.strip() else kind
        tags, note = check_tags(tags), check_note(note)
        run_id = uuid.uuid4().hex[:12]
        me, now = this_process(), time.time()
        args = [run_id, display, kind, status, to_json(dict(config)), now, now if status == "running" else None,
                parent_id, seed, code_version, device, me.pid, me.started, me.host, now, tags, note, stage,
                None if sweep is None else to_json(dict(sweep)), unit_key]
        _LIVE_RUNS.add(run_id)  # before the row exists, so no sweep of this process takes it for an orphan
        self._live.add(run_id)
        try:
            self._write(lambda cur: cur.execute(
                "INSERT INTO runs (run_id, name, kind, status, config, created_at, started_at, parent_id, seed, "
                "code_version, device, pid, process_started, host, heartbeat_at, tags, note, stage, sweep, unit_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", args))
        except BaseException:
            _LIVE_RUNS.discard(run_id)
            self._live.discard(run_id)
            raise
        return run_id

    def start_run(self, run_id: str) -> bool:
        """queued -> running in this process; False if the run is no longer queued (e.g. cancelled)."""
        me, now = this_process(), time.time()
        rows = self._write(lambda cur: cur.execute(
            "UPDATE runs SET status = 'running', started_at = ?, heartbeat_at = ?, pid = ?, process_started = ?, "
            "host = ? WHERE run_id = ? AND status = 'queued' RETURNING run_id",
            [now, now, me.pid, me.started, me.host, run_id]).fetchall())
        return bool(rows)

    def end_run(self, run_id: str, status: str, *, message: str | None = None, error: str | None = None,
                traceback: str | None = None) -> bool:
        """Sets a final status; the first one wins (False if the run had already ended)."""
        check_choice("status", status, END_STATUSES)
        now = time.time()
        rows = self._write(lambda cur: cur.execute(
            _END_RUN_SQL, [status, now, now, message, error, traceback, status, run_id]).fetchall())
        _LIVE_RUNS.discard(run_id)
        self._live.discard(run_id)
        return bool(rows)

    def rename_run(self, run_id: str, name: str) -> None:
        """Sets the name lists show (a run id or a unique prefix of one); raises RunNotFound."""
        self.label_run(run_id, name=name)

    def set_tags(self, run_id: str, tags: Iterable[str]) -> None:
        """Replaces a run's tags (see store.labels.check_tags for what a tag may be)."""
        self.label_run(run_id, tags=tags)

    def set_note(self, run_id: str, note: str) -> None:
        """Replaces a run's free-text note ("" clears it)."""
        self.label_run(run_id, note=note)

    def label_run(self, run_id: str, *, name: str | None = None, tags: Iterable[str] | None = None,
                  note: str | None = None) -> None:
        """Sets whichever of name, tags and note are given, all checked before any is written, in one commit."""
        values = {}
        if name is not None:
            values["name"] = check_name(name)
        if tags is not None:
            values["tags"] = check_tags(tags)
        if note is not None:
            values["note"] = check_note(note)
        if not values:
            return

        def update(cur) -> None:
            full = queries.resolve_run_id(cur, run_id)
            columns = ", ".join(f"{c} = ?" for c in values)  # names from the fixed set above
            cur.execute(f"UPDATE runs SET {columns} WHERE run_id = ?", [*values.values(), full])

        self._write(update)

    def set_progress(self, run_id: str, fraction: float, message: str | None = None,
                     eta_s: float | None = None) -> None:
        """Deferred: written with the next group commit (a running run only)."""
        eta = None if eta_s is None or not math.isfinite(eta_s) else float(eta_s)
        self.writer.defer_progress(run_id, float(fraction), message, eta, time.time())

    # ------------------------------------------------------------ what a run logs

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int, at: float | None = None) -> None:
        """Deferred: one row per key at `step`; NaN and Inf are kept as they are."""
        now = time.time() if at is None else at
        rows = [(run_id, int(step), str(k), _as_float(k, v), now) for k, v in metrics.items()]
        for row in rows:
            self.writer.defer_row("metrics", row)

    def log_event(self, run_id: str, message: str, level: str = "info") -> None:
        check_choice("level", level, EVENT_LEVELS)
        self.writer.defer_row("events", (run_id, time.time(), level, str(message)))

    def add_point(self, run_id: str, point: Any) -> int:
        """Stores one evaluated variant (an engine.core.point.Point, or its dict): the contract and metric
        columns, and every other key in `extra`. Returns its point_id."""
        if hasattr(point, "to_dict"):
            point = point.to_dict()
        cols = {"run_id": run_id, "created_at": time.time()}
        for name in (*METRIC_FIELDS, *CONTRACT_COLUMNS):
            if name in self._point_columns and name in point:
                value = point.get(name)
                cols[name] = value.item() if hasattr(value, "item") else value
        if cols.get("accuracy_runs") is not None:
            cols["accuracy_runs"] = to_json(cols["accuracy_runs"])
        cols.update(stage=point.get("stage"), method=point.get("method"), params=to_json(point.get("params") or {}),
                    artifact=None if point.get("artifact") is None else str(point["artifact"]))
        extra = {k: v for k, v in point.items() if k not in cols and k not in METRIC_FIELDS}
        cols["extra"] = to_json(extra)
        names = ", ".join(f'"{c}"' for c in cols)
        marks = ", ".join("?" for _ in cols)
        values = list(cols.values())
        self._note_machine(cols.get("machine"))
        return self._write(lambda cur: cur.execute(
            f"INSERT INTO points ({names}) VALUES ({marks}) RETURNING point_id", values).fetchone()[0])

    def _note_machine(self, machine: str | None) -> None:
        """Keeps this process's machine fingerprint once per file, when a timing names it."""
        here = fingerprint()
        if machine == here["id"] and here["id"] not in self._machines_known:
            self._machines_known.add(here["id"])
            row = [here["id"], to_json(here), time.time()]
            self._write(lambda cur: cur.execute(
                "INSERT INTO machines VALUES (?, ?, ?) ON CONFLICT (machine_id) DO NOTHING", row))

    def add_timing(self, point_id: int, run_id: str, timing: Mapping[str, Any]) -> bool:
        """Records a new timing of a stored point (its LATENCY_FIELDS, made by `run_id`, a re-measure run) in the
        point's latency history, and shows it on the point when it is clean, or when the point's shown timing is
        not clean either: the newest clean timing is the one shown. The point's first timing enters the history
        the first time it is re-timed. Returns whether the new timing is now the one shown."""
        timing = {k: (v.item() if hasattr(v, "item") else v) for k, v in timing.items() if k in LATENCY_FIELDS}
        self._note_machine(timing.get("machine"))
        cols = [c for c in LATENCY_FIELDS if c in self._point_columns]

        def add(cur) -> bool:
            names = ", ".join(f'"{c}"' for c in cols)
            row = cur.execute(f"SELECT run_id, created_at, {names} FROM points WHERE point_id = ?",
                              [point_id]).fetchone()
            if row is None:
                raise StoreError(f"point {point_id} is not in {self.path} (deleted with its run?)")
            first = dict(zip(cols, row[2:]))
            seen = cur.execute("SELECT count(*) FROM timings WHERE point_id = ?", [point_id]).fetchone()[0]
            if not seen and first.get("latency_ms_b1") is not None:
                cur.execute("INSERT INTO timings VALUES (?, ?, ?, ?, ?, ?)",
                            [point_id, row[0], row[1], first.get("machine"), first.get("latency_quality"),
                             to_json(first)])
            cur.execute("INSERT INTO timings VALUES (?, ?, ?, ?, ?, ?)",
                        [point_id, run_id, time.time(), timing.get("machine"), timing.get("latency_quality"),
                         to_json(timing)])
            shown = timing.get("latency_quality") == "clean" or first.get("latency_quality") != "clean"
            if shown:
                sets = ", ".join(f'"{c}" = ?' for c in cols)
                cur.execute(f"UPDATE points SET {sets} WHERE point_id = ?", [timing.get(c) for c in cols] + [point_id])
            return shown

        return self._write(add)

    def latency_history(self, point_id: int) -> pd.DataFrame:
        """Every timing of a point, oldest first: run_id, measured_at, machine, latency_quality, the
        LATENCY_FIELDS, and `shown` (the newest clean timing, else the newest). One row, its own run's, for a
        point never re-timed (none for a point never timed)."""
        return self._read(lambda cur: queries.latency_history(cur, point_id))

    def retimed(self, point_ids: Iterable[int]) -> set[int]:
        """Those of these points that were timed again (a history of two timings or more), in one query."""
        ids = [int(i) for i in point_ids]
        rows = self._read(lambda cur: cur.execute(
            "SELECT DISTINCT point_id FROM timings WHERE point_id IN (SELECT unnest(?::BIGINT[]))", [ids]).fetchall())
        return {int(r[0]) for r in rows}

    def machines(self) -> dict[str, dict]:
        """machine id -> its fingerprint (engine/core/machine.py), for every machine that timed a point here."""
        rows = self._read(lambda cur: cur.execute("SELECT machine_id, fingerprint FROM machines").fetchall())
        return {machine_id: json.loads(text) for machine_id, text in rows}

    def add_artifact(self, run_id: str, path: str | os.PathLike, kind: str) -> dict:
        """Records a file or directory the run produced, with its size and sha256."""
        size, digest = describe_artifact(path)  # hashed here, not in the writer thread
        row = {"run_id": run_id, "path": str(path), "kind": kind, "bytes": size, "sha256": digest,
               "created_at": time.time()}
        self._write(lambda cur: cur.execute("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?)", list(row.values())))
        return row

    def delete_run(self, run_id: str) -> list[str]:
        """Deletes a finished run and its child runs (a recipe's units), with their points, metrics, events
        and artifact records. A queued or running run is refused. Returns the artifact paths the deleted runs
        recorded: the caller decides what to remove from disk (engine.model.outputs.remove_artifacts)."""
        self.flush()  # deferred rows of the run must not arrive after it is gone
        run = self.get_run(run_id)
        full = run["run_id"]

        def delete(cur) -> list[str]:
            ids = [r[0] for r in cur.execute(
                "WITH RECURSIVE tree(id) AS (SELECT ?::VARCHAR UNION ALL "
                "SELECT r.run_id FROM runs r JOIN tree t ON r.parent_id = t.id) SELECT id FROM tree",
                [full]).fetchall()]
            active = cur.execute("SELECT run_id, status FROM runs WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
                                 "AND status IN ('queued', 'running')", [ids]).fetchall()
            if active:
                raise StoreError(f"run {active[0][0]} is {active[0][1]}: cancel it and wait for it to end "
                                 f"before deleting")
            paths = [r[0] for r in cur.execute(
                "SELECT DISTINCT path FROM artifacts WHERE run_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()]
            cur.execute("DELETE FROM timings WHERE point_id IN (SELECT point_id FROM points WHERE run_id IN "
                        "(SELECT unnest(?::VARCHAR[])))", [ids])
            for table in ("points", "metrics", "events", "artifacts", "runs"):
                cur.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
            return paths

        return self._write(delete)

    def paths_in_use(self) -> dict[str, str]:
        """Paths the remaining runs need, each with why (a queued or running run's input checkpoints, every
        point's artifact and input): what to keep when removing a deleted run's files."""
        return self._read(queries.paths_in_use)

    # ------------------------------------------------------------ reads (DataFrames for the pages)

    def list_runs(self, status: str | Iterable[str] | None = None, kind: str | Iterable[str] | None = None,
                  parent: str | None = None, top_level: bool = False, limit: int | None = None, *,
                  tag: str | None = None, name_contains: str | None = None,
                  unit_keys: Iterable[str] | None = None) -> pd.DataFrame:
        """The runs list, newest first (see store.queries.list_runs)."""
        df = self._read(lambda cur: queries.list_runs(cur, status, kind, parent, top_level, limit, tag=tag,
                                                      name_contains=name_contains, unit_keys=unit_keys))
        return self._as_recovered(df)

    def all_tags(self) -> list[str]:
        """Every tag some run has, sorted."""
        return self._read(queries.all_tags)

    def get_run(self, run_id: str) -> dict:
        """One run (id or unique prefix) as a dict; raises RunNotFound."""
        run = self._read(lambda cur: queries.get_run(cur, run_id))
        if run["status"] in ACTIVE_STATUSES:
            beat = run["heartbeat_at"].timestamp() if run["heartbeat_at"] is not None else None
            reason = orphan_reason(run["run_id"], run["pid"], run["process_started"], run["host"], beat)
            if reason:
                run.update(status="interrupted", message=f"interrupted: {reason}")
                self._found_orphan()
        return run

    def points(self, run_ids: str | Iterable[str] | None = None, expand: bool = True) -> pd.DataFrame:
        return self._read(lambda cur: queries.points(cur, run_ids, expand))

    def run_points(self, run_id: str) -> list[dict]:
        return self._read(lambda cur: queries.run_points(cur, run_id))

    def metric_history(self, run_ids: str | Iterable[str], keys: str | Iterable[str] | None = None) -> pd.DataFrame:
        return self._read(lambda cur: queries.metric_history(cur, run_ids, keys))

    def latest_metrics(self, run_ids: str | Iterable[str] | None = None, keys: str | Iterable[str] | None = None,
                       wide: bool = False) -> pd.DataFrame:
        return self._read(lambda cur: queries.latest_metrics(cur, run_ids, keys, wide))

    def events(self, run_id: str, since: float | None = None) -> pd.DataFrame:
        return self._read(lambda cur: queries.events(cur, run_id, since))

    def artifacts(self, run_ids: str | Iterable[str] | None = None) -> pd.DataFrame:
        return self._read(lambda cur: queries.artifacts(cur, run_ids))

    def _as_recovered(self, df: pd.DataFrame) -> pd.DataFrame:
        """Runs whose process is gone show as the next sweep will record them (a writer asks for it now)."""
        for i in df.index[df["status"].isin(ACTIVE_STATUSES)]:
            beat = df.at[i, "heartbeat_at"]
            reason = orphan_reason(df.at[i, "run_id"], _int_or_none(df.at[i, "pid"]), df.at[i, "process_started"],
                                   df.at[i, "host"], None if pd.isna(beat) else beat.timestamp())
            if reason:
                df.at[i, "status"] = "interrupted"
                df.at[i, "message"] = f"interrupted: {reason}"
                self._found_orphan()
        return df

    def _found_orphan(self) -> None:
        if self._writer is not None and not self.closed:
            self._writer.request_tend()


def _int_or_none(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


# ---------------------------------------------------------------- one writer per file per process

_OPEN: dict[str, Store] = {}
_OPEN_LOCK = threading.Lock()
_EVERY_STORE: weakref.WeakSet[Store] = weakref.WeakSet()


def open_store(path: str | os.PathLike | None = None) -> Store:
    """This process's store for that file (default: default_db_path()), opened for writing once."""
    key = resolve_db_path(path)
    with _OPEN_LOCK:
        store = _OPEN.get(key)
        if store is None or store.closed:
            store = Store(key)
            _OPEN[key] = store
        return store


@contextlib.contextmanager
def reading(path: str | os.PathLike | None = None) -> Iterator[Store]:
    """A store to read from: this process's open one, else a read-only one, closed after.

    A file that still needs a migration gets a writing store instead, which migrates it (for the
    moment that takes, like every write).
    """
    key = resolve_db_path(path)
    with _OPEN_LOCK:
        store = _OPEN.get(key)
    if store is not None and not store.closed:
        yield store
        return
    try:
        store = Store(key, read_only=True)
    except StoreOutdatedError:
        store = Store(key)
    try:
        yield store
    finally:
        store.close()


@atexit.register
def _close_all() -> None:
    """Commits what is queued and closes every store when the interpreter exits (job runners,
    whose atexit hook is registered later and so runs first, have marked their runs by then)."""
    for store in list(_EVERY_STORE):
        with contextlib.suppress(Exception):
            store.close()
