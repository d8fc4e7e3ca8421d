"""The job runner runs every pruning method and records its typed points in the store."""

from __future__ import annotations

import pytest

from engine.methods.registry import family_methods

SMALL = {  # the least work that still runs each method end to end
    "l1_unstructured": {"sparsities": [0.5]},
    "global_unstructured": {"sparsities": [0.5], "repeats": 2},
    "structured": {"ratios": [0.3]},
    "iterative": {"iterations": 1, "finetune": {"mode": "last", "samples": 300}},
    "lottery_ticket": {"rounds": 1, "samples": 300, "train": {"epochs": 1}},
    "sensitivity": {"ratios": [0.5], "layers": ["fc"]},
    "nm": {"finetune": {"mode": "last", "samples": 300}},
}


def test_every_registered_method_has_a_small_setting_here():
    assert sorted(family_methods("prune").names()) == sorted(SMALL)


@pytest.mark.parametrize("method", sorted(SMALL))
def test_the_job_runner_records_every_method(method, digits_checkpoint, tmp_path):
    from engine.run.jobs import run_sync
    from store import open_store

    db = str(tmp_path / "runs.duckdb")
    task = family_methods("prune").get(method).task
    points = run_sync(task, {"checkpoint": digits_checkpoint, "latency": False, "out": str(tmp_path / "out"),
                             **SMALL[method]}, db)
    store = open_store(db)
    try:
        run = store.get_run(store.list_runs()["run_id"].iloc[0])
        assert run["status"] == "finished"
        stored = store.run_points(run["run_id"])
        assert len(stored) == len(points) == (2 if method in ("iterative", "lottery_ticket", "sensitivity", "nm") else 1)
        assert [p["accuracy"] for p in stored] == pytest.approx([p.accuracy for p in points])
        assert [(p["family"], p["stage"], p["level"]) for p in stored] == \
            [("prune", p.stage, p.level) for p in points]
    finally:
        store.close()
