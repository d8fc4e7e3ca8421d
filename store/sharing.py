"""One store file shared by every process: each holds it only for the moment it reads or writes.

DuckDB lets one process write a file, or several processes read it, and takes that lock when the
file is opened; it never waits for a lock, it refuses. So nothing here keeps the file open: a
group commit attaches it for writing and detaches it (which checkpoints the WAL and releases the
lock), a read attaches it read-only. Starting a DuckDB instance costs ~20 ms of CPU (its function
catalog) while attaching a file to a running one costs under 1 ms, so each process keeps one
in-memory DuckDB per file for its whole life (the *host*) and attaches the file to it as `lab`.

A file that another process holds is retried with a short randomised backoff for up to `wait_s`
(LOCK_WAIT_S, or $COMPRESSION_LAB_DB_WAIT_S); then StoreLockedError names the holder. Inside a
process, readers share one read-only attachment; a writer waits for them to finish (new readers
queue behind a waiting writer) and readers that come while it writes share its attachment.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import duckdb

from store.errors import StoreError, StoreLockedError

LOCK_WAIT_S = 5.0  # how long a read or a commit waits for another process to let go of the file
WAIT_ENV = "COMPRESSION_LAB_DB_WAIT_S"
_FIRST_RETRY_S, _LAST_RETRY_S = 0.002, 0.05  # the backoff doubles from the first to the last


def lock_wait_s() -> float:
    """$COMPRESSION_LAB_DB_WAIT_S if set (seconds, >= 0), else LOCK_WAIT_S."""
    text = os.environ.get(WAIT_ENV)
    if not text:
        return LOCK_WAIT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise StoreError(f"${WAIT_ENV} must be a number of seconds >= 0, got {text!r}")
    return value


def lock_message(path: str, duck_message: str, read_only: bool, waited_s: float) -> str:
    m = re.search(r"held in (.+?) \(PID (\d+)\)", duck_message)
    holder = f"process {m.group(2)} ({m.group(1)})" if m else "another process"
    waited = f" (waited {waited_s:.1f} s)"
    if read_only:
        return (f"cannot read the run store {path}: {holder} has it open for writing{waited}, and DuckDB lets no "
                "other process open a file while one writes to it; a Compression Lab process lets go within a "
                f"moment, so that one is something else (or set ${WAIT_ENV} higher): stop it and retry")
    return (f"the run store {path} is in use by {holder}{waited}; DuckDB lets one process write to a file at a "
            "time. A Compression Lab process lets go within a moment, so that one is something else (or set "
            f"${WAIT_ENV} higher): stop it, or use another file: --db OTHER.duckdb")


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _not_a_folder(path: Path) -> Path | None:
    """The first ancestor of path that exists and is not a directory (e.g. a file named like a folder)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


