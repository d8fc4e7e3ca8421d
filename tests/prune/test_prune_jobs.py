"""The job runner runs every pruning method and records its points in the store."""

from __future__ import annotations

import pytest

from engine.prune import METHODS, task_name

SMALL = {  # the least work that still runs each method end to end
    "l1_unstructured": {"sparsities": [0.5]},
    "global_unstructured": {"sparsities": [0.5], "repeats": 2},
    "structured": {"ratios": [0.3]},
    "iterative": {"iterations": 1, "finetune": {"mode": "last", "epochs": 1}},
    "lottery_ticket": {"rounds": 1, "epochs": 1},
    "sensitivity": {"ratios": [0.5], "layers": ["fc"]},
}


@pytest.mark.parametrize("method", METHODS)
def test_the_job_runner_records_every_method(method, digits_checkpoint, tmp_path):
    from engine.jobs import run_sync
    from store import open_store

    db = str(tmp_path / "runs.duckdb")
    points = run_sync(task_name(method), {"checkpoint": digits_checkpoint, "latency": False, **SMALL[method]}, db)
    store = open_store(db)
    try:
        run = store.get_run(store.list_runs()["run_id"].iloc[0])
        assert run["status"] == "finished"
        stored = store.run_points(run["run_id"])
        assert len(stored) == len(points) == (2 if method in ("iterative", "lottery_ticket", "sensitivity") else 1)
        assert [p["accuracy"] for p in stored] == pytest.approx([p["accuracy"] for p in points])
    finally:
        store.close()
