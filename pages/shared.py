"""What every page shares: the run store and the process-wide job runner, and error display.

Not a page itself (app.py does not route to it). The runner lives in `st.cache_resource`, so a
rerun, a page switch or a closed tab neither stops a job nor starts it twice.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.analysis.recommend import baseline_choices
from engine.core.errors import UserError
from engine.deploy.capability import calibrate, capability, in_words
from engine.run.jobs import JobRunner, get_runner
from store import Store, StoreError, default_db_path, resolve_db_path
from store.paths import choose_store_file


def choose_store() -> str:
    """Resolves the store file typed in Settings (sidebar): a file typed in the browser must lie in the
    configured store directory (store/paths.py); a refused one is reported in the sidebar and the
    default ($COMPRESSION_LAB_DB, else ./compression_lab.duckdb) is used. Called once per rerun by app.py."""
    default = resolve_db_path(default_db_path())
    chosen = st.session_state.get("db_path")
    path = default
    if chosen and resolve_db_path(chosen) != default:
        try:
            path = choose_store_file(chosen)
        except StoreError as e:
            st.sidebar.error(str(e), icon=":material/error:")
    st.session_state["store_file"] = path
    return path


def db_path() -> str:
    """The run-store file this session uses (see choose_store)."""
    return st.session_state.get("store_file") or resolve_db_path(default_db_path())


@st.cache_resource(show_spinner=False)
def _runner(path: str) -> JobRunner:
    return get_runner(path)


def runner() -> JobRunner:
    return _runner(db_path())


def store() -> Store:
    return runner().store


ENDED_ICONS = {"finished": ":material/check_circle:", "failed": ":material/error:",
               "cancelled": ":material/stop_circle:", "interrupted": ":material/warning:"}
NOTICE_EVERY_S = 3  # how often the sidebar looks for runs that ended


def notify_ended_runs() -> None:
    """A toast, on whichever page the user is, when a run this session saw queued or running ends (finished,
    failed, cancelled, interrupted), once per run. The page polls the store: worker threads never call st.*.
    Only top-level runs are watched (a recipe's or study's units end inside their parent)."""
    try:
        current = store()
        active = current.list_runs(status=["queued", "running"], top_level=True, limit=200)
    except Exception:  # noqa: BLE001, S110 - the page itself says what is wrong with the store
        return
    watched: dict[str, str] = st.session_state.setdefault("notify.watched", {})
    for run_id, name in zip(active["run_id"], active["name"], strict=True):
        watched.setdefault(str(run_id), str(name))
    for run_id in [r for r in watched if r not in set(active["run_id"])]:
        name = watched.pop(run_id)
        try:
            run = current.get_run(run_id)
        except Exception:  # noqa: BLE001, S112 - deleted meanwhile: nothing to announce
            continue
        status = run["status"]
        if status in ENDED_ICONS:
            error = str(run.get("error") or "")
            detail = f": {error[:200]}{'…' if len(error) > 200 else ''}" if status == "failed" and error else ""
            st.toast(f"Run {run['name'] or name} {status}{detail}", icon=ENDED_ICONS[status])


@st.fragment(run_every=NOTICE_EVERY_S)
def run_notices() -> None:
    """app.py draws this in the sidebar: it looks every NOTICE_EVERY_S, also while the user sits on a page."""
    notify_ended_runs()


def show_error(e: Exception) -> None:
    """A user-facing message for expected errors; a short one for bugs (the traceback goes to the log)."""
    if isinstance(e, UserError):
        st.error(str(e), icon=":material/error:")
    else:
        st.error(f"Something went wrong: {type(e).__name__}: {e}", icon=":material/bug_report:")


def through_the_app() -> None:
    """Makes sure app.py routes this run. A page opened by its own URL as the first visit after the server
    started runs without app.py: Streamlit then serves pages/ as a plain folder of pages (its legacy
    multipage mode, PagesManager.uses_pages_directory) until app.py's st.navigation has run once. Switching
    that mode off and rerunning runs app.py, with its sidebar, Settings and chosen store."""
    if "store_file" in st.session_state:
        return
    from streamlit.runtime.pages_manager import PagesManager  # no public switch for this mode

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def open_runner_or_stop() -> JobRunner:
    """The runner, or an error on the page and a stop (e.g. another process holds the store file)."""
    through_the_app()
    try:
        return runner()
    except Exception as e:  # noqa: BLE001 - shown to the user, never a raw traceback
        show_error(e)
        st.stop()


def cpu_capability(key: str) -> None:
    """What this CPU can do with int8 and bf16 (engine/deploy/capability.py), in words: the cached calibration
    of this machine, or a button that runs it (a few seconds)."""
    with st.expander("What this CPU can do (int8, bf16)", icon=":material/memory:"):
        cap = capability()
        if cap is not None:
            st.write(in_words(cap))
            st.caption(f"Measured on {cap.describe} in {cap.seconds:.1f} s.")
        else:
            st.caption("Not measured on this machine yet: one convolution and one linear layer timed at fp32, "
                       "int8 and bf16 tell how much faster int8 (or bf16) can run here before you spend a run.")
        if st.button("Measure now" if cap is None else "Measure again", key=f"{key}.cpu_calibrate",
                     icon=":material/speed:"):
            with st.spinner("Timing fp32, int8 and bf16 kernels (a few seconds)..."):
                try:
                    calibrate()
                except Exception as e:  # noqa: BLE001 - shown as a message, never a traceback
                    show_error(e)
                    return
            st.rerun()


def points_and_baselines(store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The store's points and the checkpoints a Recommend or a Plan can start from; a store that cannot be read
    is a message, and the page stops."""
    try:
        points = store.points(expand=False)
    except Exception as e:  # noqa: BLE001 - shown as a message
        show_error(e)
        st.stop()
    return points, baseline_choices(points)