class SharedFile:
    """The store file of one path in this process; `use(write)` gives a cursor while it is attached."""

    ALIAS = "lab"

    def __init__(self, path: str, wait_s: float | None = None) -> None:
        self.path = path
        self.wait_s = lock_wait_s() if wait_s is None else wait_s
        self.waits: deque[float] = deque(maxlen=100_000)  # seconds each attach took, retries included
        self.retried = 0  # attaches that found the file held by another process at least once
        self._host: duckdb.DuckDBPyConnection | None = None
        self._cond = threading.Condition()
        self._mode: str | None = None  # None (detached), "read" or "write"
        self._users = 0
        self._writers_waiting = 0
        self._closed = False

    @contextlib.contextmanager
    def use(self, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the attached file (read-only unless `write`), detached when the last user is done."""
        self._acquire(write)
        try:
            cur = self._host.cursor()
            try:
                cur.execute(f"USE {self.ALIAS}")
                yield cur
            finally:
                cur.close()
        finally:
            self._release()

    def close(self) -> None:
        """Closes the host (after the last user); the file is not attached by then."""
        with self._cond:
            while self._users:
                self._cond.wait()
            self._closed = True
            if self._host is not None:
                self._host.close()
                self._host = None

    # ------------------------------------------------------------ attach and detach

    def _acquire(self, write: bool) -> None:
        with self._cond:
            if write:
                self._writers_waiting += 1
            try:
                while True:
                    if self._closed:
                        raise StoreError(f"the run store {self.path} is closed")
                    if self._mode == "write" or (self._mode == "read" and not write and not self._writers_waiting):
                        self._users += 1
                        return
                    if self._users == 0 and (write or not self._writers_waiting):
                        if self._mode is not None:
                            self._detach()
                        self._attach(write)
                        self._users = 1
                        return
                    self._cond.wait()
            finally:
                if write:
                    self._writers_waiting -= 1
                    self._cond.notify_all()  # readers queued behind this writer look again

    def _release(self) -> None:
        with self._cond:
            self._users -= 1
            if self._users == 0:
                self._detach()
                self._cond.notify_all()

    def _detach(self) -> None:
        self._mode = None
        self._host.execute(f"DETACH {self.ALIAS}")  # a writer's detach checkpoints the WAL into the file

    def _attach(self, write: bool) -> None:
        path = Path(self.path)
        if write:
            self._make_folder(path)
        elif not path.exists():
            raise StoreError(f"no run store at {self.path}: runs are recorded there by the app, or by a command "
                             f"given --db {self.path}")
        if self._host is None:
            # one thread: the store's queries are small, and a detach's checkpoint then runs in (and is
            # counted as CPU of) the writer thread instead of waking a pool (measured: less CPU per commit)
            self._host = duckdb.connect(":memory:", config={"threads": 1})
        sql = f"ATTACH {_sql_text(self.path)} AS {self.ALIAS}" + ("" if write else " (READ_ONLY)")
        t0 = time.monotonic()
        delay = _FIRST_RETRY_S
        while True:
            try:
                self._host.execute(sql)
                break
            except duckdb.IOException as e:
                waited = time.monotonic() - t0
                if "lock" not in str(e).lower():
                    raise StoreError(f"cannot open the run store {self.path}: {_first_line(e)}") from None
                if waited + delay > self.wait_s:
                    self.waits.append(waited)
                    error = StoreLockedError(lock_message(self.path, str(e), not write, waited))
                    error.duck_message, error.waited_s = str(e), waited
                    raise error from None
                if delay == _FIRST_RETRY_S:
                    self.retried += 1
                time.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not security
                delay = min(2 * delay, _LAST_RETRY_S)
            except duckdb.Error as e:
                if "already attached" in str(e) or "file handle conflict" in str(e).lower():
                    raise StoreError(f"{self.path} is already open in this process outside the store (a "
                                     "duckdb.connect of it?); let the store open it: store.open_store / "
                                     "store.reading") from None
                raise StoreError(f"{self.path} is not a run store DuckDB can open: {_first_line(e)}") from None
        self.waits.append(time.monotonic() - t0)
        self._mode = "write" if write else "read"

    def _make_folder(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            blocker = _not_a_folder(path)
            why = f"{blocker} is a file, not a folder" if blocker else f"{e.strerror or e} ({path.parent})"
            raise StoreError(f"cannot create the run store {self.path}: {why}") from None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# ---------------------------------------------------------------- one SharedFile per path per process

_FILES: dict[str, tuple[SharedFile, int]] = {}
_FILES_LOCK = threading.Lock()


def share(path: str, wait_s: float | None = None) -> SharedFile:
    """This process's SharedFile for that (resolved) path; every `share` is paired with an `unshare`."""
    with _FILES_LOCK:
        file, users = _FILES.get(path, (None, 0))
        if file is None:
            file = SharedFile(path, wait_s)
        elif wait_s is not None:
            file.wait_s = wait_s
        _FILES[path] = (file, users + 1)
        return file


def unshare(file: SharedFile) -> None:
    """Drops one user; the last one closes the host."""
    with _FILES_LOCK:
        current, users = _FILES.get(file.path, (None, 0))
        if current is not file:
            return
        if users > 1:
            _FILES[file.path] = (file, users - 1)
            return
        del _FILES[file.path]
    file.close()
