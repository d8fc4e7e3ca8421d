"""The ray executor: recipe units as Ray tasks on a local 2-CPU Ray, recorded by the driver like local runs."""

from __future__ import annotations

import copy
import json
import os
import signal
import time

import pytest

from engine.core.errors import Cancelled, ConfigError, UserError
from engine.run.executors import available_executors, make_executor
from engine.run.executors import ray as ray_executor
from engine.run.jobs import create_run, execute_run, resolve_task, run_sync
from engine.run.recipes import RECIPE_TASK, Recipe, RecipeTask
from store import open_store
from tests.test_recipes import CancelAfter, cli

QUICK = {"batch_size": 128, "epochs": 1}
MODEL = {"arch": "cnn_s", "width": 0.5, "latency": False, "train": QUICK}
LEVELS = [0.2, 0.4, 0.6, 0.8]


def sweep(out: str, prune_config: dict | None = None) -> dict:
    """One training stage (the recipe's model), then a 4-level pruning sweep of it."""
    return {"name": "ray-sweep", "dataset": "digits", "out": out, "model": MODEL,
            "stages": [{"name": "prune", "task": "prune.l1_unstructured",
                        "config": prune_config or {"latency": False}, "sweep": {"sparsities": LEVELS}}]}


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray with 2 CPUs for the whole session (it takes ~15 s to start): no dashboard, no usage
    stats, bound to the loopback address."""
    ray = pytest.importorskip("ray", reason="Ray is optional (pip install -r requirements-ray.txt)")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=200 * 1024 * 1024, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------- without Ray, and the options


def test_without_ray_the_ray_executor_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_executor, "ray_installed", lambda: False)
    assert available_executors() == ["local"]
    with pytest.raises(UserError, match=r"pip install -r requirements-ray\.txt"):
        RecipeTask(recipe=sweep(str(tmp_path)), executor="ray")
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(sweep(str(tmp_path / "ckpt"))))
    db = str(tmp_path / "runs.duckdb")
    with pytest.raises(UserError, match=r"needs Ray.*pip install -r requirements-ray\.txt"):
        cli("run", str(path), "--db", db, "--executor", "ray")
    assert not os.path.exists(db)  # refused before anything was recorded


def test_ray_options_are_refused_with_the_local_executor(tmp_path):
    with pytest.raises(ConfigError, match="ray_address, ray_shared apply to the ray executor only"):
        RecipeTask(recipe=sweep(str(tmp_path)), ray_address="auto", ray_shared=True)


def test_paths_a_worker_saw_are_translated_to_the_drivers(tmp_path):
    paths = {"/tmp/compression-lab-ray-x/out": "ckpt/prune-1", "/tmp/compression-lab-ray-x/in/0": "ckpt/model"}
    assert ray_executor.translate({"a": ["/tmp/compression-lab-ray-x/out/sparsity-0.2", "/tmp/compression-lab-ray-x/"
                                         "outside", 3]}, paths) == {"a": ["ckpt/prune-1/sparsity-0.2",
                                                                          "/tmp/compression-lab-ray-x/outside", 3]}
    (tmp_path / "meta.json").write_text(json.dumps({"input_checkpoint": "/tmp/compression-lab-ray-x/in/0",
                                                    "out": "/tmp/compression-lab-ray-x/out/sparsity-0.2",
                                                    "other": "/tmp/compression-lab-ray-x/output"}))
    ray_executor.translate_json_files(tmp_path, paths)
    assert json.loads((tmp_path / "meta.json").read_text()) == {
        "input_checkpoint": "ckpt/model", "out": "ckpt/prune-1/sparsity-0.2", "other": "/tmp/compression-lab-ray-x/output"}


# ---------------------------------------------------------------- on Ray


def test_a_sweep_on_ray_trains_once_and_records_what_the_local_executor_records(ray_cluster, tmp_path):
    on_ray = run_sync(RECIPE_TASK, RecipeTask(recipe=sweep(str(tmp_path / "ray")), executor="ray"),
                      str(tmp_path / "ray.duckdb"))
    local = run_sync(RECIPE_TASK, RecipeTask(recipe=sweep(str(tmp_path / "local"))), str(tmp_path / "local.duckdb"))

    store = open_store(str(tmp_path / "ray.duckdb"))
    runs = store.list_runs()
    parent = runs.query("kind == @RECIPE_TASK")["run_id"].iloc[0]
    assert list(runs.query("kind == 'train'")["status"]) == ["finished"]  # trained once
    children = runs.query("kind == 'prune.l1_unstructured'")
    assert len(children) == 4 and set(children["status"]) == {"finished"} and set(children["parent_id"]) == {parent}
    assert list(children["n_points"]) == [1, 1, 1, 1]
    points = store.points(list(children["run_id"]))
    model = next(p.artifact for p in on_ray if p.extra["recipe_stage"] == "model")
    assert model.startswith(str(tmp_path / "ray")) and set(points["input_checkpoint"]) == {model}
    assert sorted(points["level"]) == LEVELS
    # the checkpoints are on the driver's disk, with the driver's paths in their lineage, and recorded
    for artifact in points["artifact"]:
        meta = json.loads((tmp_path / artifact / "meta.json").read_text())
        assert meta["lineage"][-1]["input_checkpoint"] == model
        assert "compression-lab-ray" not in json.dumps(meta)
    assert set(store.artifacts(list(children["run_id"]))["path"]) == set(points["artifact"])
    # the training's progress, metric history and events came back through the driver
    train = runs.query("kind == 'train'")["run_id"].iloc[0]
    assert "batch_loss" in set(store.metric_history(train)["key"])
    assert store.events(train)["message"].str.contains("Ray worker").any()

    def accuracies(points):
        return {(p.extra["recipe_stage"], p.level): p.accuracy for p in points}

    assert accuracies(on_ray) == accuracies(local)  # same seeds, same numbers


def test_cancelling_a_ray_recipe_keeps_finished_children_and_a_rerun_runs_only_the_rest(ray_cluster, tmp_path):
    db = str(tmp_path / "runs.duckdb")
    # two quick levels (one fine-tuning epoch) and two slow ones (twelve): the cancel, sent when the model and one
    # level have finished, finds the slow ones running however the workers are scheduled (four equal levels on two
    # CPUs could all finish before the driver's cancel reached them on a host that steals CPU)
    doc = sweep(str(tmp_path / "ckpt"), {"latency": False, "finetune": {"mode": "all", "train": {"batch_size": 64}}})
    doc["stages"][0]["sweep"] = {"sparsities": LEVELS[:2], "finetune": {"train": {"epochs": [1, 12]}}}
    config = RecipeTask(recipe=doc, executor="ray")
    store = open_store(db)
    parent = create_run(store, RECIPE_TASK, config)
    with pytest.raises(Cancelled):  # the model and one level finish; then the cancel reaches the rest
        execute_run(store, parent, RECIPE_TASK, config, CancelAfter(store, parent))
    assert store.get_run(parent)["status"] == "cancelled"
    first = store.list_runs().query("kind != @RECIPE_TASK")
    status = dict(zip(first["name"], first["status"], strict=True))
    assert status.pop("ray-sweep/model") == "finished"
    assert "finished" in status.values() and "cancelled" in status.values()
    assert set(status.values()) == {"finished", "cancelled"}, status
    kept = set(first.query("status == 'finished'")["run_id"])

    points = run_sync(RECIPE_TASK, config, db)  # resume: only the cancelled levels run
    after = store.list_runs().query("kind != @RECIPE_TASK")
    new = after[~after["run_id"].isin(first["run_id"])]
    assert len(new) == 5 - len(kept) and set(new["status"]) == {"finished"}
    assert {p.extra["run_id"] for p in points if p.extra["reused"]} == kept


def test_a_child_that_raises_on_its_worker_fails_with_its_message_and_the_others_finish(ray_cluster, tmp_path):
    # from the CLI, with the checkpoints on storage declared shared (no bytes move: workers write the driver's out)
    doc = {"name": "one-fails", "dataset": "digits", "out": str(tmp_path / "ckpt"), "model": MODEL,
           "stages": [{"name": "kd", "task": "distill", "teacher": "model", "from": "none",
                       "config": {"student": "cnn_s", "width": 0.25, "latency": False, "train": QUICK},
                       "sweep": {"train_subset": [64, 100_000, 128]}}]}  # digits has fewer training images
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(doc))
    db = str(tmp_path / "runs.duckdb")
    with pytest.raises(UserError, match=r"1 of 4 recipe units did not finish.*train_subset=100000.*: failed: "
                                        r"train_subset must be"):
        cli("run", str(path), "--db", db, "--executor", "ray", "--ray-cpus", "1", "--ray-shared", "--json")
    runs = open_store(db).list_runs()
    status = dict(zip(runs["name"], runs["status"], strict=True))
    assert status == {"recipe one-fails": "failed", "one-fails/model": "finished",
                      "one-fails/kd train_subset=64": "finished", "one-fails/kd train_subset=128": "finished",
                      "one-fails/kd train_subset=100000": "failed"}
    failed = runs.query("status == 'failed' and kind == 'distill'").iloc[0]
    assert failed["error"].startswith("train_subset must be")
    assert "Traceback" in open_store(db).get_run(failed["run_id"])["traceback"]
    students = open_store(db).points(list(runs.query("kind == 'distill' and status == 'finished'")["run_id"]))
    model = str(tmp_path / "ckpt" / "model-")
    assert students["input_checkpoint"].str.startswith(model).all()  # the teacher, read where the driver put it
    assert students.query("role == 'student'")["artifact"].str.startswith(str(tmp_path / "ckpt" / "kd-")).all()


def test_a_worker_that_dies_fails_its_child_with_the_reason(ray_cluster, tmp_path):
    store = open_store(str(tmp_path / "runs.duckdb"))
    recipe = Recipe.from_dict({**copy.deepcopy(sweep(str(tmp_path / "ckpt"))),
                               "model": {**MODEL, "train": {"epochs": 30, "batch_size": 16}}})
    unit = recipe.units[0]
    _, cfg = resolve_task(unit.task, unit.config)
    run_id = create_run(store, unit.task, cfg)
    store.start_run(run_id)
    executor = make_executor("ray", store)
    handle = executor.submit(unit, cfg, run_id)
    deadline, outcomes = time.monotonic() + 60, []
    while not outcomes and time.monotonic() < deadline:
        outcomes = executor.wait([handle], timeout=0.3)
        started = store.events(run_id)["message"].str.extract(r"pid (\d+)\)")[0].dropna()
        if len(started) and not outcomes:
            os.kill(int(started.iloc[0]), signal.SIGKILL)  # the worker process dies mid-training
            outcomes = executor.wait([handle], timeout=30)
    executor.shutdown()
    assert [o.status for o in outcomes] == ["failed"]
    assert "the Ray worker running it failed" in outcomes[0].error


def test_a_last_push_to_a_briefly_unavailable_hub_is_tried_again_and_never_fails_the_unit(monkeypatch):
    """Seen once on a loaded 2-core machine: the hub actor was briefly unavailable at a unit's last progress push,
    and the unit, whose points travel in its result, failed with ActorUnavailableError."""
    ray = pytest.importorskip("ray", reason="Ray is optional (pip install -r requirements-ray.txt)")
    monkeypatch.setattr(ray_executor.time, "sleep", lambda s: None)
    sent = []

    class Hub:
        class push:  # noqa: N801 - Ray's actor method shape: hub.push.remote(...)
            @staticmethod
            def remote(channel, run_id, items):
                sent.append(list(items))
                return len(sent)

    def get(ref, failures):
        if ref <= failures:
            raise ray.exceptions.ActorUnavailableError("the actor is temporarily unavailable", None)
        return None

    for failures, pushes in ((2, 3), (10, ray_executor.PUSH_TRIES)):
        sent.clear()
        monkeypatch.setattr(ray, "get", lambda ref, failures=failures: get(ref, failures))
        ctx = ray_executor.WorkerContext(Hub(), "channel", "run", interval_s=60)
        ctx.log_event("finished")  # pushes at once (not waited for)
        sent.clear()
        ctx.push(wait=True)  # returns: retried, then given up without raising
        assert len(sent) == pushes
