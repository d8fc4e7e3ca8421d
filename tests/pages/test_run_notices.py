"""A toast when a run ends, on whichever page the user is (app.py's sidebar polls the store; workers never call st.*)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from store import open_store
from tests.pages.conftest import APP


def toasts(at: AppTest) -> list[str]:
    return [t.value for t in at.toast]


# what app.py draws in its sidebar on every page (AppTest reruns a st.navigation app's page, not app.py's frame)
SIDEBAR = """
import streamlit as st
from pages.shared import choose_store, run_notices
choose_store()
with st.sidebar:
    run_notices()
"""


def test_a_run_that_ends_between_two_reruns_is_announced_once_on_any_page(db):
    store = open_store(db)
    queued = store.create_run("quantize.fake", {}, name="my 4-bit sweep", status="queued")
    failing = store.create_run("train", {}, name="a doomed training", status="queued")
    at = AppTest.from_string(SIDEBAR, default_timeout=60).run()
    assert not at.exception, at.exception
    assert not [t for t in toasts(at) if "my 4-bit sweep" in t or "doomed" in t]  # still queued: nothing yet

    store.start_run(queued)
    store.end_run(queued, "finished")
    at.run()
    assert [t for t in toasts(at) if "my 4-bit sweep" in t] == ["Run my 4-bit sweep finished"], toasts(at)

    store.start_run(failing)
    store.end_run(failing, "failed", error="CUDA out of memory")
    at.run()
    assert not at.exception, at.exception
    assert [t for t in toasts(at) if "doomed" in t] == ["Run a doomed training failed: CUDA out of memory"]
    assert not [t for t in toasts(at) if "my 4-bit sweep" in t]  # announced once

    at.run()
    assert not [t for t in toasts(at) if "my 4-bit sweep" in t or "doomed" in t], toasts(at)


def test_runs_that_had_ended_before_the_session_saw_them_are_not_announced(db):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    assert not toasts(at)  # the pre-filled store's runs all finished before
