"""What every page shares: the run store and the process-wide job runner, and error display.

Not a page itself (app.py does not route to it). The runner lives in `st.cache_resource`, so a
rerun, a page switch or a closed tab neither stops a job nor starts it twice.
"""

from __future__ import annotations

import streamlit as st

from engine.errors import UserError
from engine.jobs import JobRunner, get_runner
from store import Store, default_db_path, resolve_db_path


def db_path() -> str:
    """The store file chosen in Settings (sidebar), else $COMPRESSION_LAB_DB, else ./compression_lab.duckdb."""
    return resolve_db_path(st.session_state.get("db_path") or default_db_path())


@st.cache_resource(show_spinner=False)
def _runner(path: str) -> JobRunner:
    return get_runner(path)


def runner() -> JobRunner:
    return _runner(db_path())


def store() -> Store:
    return runner().store


def show_error(e: Exception) -> None:
    """A user-facing message for expected errors; a short one for bugs (the traceback goes to the log)."""
    if isinstance(e, UserError):
        st.error(str(e), icon=":material/error:")
    else:
        st.error(f"Something went wrong: {type(e).__name__}: {e}", icon=":material/bug_report:")


def open_runner_or_stop() -> JobRunner:
    """The runner, or an error on the page and a stop (e.g. another process holds the store file)."""
    try:
        return runner()
    except Exception as e:  # noqa: BLE001 - shown to the user, never a raw traceback
        show_error(e)
        st.stop()
