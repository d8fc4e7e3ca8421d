"""The store's single writer thread: every write in the process goes through it.

Why one writer: a DuckDB commit costs milliseconds (the WAL is synced), so a training loop that
wrote its metrics itself would spend that on every batch; and two threads updating the same run
row conflict. Here callers only enqueue. Metric and event rows and progress updates are
*deferred*: the writer waits `linger_s` for more, then writes everything queued in one
transaction (a group commit; deferred rows alone cause at most four commits a second, each a few
ms of CPU). *Calls* (create a run, end it, add a point) are run in order with
whatever was queued before them, and the caller waits for the commit and gets the result or the
exception. bench/bench_store.py compares this with one cursor per thread.

Each group commit attaches the file for writing and detaches it after (store/sharing.py), so
other processes can read and write it between commits. If another process keeps the file past
the bounded wait, the calls of that batch fail with the lock message and its deferred rows stay
queued for the next commit; only closing the store gives up on them (reported on stderr).
Every `tend_every_s` (and whenever asked), the commit also runs the store's `tend` in its own
transaction: the heartbeat of this process's runs, and marking runs whose process is gone.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import Any

from store.errors import StoreError
from store.sharing import SharedFile

# the column lists of the tables that take deferred rows, in insert order
DEFERRED_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "metrics": (("run_id", "VARCHAR"), ("step", "BIGINT"), ("key", "VARCHAR"), ("value", "DOUBLE"),
                ("time", "DOUBLE")),
    "events": (("run_id", "VARCHAR"), ("time", "DOUBLE"), ("level", "VARCHAR"), ("message", "VARCHAR")),
}


def _bulk_insert_sql(table: str) -> str:
    # unnest of typed lists keeps NaN and Inf (a pandas frame would turn NaN into NULL)
    cols = DEFERRED_TABLES[table]
    lists = ", ".join(f"unnest(${i + 1}::{t}[])" for i, (_, t) in enumerate(cols))
    return f"INSERT INTO {table} ({', '.join(c for c, _ in cols)}) SELECT {lists}"


_INSERT_SQL = {table: _bulk_insert_sql(table) for table in DEFERRED_TABLES}
DEFERRED_OPS = ("row", "progress", "tend")  # ops nobody waits for
_PROGRESS_SQL = ("UPDATE runs SET progress = ?, message = coalesce(?, message), eta_s = ?, heartbeat_at = ? "
                 "WHERE run_id = ? AND status = 'running'")


class Writer:
    def __init__(self, file: SharedFile, linger_s: float = 0.25, max_batch: int = 50_000,
                 tend: Callable[[Any], Any] | None = None, tend_every_s: float = 5.0,
                 needs_tending: Callable[[], bool] = lambda: False) -> None:
        self.file = file
        self.linger_s = linger_s
        self.max_batch = max_batch
        self.tend_every_s = tend_every_s
        self._tend = tend
        self._needs_tending = needs_tending  # True while this process has runs to keep a heartbeat for
        self._next_tend = 0.0  # monotonic time of the next tend
        self._queue: SimpleQueue = SimpleQueue()
        self._held: list[tuple] = []  # deferred ops whose commit found the file busy: first in the next one
        self._lock = threading.Lock()
        self._unapplied = 0  # ops enqueued and not yet committed
        self._urgent = threading.Event()  # a call is waiting
        self._closed = False
        self.busy_s = 0.0  # wall seconds spent writing, waits for the disk and the file lock included
        self.cpu_s = 0.0  # CPU seconds this thread spent writing
        self.transactions = 0
        self.dropped = 0  # deferred rows that could not be written (reported on stderr)
        self.held_commits = 0  # commits that found the file busy past the wait and kept their rows
        self._thread = threading.Thread(target=self._loop, name="compression-lab-store-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ what callers use

    def defer_row(self, table: str, row: tuple) -> None:
        self._put(("row", table, row))

    def defer_progress(self, run_id: str, fraction: float, message: str | None, eta_s: float | None,
                       now: float) -> None:
        self._put(("progress", run_id, (fraction, message, eta_s, now, run_id)))

    def request_tend(self) -> None:
        """Runs `tend` with the next commit (e.g. a read saw a run whose process is gone)."""
        self._put(("tend", None, None))

    def call(self, fn: Callable[[Any], Any]) -> Any:
        """Runs fn(cursor) in the writer after everything queued before it; waits for the commit."""
        future: Future = Future()
        self._put(("call", fn, future))
        return future.result()

    @property
    def pending(self) -> bool:
        return self._unapplied > 0

    def flush(self) -> None:
        """Returns once everything queued so far is committed."""
        if self._unapplied:
            self.call(lambda cur: None)

    def close(self) -> None:
        """Writes what is queued, then stops the thread; later deferred rows are dropped."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._unapplied += 1
            self._queue.put(("stop", None, future))
        self._urgent.set()
        future.result()
        self._thread.join()

    # ------------------------------------------------------------ the thread

    def _put(self, op: tuple) -> None:
        with self._lock:
            if self._closed:
                if op[0] in DEFERRED_OPS:
                    return  # a job still logging while the process exits: nothing to keep it for
                raise StoreError("the run store is closed")
            self._unapplied += 1
            self._queue.put(op)
        if op[0] in ("call", "stop"):
            self._urgent.set()

    def _take(self) -> list[tuple]:
        """The next batch: held ops first, then what is queued; [] when only a tend is due."""
        timeout = self.linger_s if self._held else None  # held rows are retried without new company
        if self._tend is not None and self._needs_tending():
            due_in = max(0.0, self._next_tend - time.monotonic())
            timeout = due_in if timeout is None else min(timeout, due_in)
        try:
            ops = [self._queue.get(timeout=timeout)]
        except Empty:
            ops = []
        if ops and ops[0][0] not in ("call", "stop"):
            # deferred rows wait for company; only a call cuts the wait short, so a training loop's
            # puts do not wake this thread (and take the GIL from the loop) once per row
            self._urgent.wait(self.linger_s)
        self._urgent.clear()
        while len(ops) < self.max_batch:
            try:
                ops.append(self._queue.get_nowait())
            except Empty:
                break
        ops, self._held = self._held + ops, []
        return ops

    def _loop(self) -> None:
        while True:
            ops = self._take()
            stop = any(op[0] == "stop" for op in ops)
            tend = self._tend is not None and (
                any(op[0] == "tend" for op in ops) or (time.monotonic() >= self._next_tend
                                                       and (bool(ops) or self._needs_tending())))
            if not ops and not tend:
                continue
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                self._commit(ops, tend, stop)
            except Exception as e:  # noqa: BLE001 - the writer must outlive any one bad batch
                print(f"[store] writer error: {type(e).__name__}: {e}", file=sys.stderr)
                for op in ops:  # nobody waits for ever
                    if op[0] in ("call", "stop") and not op[2].done():
                        op[2].set_exception(e)
            self.busy_s += time.perf_counter() - t0
            self.cpu_s += time.thread_time() - c0
            with self._lock:
                self._unapplied -= len(ops) - len(self._held)
            if stop:
                return

    def _commit(self, ops: list[tuple], tend: bool, stop: bool) -> None:
        """Attaches the file for writing, applies the batch (and the tend), detaches; a busy file keeps
        the deferred ops for the next commit and fails the calls with the lock message."""
        applied = False
        try:
            if tend:
                self._next_tend = time.monotonic() + self.tend_every_s
            with self.file.use(write=True) as cur:
                if ops:
                    self._apply(cur, ops)
                applied = True
                if tend:
                    done: Future = Future()
                    self._apply(cur, [("call", self._tend, done)])
                    if done.exception() is not None:
                        print(f"[store] could not tend the runs: {done.exception()}", file=sys.stderr)
        except StoreError as e:
            if applied:
                raise
            for op in ops:
                if op[0] == "call":
                    op[2].set_exception(e)
                elif op[0] == "stop":
                    op[2].set_result(None)
            deferred = [op for op in ops if op[0] in DEFERRED_OPS]
            if stop:
                self.dropped += len(deferred)
                print(f"[store] {len(deferred)} queued row(s) not written at close: {e}", file=sys.stderr)
                return
            if deferred and not self.held_commits:
                print(f"[store] keeping {len(deferred)} row(s) queued until the file is free: {e}", file=sys.stderr)
            self.held_commits += 1
            self._held = deferred

    def _apply(self, cur, ops: list[tuple]) -> None:
        """One transaction for the whole batch; if it fails, again in parts so only the bad op fails."""
        try:
            cur.execute("BEGIN TRANSACTION")
            results = self._run(cur, ops)
            cur.execute("COMMIT")
            self.transactions += 1
        except Exception as e:  # noqa: BLE001 - reported to the caller that made the bad op
            with contextlib.suppress(Exception):  # the transaction may already be gone
                cur.execute("ROLLBACK")
            if len(ops) > 1:
                # the deferred rows together (they rarely fail), then each call alone
                calls = [op for op in ops if op[0] in ("call", "stop")]
                deferred = [op for op in ops if op[0] not in ("call", "stop")]
                groups = [deferred] + [[op] for op in calls] if calls and deferred else [[op] for op in ops]
                for group in groups:
                    self._apply(cur, group)
                return
            op = ops[0]
            if op[0] in ("call", "stop"):
                op[2].set_exception(e)
            elif op[0] != "tend":
                self.dropped += 1
                print(f"[store] could not write a {op[1]} row: {e}", file=sys.stderr)
            return
        for future, result in results:
            future.set_result(result)

    def _run(self, cur, ops: list[tuple]) -> list[tuple[Future, Any]]:
        rows: dict[str, list[tuple]] = {}
        progress: dict[str, tuple] = {}
        results: list[tuple[Future, Any]] = []

        def write_deferred() -> None:
            for table, table_rows in rows.items():
                cur.execute(_INSERT_SQL[table], [list(col) for col in zip(*table_rows)])
            if progress:
                cur.executemany(_PROGRESS_SQL, list(progress.values()))
            rows.clear()
            progress.clear()

        for op in ops:
            kind = op[0]
            if kind == "row":
                rows.setdefault(op[1], []).append(op[2])
            elif kind == "progress":
                progress[op[1]] = op[2]  # only the latest progress of a run matters
            elif kind == "call":
                write_deferred()
                results.append((op[2], op[1](cur)))
            elif kind == "stop":
                results.append((op[2], None))
        write_deferred()
        return results
