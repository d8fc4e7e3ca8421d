"""A run store filled once per test session with real runs, for the dashboard's page tests.

`lab_store` trains cnn_s on digits, then records a magnitude-pruning sweep (two repeats) and a simulated
quantization sweep from it: real points of three families with artifacts on disk. `db` copies that store
into the test's own directory and points $COMPRESSION_LAB_DB at the copy, so a page test may write to it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from store import open_store


@pytest.fixture(scope="session")
def lab_store(tmp_path_factory) -> dict:
    from engine.run.jobs import run_sync

    root = tmp_path_factory.mktemp("lab")
    db = str(root / "lab.duckdb")
    ckpt = str(root / "cnn_s")
    run_sync("train", {"dataset": "digits", "model": "cnn_s", "out": ckpt, "latency": False,
                       "train": {"epochs": 3, "seed": 0}}, db, name="train cnn_s digits")
    run_sync("prune.global_unstructured", {"checkpoint": ckpt, "sparsities": [0.0, 0.3, 0.6, 0.9], "repeats": 2,
                                           "latency": False, "out": str(root / "pruned")}, db,
             name="prune cnn_s")
    run_sync("quantize.fake", {"checkpoint": ckpt, "bits": [2, 4, 8, 32], "latency": False,
                               "out": str(root / "fake")}, db, name="fake-quant cnn_s")
    store = open_store(db)
    try:
        runs = store.list_runs()
    finally:
        store.close()
    return {"db": db, "root": str(root), "checkpoint": ckpt, "run_ids": list(runs["run_id"])}


@pytest.fixture(autouse=True, scope="module")
def release_cached_resources():
    """After each page module, release what its pages cached (`on_release` closes the What-if's background
    thread), so no page's work runs on beside the next module's tests."""
    yield
    import streamlit as st

    st.cache_resource.clear()


@pytest.fixture(autouse=True)
def private_store_dir(tmp_path, monkeypatch) -> None:
    """Every page test writes (stores, checkpoints from the app, uploads) under its own tmp dir, never into the
    repository's working directory; `db` below points the store at its copy in the same dir."""
    monkeypatch.setenv("COMPRESSION_LAB_STORE_DIR", str(tmp_path))
    monkeypatch.setenv("COMPRESSION_LAB_DB", str(tmp_path / "compression_lab.duckdb"))


@pytest.fixture
def db(lab_store, tmp_path, monkeypatch) -> str:
    """A private copy of the pre-filled store, set as the app's default store."""
    path = tmp_path / "lab.duckdb"
    shutil.copy(lab_store["db"], path)
    monkeypatch.setenv("COMPRESSION_LAB_DB", str(path))
    monkeypatch.setenv("COMPRESSION_LAB_STORE_DIR", str(tmp_path))
    yield str(path)
    from engine.run.jobs import shutdown_all

    shutdown_all("test finished")


APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_page(page: str, timeout: float = 60) -> AppTest:
    """The app, switched to `page` (e.g. "pages/whatif.py"), drawn without an exception."""
    at = AppTest.from_file(APP, default_timeout=timeout).run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest) -> dict:
    """The page's one Plotly figure, as its JSON spec."""
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)
