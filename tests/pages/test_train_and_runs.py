"""Training from Launch (its first family): the run executes in the background runner and shows on Runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "lab.duckdb"
    monkeypatch.setenv("COMPRESSION_LAB_DB", str(path))
    yield str(path)
    from engine.run.jobs import shutdown_all

    shutdown_all("test finished")


def open_train_form(epochs: int = 1, dataset: str = "digits") -> AppTest:
    """Launch with its default family, train: the generated form of the train task."""
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/launch.py").run()
    assert not at.exception
    assert at.selectbox(key="launch.family").value == "train"
    at.selectbox(key="launch.form.train.dataset").set_value(dataset)
    at.selectbox(key="launch.form.train.model").set_value("cnn_s")
    at.number_input(key="launch.form.train.train.epochs").set_value(epochs)
    at.button(key="launch.form.train.submit").click().run()
    assert not at.exception
    return at


def test_training_from_launch_queues_a_background_run_that_finishes(db):
    at = open_train_form()
    assert any("Queued 1 run" in s.value for s in at.success), [e.value for e in at.error]

    from engine.run.jobs import get_runner

    runner = get_runner(db)
    assert runner.wait(timeout=120)
    runs = runner.store.list_runs()
    assert list(runs["status"]) == ["finished"] and runs["n_points"].iloc[0] == 1

    at.switch_page("pages/runs.py").run()
    assert not at.exception
    assert "finished" in at.dataframe[0].value["status"].iloc[0]
    at.session_state["runs.selected"] = runs["run_id"].iloc[0]  # what selecting its row in the table sets
    at.run()
    assert not at.exception
    points = points_table(at)
    assert points["method"].iloc[0] == "train" and 0.3 < points["accuracy"].iloc[0] <= 1.0


def test_a_typed_image_folder_that_does_not_exist_fails_its_run_with_a_message(db):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/launch.py").run()
    # the dataset box also takes a typed value (imagefolder:<path>), and so does the architecture box
    # (timm:<name> / torchvision:<name>)
    assert at.selectbox(key="launch.form.train.dataset").proto.accept_new_options
    assert at.selectbox(key="launch.form.train.model").proto.accept_new_options
    # AppTest cannot type into a select box, so the typed value goes through what the page calls
    from engine.core.forms import build_config, form_fields
    from engine.methods.train import TrainTask

    fields = form_fields(TrainTask, choices={"dataset": ["digits"]}, typed={"dataset"})
    values = {f.name: f.default for f in fields} | {"dataset": "imagefolder:/nonexistent/birds", "train.epochs": 1}
    cfg, errors = build_config(TrainTask, fields, values, {})
    assert not errors and cfg.dataset == "imagefolder:/nonexistent/birds"

    from engine.run.jobs import get_runner

    runner = get_runner(db)
    runner.submit("train", cfg)
    assert runner.wait(timeout=60)
    run = runner.store.list_runs().iloc[0]
    assert run["status"] == "failed" and "does not exist" in run["error"]


def test_a_store_path_typed_in_the_browser_cannot_reach_outside_the_store_directory(db, tmp_path, monkeypatch):
    from store import StoreError
    from store.paths import choose_store_file

    base = tmp_path / "stores"
    base.mkdir()
    monkeypatch.setenv("COMPRESSION_LAB_STORE_DIR", str(base))
    outside = tmp_path / "elsewhere" / "new-folder" / "x.duckdb"
    # AppTest drops entrypoint sidebar widgets on a rerun, so the choice is made before the first run
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["db_path"] = str(outside)
    at.run()
    assert not at.exception
    assert any("only inside" in e.value for e in at.sidebar.error)
    assert at.session_state["store_file"] == db  # the operator's default is used instead
    assert not (tmp_path / "elsewhere").exists()  # nothing created on the server
    for bad, words in (("../escape.duckdb", "only inside"), ("notes.txt", "is a .duckdb file"),
                       ("missing/x.duckdb", "does not exist")):
        with pytest.raises(StoreError, match=words):
            choose_store_file(bad, base)
    assert choose_store_file("team.duckdb", base) == str(base / "team.duckdb")
    assert not (base / "team.duckdb").exists() and not (tmp_path / "escape.duckdb").exists()


def points_table(at):
    """The selected run's points table on the Runs page."""
    return next(d.value for d in at.dataframe if {"method", "accuracy", "stage"} <= set(d.value.columns))
