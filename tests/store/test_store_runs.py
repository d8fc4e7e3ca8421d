"""What the store keeps about a run and gives back to the pages: lifecycle, points, metrics, queries."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from engine.core.errors import ConfigError
from engine.core.point import METRIC_FIELDS
from store import RunNotFound, StoreError


def test_a_run_goes_from_queued_to_finished_with_its_times_and_process(store):
    run_id = store.create_run("train", {"model": "cnn_s", "train": {"seed": 3}}, seed=3, device="cpu")
    run = store.get_run(run_id)
    assert run["status"] == "queued" and run["started_at"] is None and run["config"]["train"]["seed"] == 3
    assert store.start_run(run_id)
    store.set_progress(run_id, 0.5, "epoch 1/2", eta_s=3.0)
    run = store.get_run(run_id)
    assert (run["status"], run["progress"], run["message"], run["eta_s"]) == ("running", 0.5, "epoch 1/2", 3.0)
    assert run["pid"] > 0 and run["host"] and run["started_at"] >= run["created_at"]
    assert store.end_run(run_id, "finished")
    run = store.get_run(run_id)
    assert run["status"] == "finished" and run["progress"] == 1.0 and run["ended_at"] >= run["started_at"]


def test_the_first_end_status_wins_and_late_progress_is_ignored(store):
    run_id = store.create_run("train", {})
    store.start_run(run_id)
    assert store.end_run(run_id, "cancelled", message="stopped")
    assert not store.end_run(run_id, "failed", error="too late")
    store.set_progress(run_id, 0.9, "late")
    run = store.get_run(run_id)
    assert (run["status"], run["error"], run["message"]) == ("cancelled", None, "stopped")
    assert not store.start_run(run_id)


def test_a_failed_run_keeps_its_error_and_traceback(store):
    run_id = store.create_run("prune", {})
    store.start_run(run_id)
    store.end_run(run_id, "failed", error="RuntimeError: boom", traceback="Traceback...\nRuntimeError: boom")
    run = store.get_run(run_id)
    assert run["status"] == "failed" and run["error"] == "RuntimeError: boom" and "Traceback" in run["traceback"]


def test_bad_statuses_and_levels_name_the_allowed_values(store):
    run_id = store.create_run("train", {})
    with pytest.raises(ConfigError, match="status must be one of finished, failed, cancelled, interrupted"):
        store.end_run(run_id, "done")
    with pytest.raises(ConfigError, match="status must be one of queued, running"):
        store.create_run("train", {}, status="finished")
    with pytest.raises(ConfigError, match="status must be one of queued, running, finished"):
        store.list_runs(status="stuck")
    with pytest.raises(ConfigError, match="level must be one of"):
        store.log_event(run_id, "x", level="loud")
    with pytest.raises(TypeError, match="metric 'acc' must be a number"):
        store.log_metrics(run_id, {"acc": "high"}, step=1)


def test_a_point_comes_back_as_the_dict_that_was_logged(store, point):
    run_id = store.create_run("prune", {})
    store.add_point(run_id, point)
    (back,) = store.run_points(run_id)
    assert back == point
    df = store.points(run_id)
    assert set(METRIC_FIELDS) <= set(df.columns)
    row = df.iloc[0]
    assert row["accuracy"] == point["accuracy"] and row["macs"] == point["macs"] and row["method"] == "prune"
    assert row["params.sparsity"] == 0.4 and row["params.schedule.steps"] == 3
    assert row["accuracy_std"] == 0.002 and row["input_checkpoint"] == "checkpoints/in" and row["note"] == "x"
    assert row["family"] == "prune" and row["stage"] == "variant" and row["level"] == 0.4
    assert pd.isna(row["latency_ms_b1"])  # not timed is stored as NULL, never as a number


def test_nan_and_inf_round_trip_in_metrics_points_and_params(store, point):
    run_id = store.create_run("train", {"lr": float("nan")})
    values = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "tiny": 5e-324, "neg0": -0.0}
    store.log_metrics(run_id, values, step=1)
    nan_point = {**point, "loss": float("nan"), "accuracy": float("inf"), "accuracy_std": float("nan"),
                 "params": {"x": float("-inf")}}
    store.add_point(run_id, nan_point)
    history = store.metric_history(run_id).set_index("key")["value"]
    assert math.isnan(history["nan"]) and history["inf"] == math.inf and history["-inf"] == -math.inf
    assert history["tiny"] == 5e-324 and math.copysign(1, history["neg0"]) == -1
    (back,) = store.run_points(run_id)
    assert math.isnan(back["loss"]) and back["accuracy"] == math.inf and math.isnan(back["accuracy_std"])
    assert back["params"] == {"x": -math.inf}
    assert math.isnan(store.get_run(run_id)["config"]["lr"])
    latest = store.latest_metrics(run_id).set_index("key")["value"]
    assert math.isnan(latest["nan"]) and latest["-inf"] == -math.inf


def test_latest_metrics_take_the_highest_step(store):
    a, b = store.create_run("train", {}), store.create_run("train", {})
    for step, v in [(1, 0.5), (3, 0.9), (2, 0.7)]:
        store.log_metrics(a, {"val_accuracy": v, "val_loss": 1 - v}, step=step)
    store.log_metrics(b, {"val_accuracy": 0.4}, step=1)
    long = store.latest_metrics([a, b], keys="val_accuracy")
    assert dict(zip(long.run_id, long.value)) == {a: 0.9, b: 0.4}
    assert dict(zip(long.run_id, long.step)) == {a: 3, b: 1}
    wide = store.latest_metrics(wide=True).set_index("run_id")
    assert wide.loc[a, "val_accuracy"] == 0.9 and math.isclose(wide.loc[a, "val_loss"], 0.1)
    assert pd.isna(wide.loc[b, "val_loss"])
    history = store.metric_history(a, keys="val_accuracy")
    assert list(history.step) == [1, 2, 3] and list(history.value) == [0.5, 0.7, 0.9]


def test_runs_list_filters_by_status_kind_and_parent(store, point):
    sweep = store.create_run("sweep", {})
    child1 = store.create_run("prune", {}, parent_id=sweep)
    child2 = store.create_run("prune", {}, parent_id=sweep)
    other = store.create_run("train", {})
    store.start_run(child1)
    store.end_run(child1, "finished")
    store.add_point(child1, point)
    store.add_point(child1, point)
    assert set(store.list_runs().run_id) == {sweep, child1, child2, other}
    assert list(store.list_runs(status="finished").run_id) == [child1]
    assert set(store.list_runs(status=["queued", "finished"], kind="prune").run_id) == {child1, child2}
    assert set(store.list_runs(parent=sweep).run_id) == {child1, child2}
    assert set(store.list_runs(top_level=True).run_id) == {sweep, other}
    assert len(store.list_runs(limit=2)) == 2
    df = store.list_runs().set_index("run_id")
    assert df.loc[child1, "n_points"] == 2 and df.loc[other, "n_points"] == 0
    assert df.loc[child1, "duration_s"] >= 0 and pd.isna(df.loc[other, "duration_s"])
    assert str(df["created_at"].dtype).startswith("datetime64") and str(df["created_at"].dt.tz) == "UTC"
    assert set(store.points([child1, other]).run_id) == {child1}


def test_a_parent_runs_point_count_includes_its_children_and_grandchildren(store, point):
    # issue #22: a study row showed 0 points (its points are its units', stored under the child runs)
    study = store.create_run("study", {})
    recipe = store.create_run("recipe", {}, parent_id=study)
    unit = store.create_run("prune", {}, parent_id=recipe)
    sibling = store.create_run("train", {}, parent_id=study)
    alone = store.create_run("train", {})
    for run_id, n in ((unit, 2), (sibling, 1), (study, 1), (alone, 3)):
        for _ in range(n):
            store.add_point(run_id, point)
    counts = store.list_runs().set_index("run_id")["n_points"]
    assert counts[unit] == 2 and counts[recipe] == 2 and counts[sibling] == 1 and counts[study] == 4
    assert counts[alone] == 3 and str(counts.dtype).startswith("int")
    assert store.list_runs(top_level=True).set_index("run_id").loc[study, "n_points"] == 4
    assert list(store.list_runs(parent=study).set_index("run_id").loc[[recipe, sibling], "n_points"]) == [2, 1]


def test_a_run_is_found_by_a_unique_prefix_only(store):
    run_id = store.create_run("train", {})
    assert store.get_run(run_id[:5])["run_id"] == run_id
    with pytest.raises(RunNotFound, match="no run with id 'zzz'"):
        store.get_run("zzz")


def test_events_and_artifacts_are_kept_in_order(store, tmp_path):
    run_id = store.create_run("train", {})
    for i in range(5):
        store.log_event(run_id, f"line {i}", "warning" if i == 3 else "info")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"x" * 1000)
    (ckpt / "meta.json").write_text("{}")
    row = store.add_artifact(run_id, ckpt, "checkpoint")
    ev = store.events(run_id)
    assert list(ev.message) == [f"line {i}" for i in range(5)] and ev.level.iloc[3] == "warning"
    art = store.artifacts(run_id).iloc[0]
    assert art["bytes"] == 1002 and art["sha256"] == row["sha256"] and len(art["sha256"]) == 64
    (ckpt / "meta.json").write_text("{} ")  # a changed file changes the digest
    assert store.add_artifact(run_id, ckpt, "checkpoint")["sha256"] != row["sha256"]


def test_a_closed_or_read_only_store_refuses_writes(db_path):
    from store import Store

    s = Store(db_path)
    run_id = s.create_run("train", {})
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.create_run("train", {})
    ro = Store(db_path, read_only=True)
    try:
        assert list(ro.list_runs().run_id) == [run_id]
        with pytest.raises(StoreError, match="read-only"):
            ro.log_metrics(run_id, {"a": 1}, step=1)
    finally:
        ro.close()


def test_a_missing_or_foreign_file_gets_a_clear_message(tmp_path):
    from store import Store

    with pytest.raises(StoreError, match="no run store at"):
        Store(tmp_path / "absent.duckdb", read_only=True)
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="junk.duckdb"):
        Store(junk)


def test_default_path_comes_from_the_environment(monkeypatch, tmp_path):
    from store import default_db_path, resolve_db_path

    monkeypatch.delenv("COMPRESSION_LAB_DB", raising=False)
    assert default_db_path() == "./compression_lab.duckdb"
    monkeypatch.setenv("COMPRESSION_LAB_DB", str(tmp_path / "lab.duckdb"))
    assert resolve_db_path(None) == str(tmp_path / "lab.duckdb")
    assert resolve_db_path("x.duckdb").endswith("/x.duckdb")


def test_a_bad_write_fails_alone_and_the_rest_of_its_batch_is_kept(store, point):
    run_id = store.create_run("train", {})
    for step in range(100):
        store.log_metrics(run_id, {"loss": step}, step=step)
    with pytest.raises(Exception, match="accuracy|Could not convert|Conversion"):
        store.add_point(run_id, {**point, "accuracy": "very good"})
    store.add_point(run_id, point)
    assert len(store.metric_history(run_id)) == 100 and len(store.run_points(run_id)) == 1


def test_points_of_many_runs_spread_each_runs_own_params(store, point):
    runs = [store.create_run("prune", {}) for _ in range(3)]
    for i, run_id in enumerate(runs):
        store.add_point(run_id, {**point, "params": {"sparsity": i / 10, **({"bits": 4} if i == 1 else {})}})
    df = store.points(runs)
    assert list(df["params.sparsity"]) == [0.0, 0.1, 0.2]
    assert df["params.bits"].iloc[1] == 4 and df["params.bits"].isna().sum() == 2
    assert list(df.run_id) == runs
