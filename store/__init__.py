"""The run store: every run, its metric history, points, artifacts and events in one DuckDB file.

The only package that imports duckdb. Pages and the CLI read DataFrames from `Store`; the job
runner (engine/run/jobs.py) writes through it. No process keeps the file open: each read and each
group commit takes it for a moment (store/sharing.py), so the app and any number of terminals
record and read runs in one file at once.

    from store import open_store, reading
    store = open_store()                      # this process's writer for ./compression_lab.duckdb
    runs = store.list_runs(status="finished")
    pts = store.points(runs.run_id)
    with reading("other.duckdb") as s:        # read-only, also while the app records runs in it
        s.metric_history(run_id)
"""

from store.errors import RunNotFound, StoreError, StoreLockedError, StoreOutdatedError, StoreVersionError
from store.labels import check_name, check_note, check_tags, parse_tags, read_labels
from store.schema import ACTIVE_STATUSES, RUN_STATUSES, SCHEMA_VERSION
from store.store import (
    DB_ENV,
    DEFAULT_DB_PATH,
    END_STATUSES,
    Store,
    default_db_path,
    open_store,
    reading,
    resolve_db_path,
)

__all__ = [
    "ACTIVE_STATUSES", "DB_ENV", "DEFAULT_DB_PATH", "END_STATUSES", "RUN_STATUSES", "SCHEMA_VERSION", "RunNotFound",
    "Store", "StoreError", "StoreLockedError", "StoreOutdatedError", "StoreVersionError", "default_db_path",
    "open_store", "reading", "resolve_db_path", "check_name", "check_note", "check_tags", "parse_tags",
    "read_labels",
]
