"""A sweep scored on a test subset measures its breakpoints again on the whole split (engine/methods/prune/sweep.py,
with the finder engine.analysis.breakpoint.reported_levels that the run layer hands it)."""

from __future__ import annotations

import pytest

import engine.run  # noqa: F401  (hands the sweeps their breakpoint finder, as the CLI and the job runner do)
from engine.analysis.breakpoint import reported_levels
from engine.core.context import RunContext
from engine.methods.prune import sweep as sweep_module
from engine.methods.tasks import run_task

LEVELS = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99]
SUBSET = 60


def sweep(checkpoint: str, ctx: RunContext | None = None, **settings) -> list[dict]:
    cfg = {"checkpoint": checkpoint, "latency": False, "save": False, "sparsities": LEVELS, **settings}
    return [p.to_dict() for p in run_task("prune.global_unstructured", cfg, ctx or RunContext())]


@pytest.fixture(scope="module")
def whole(digits_checkpoint) -> list[dict]:
    """The one-shot sweep with every level on the whole split (deterministic: the same models as on a subset)."""
    return sweep(digits_checkpoint)


def test_the_breakpoints_a_sweep_reports_are_measured_on_the_whole_split(digits_checkpoint, whole):
    ctx = RunContext()
    points = sweep(digits_checkpoint, ctx, eval_samples=SUBSET)
    found = reported_levels(points)
    assert found and set(found) - {LEVELS[0], LEVELS[-1]}, "the digits sweep should have a breakpoint between its ends"
    by_level = {p["level"]: p for p in points}
    for level in found:  # every breakpoint the detectors report on the final curve is a whole-split figure
        p = by_level[level]
        assert p["eval_subset"] is False and p["eval_samples"] == p["test_samples"]
        assert 0 <= p["subset_accuracy"] <= 1
    remeasured = [p for p in points if p.get("breakpoint_remeasured")]
    assert remeasured, "a breakpoint between the ends was scored on the subset first"
    for p in remeasured:
        w = next(q for q in whole if q["level"] == p["level"])
        assert p["accuracy"] == w["accuracy"] and p["top5"] == w["top5"] and p["confusion"] == w["confusion"]
        assert p["accuracy_lo"] < p["accuracy"] < p["accuracy_hi"]  # the interval of the whole split, narrower
        assert p["accuracy_hi"] - p["accuracy_lo"] < 0.2
    # the points were held back until the breakpoints were known, then logged once each, in level order
    assert [p.to_dict() for p in ctx.points] == points
    assert [p["level"] for p in points] == LEVELS


def test_a_breakpoint_keeps_its_subset_score_beside_the_whole_split_one(digits_checkpoint, whole, monkeypatch):
    subset_only = sweep(digits_checkpoint, eval_samples=SUBSET, sparsities=[0.0, 0.8, 0.99])
    monkeypatch.setattr(sweep_module, "_BREAKPOINT_FINDERS", [lambda points: [0.8]])
    points = sweep(digits_checkpoint, eval_samples=SUBSET, sparsities=[0.0, 0.8, 0.9, 0.99])
    p, w, s = points[1], next(q for q in whole if q["level"] == 0.8), subset_only[1]
    assert s["eval_subset"] is True and s["level"] == 0.8
    assert p["eval_subset"] is False and p["breakpoint_remeasured"] is True
    assert p["accuracy"] == w["accuracy"] and p["subset_accuracy"] == s["accuracy"]
    assert points[2]["eval_subset"] is True and "subset_accuracy" not in points[2]  # not a breakpoint: subset only


def test_without_a_finder_breakpoints_stay_subset_figures_and_the_run_says_so(digits_checkpoint, monkeypatch):
    events = []

    class Listening(RunContext):
        def log_event(self, message: str, level: str = "info") -> None:
            events.append((level, message))

    monkeypatch.setattr(sweep_module, "_BREAKPOINT_FINDERS", [])
    points = sweep(digits_checkpoint, Listening(), eval_samples=SUBSET, sparsities=[0.0, 0.8, 0.99])
    assert points[1]["eval_subset"] is True and "breakpoint_remeasured" not in points[1]
    assert any(level == "warning" and "stays a subset figure" in m for level, m in events)


def test_the_breakpoint_command_marks_a_breakpoint_the_sweep_left_on_the_subset(digits_checkpoint, tmp_path,
                                                                                engine_main):
    from engine.run.jobs import run_sync

    db = str(tmp_path / "s.duckdb")
    points = run_sync("prune.global_unstructured", {"checkpoint": digits_checkpoint, "latency": False, "save": False,
                                                    "eval_samples": SUBSET, "sparsities": LEVELS}, db, name="sweep")
    run_id = open_store_run(db)
    # a tolerance that puts the breakpoint on a level left on the subset: above every more compressed level
    acc = [p.accuracy for p in points]
    left = [i for i, p in enumerate(points) if p.extra["eval_subset"] and acc[i] > max(acc[i + 1:])]
    assert left, f"no subset level stands above the levels after it: {acc}"
    delta = acc[0] - acc[left[-1]] + 1e-6
    reported = engine_main("breakpoint", run_id, "--db", db)
    assert reported.returncode == 0 and "kneedle" in reported.stdout
    assert "not measured on the whole split" not in reported.stdout  # the defaults: measured again by the sweep
    loose = engine_main("breakpoint", run_id, "--db", db, "--detector", "tolerance", "--delta", f"{delta:.7f}")
    assert loose.returncode == 0
    assert f"an estimate, not measured on the whole split: subset of {SUBSET} images, 95 % interval" in loose.stdout


def open_store_run(db: str) -> str:
    from store import open_store

    store = open_store(db)
    try:
        return str(store.list_runs()["run_id"].iloc[0])
    finally:
        store.close()
