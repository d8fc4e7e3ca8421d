"""The planner (engine/run/planner.py): a tiny plan on digits end to end, resume, cancel, and its pure pieces."""

from __future__ import annotations

import os

import pytest
import torch

from engine.analysis.recommend import Budget
from engine.core.errors import Cancelled
from engine.deploy.formats import load_variant
from engine.run.jobs import StoreContext, create_run, execute_run, resolve_task, run_sync
from engine.run.planner import (
    AXES,
    PLAN_TASK,
    Candidate,
    PlanTask,
    estimate_rows,
    fits,
    grid,
    hypervolume,
    one_axis_candidates,
    pareto,
    pick,
    plan_out_dir,
    read_plan_state,
)
from store import open_store


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory) -> str:
    """A quarter-width cnn_s trained one epoch on digits: the smallest model that makes a plan mean something."""
    from engine.core.context import RunContext
    from engine.methods.tasks import run_task
    from engine.methods.train import TrainTask
    from engine.model.train import TrainConfig

    out = str(tmp_path_factory.mktemp("plan-base") / "cnn_s")
    run_task("train", TrainTask(dataset="digits", model="cnn_s", width=0.5, out=out, latency=False,
                                train=TrainConfig(epochs=1)), RunContext())
    return out


def tiny_plan(checkpoint: str, out: str, **changes) -> dict:
    return {"checkpoint": checkpoint, "out": out, "max_drop": 5.0, "min_smaller": 3.0, "max_runs": 2, "trials": 12,
            "eval_samples": 200, "channel_ratios": [0.0], "sparsities": [0.0, 0.5], "bits": [4, 8, 32],
            "finetune_epochs": [0, 1], "finetune_samples": 300, **changes}


@pytest.fixture(scope="module")
def finished_plan(tiny_digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    db, out = str(root / "runs.duckdb"), str(root / "plan")
    config = tiny_plan(tiny_digits, out)
    run_sync(PLAN_TASK, config, db)
    store = open_store(db)
    store.flush()
    return db, out, config


def test_a_tiny_plan_runs_real_child_runs_and_recommends_a_confirmed_reloadable_checkpoint(finished_plan):
    db, out, _ = finished_plan
    store = open_store(db)
    plans = store.list_runs(kind=PLAN_TASK)
    assert len(plans) == 1 and plans["status"].iloc[0] == "finished"
    children = store.list_runs(parent=plans["run_id"].iloc[0])
    assert (children["status"] == "finished").sum() >= 2  # the baseline's measure and at least one candidate's unit
    state = read_plan_state(out)
    assert state["status"] == "finished"
    ran = [r for r in state["confirmed"].values() if r["ran_units"] > 0]
    assert 1 <= len(ran) <= 2  # the real-run budget holds
    rec = state["recommendation"]
    assert rec is not None and rec["confirmed"]
    assert os.path.realpath(rec["artifact"]) in {os.path.realpath(r["artifact"]) for r in ran}
    model, form, meta = load_variant(rec["artifact"])  # a reloadable checkpoint, descended from the baseline
    assert meta.dataset == "digits" and len(meta.lineage) >= 2
    with torch.no_grad():
        assert (form.runner or model)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    base = state["baseline"]
    assert base["accuracy"] - 100 * rec["accuracy"] <= 5.0 + 1e-6
    assert base["size_bytes"] / rec["size_bytes"] >= 3.0


def test_estimates_are_logged_labelled_and_kept_apart_from_confirmed_points(finished_plan):
    db, out, config = finished_plan
    store = open_store(db)
    plan_id = store.list_runs(kind=PLAN_TASK)["run_id"].iloc[0]
    history = store.metric_history(plan_id)
    estimates = history[history["key"] == "estimate_accuracy"]
    assert len(estimates) == config["trials"]  # one per trial, step = the trial number
    state = read_plan_state(out)
    rows = estimate_rows(state)
    assert rows and all(r["label"] == "estimate" for r in rows)
    assert {r["key"] for r in rows if r["confirmed"]} <= set(state["confirmed"])
    # no estimate reached the store as a point: every stored point belongs to a real run
    points = store.points(expand=False)
    assert "estimate" not in points or not points["estimate"].fillna(False).any()


def test_running_the_same_plan_again_reuses_its_estimates_and_runs(finished_plan):
    db, out, config = finished_plan
    store = open_store(db)
    before = len(store.list_runs())
    state_before = read_plan_state(out)
    run_sync(PLAN_TASK, config, db)
    store.flush()
    after = store.list_runs()
    assert len(after) == before + 1  # only the new plan run: no child ran again
    state = read_plan_state(out)
    assert state["trials"] == state_before["trials"]
    assert state["confirmed"].keys() == state_before["confirmed"].keys()
    assert state["recommendation"]["artifact"] == state_before["recommendation"]["artifact"]


class _CancelAfter(StoreContext):
    """Cancels itself after `n` estimates, as the page's Cancel button would."""

    def __init__(self, *args, n: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.n = n

    def log_metrics(self, metrics, step):
        super().log_metrics(metrics, step)
        if "estimate_accuracy" in metrics and step + 1 >= self.n:
            self.cancel.cancel()


def test_a_cancelled_plan_keeps_its_state_and_a_rerun_resumes_it(tiny_digits, tmp_path):
    db, out = str(tmp_path / "runs.duckdb"), str(tmp_path / "plan")
    config = tiny_plan(tiny_digits, out, max_runs=1, trials=6)
    store = open_store(db)
    _, cfg = resolve_task(PLAN_TASK, config)
    run_id = create_run(store, PLAN_TASK, cfg)
    with pytest.raises(Cancelled):
        execute_run(store, run_id, PLAN_TASK, cfg, _CancelAfter(store, run_id, n=3))
    state = read_plan_state(out)
    assert state["status"] == "cancelled" and len(state["trials"]) == 3 and not state["confirmed"]
    run_sync(PLAN_TASK, config, db)
    state = read_plan_state(out)
    assert state["status"] == "finished" and len(state["trials"]) == 6
    assert [t["number"] for t in state["trials"]] == list(range(6))


# ---------------------------------------------------------------- pure pieces


def test_the_grid_drops_the_baseline_and_fine_tuning_without_pruning():
    cands = grid({"channel_ratio": [0.0, 0.5], "sparsity": [0.0], "finetune_epochs": [0, 1], "bits": [4, 32]})
    keys = {c.key for c in cands}
    assert keys == {"c0-s0-e0-b4", "c0.5-s0-e0-b4", "c0.5-s0-e1-b4", "c0.5-s0-e0-b32", "c0.5-s0-e1-b32"}


def test_the_seed_candidates_use_only_values_of_the_space_and_cover_each_axis():
    space = {"channel_ratio": [0.0, 0.5], "sparsity": [0.0, 0.7], "finetune_epochs": [1], "bits": [4, 8, 32]}
    seeds = one_axis_candidates(space)
    for c in seeds:  # the sampler refuses a value outside its choices (fine-tuning 0 here)
        assert all(getattr(c, a) in space[a] for a in AXES)
    normal = {Candidate.normal(*(getattr(c, a) for a in AXES)).key for c in seeds}
    assert normal == {"c0-s0-e0-b4", "c0-s0-e0-b8", "c0-s0.7-e1-b32", "c0.5-s0-e1-b32"}


def test_hypervolume_counts_the_area_a_front_dominates():
    assert hypervolume([(90.0, 50.0)], base_size=100.0, floor_accuracy=80.0) == pytest.approx(0.5 * 10)
    # a dominated point adds nothing; a second front point adds its own strip
    one = hypervolume([(90.0, 50.0), (85.0, 60.0)], 100.0, 80.0)
    two = hypervolume([(90.0, 50.0), (85.0, 25.0)], 100.0, 80.0)
    assert one == pytest.approx(5.0) and two == pytest.approx(5.0 + 0.25 * 5)


def test_pareto_keeps_only_rows_nothing_beats_on_both_axes():
    rows = [{"accuracy": 90, "size_bytes": 10}, {"accuracy": 95, "size_bytes": 20}, {"accuracy": 85, "size_bytes": 20}]
    assert pareto(rows) == rows[:2]


def test_the_budget_check_reads_drop_size_and_speed():
    base = {"accuracy": 95.0, "size_bytes": 1000.0, "latency_ms_b1": 2.0}
    row = {"accuracy": 94.2, "size_bytes": 240.0, "latency_ms_b1": 1.0}
    assert fits(row, Budget(max_drop=1.0, min_smaller=4.0), base)
    assert not fits(row, Budget(max_drop=0.5, min_smaller=4.0), base)
    assert fits(row, Budget(max_drop=0.5), base, slack_points=0.5)
    assert not fits(row, Budget(max_drop=1.0, min_faster=3.0), base)
    assert not fits({**row, "latency_ms_b1": None}, Budget(max_drop=1.0, max_latency_ms=5.0), base)


def test_pick_never_runs_a_candidate_more_aggressive_than_one_that_broke_the_budget():
    base = {"accuracy": 95.0, "size_bytes": 1000.0}
    broke = Candidate(0.0, 0.5, 0, 4)
    confirmed = {broke.key: {"candidate": broke.as_dict(), "status": "finished", "accuracy": 80.0, "size_bytes": 100.0}}

    def row(c: Candidate, acc: float, size: float) -> dict:
        return {"key": c.key, **c.as_dict(), "accuracy": acc, "size_bytes": size, "label": "estimate",
                "confirmed": c.key in confirmed}

    harsher, milder = Candidate(0.0, 0.7, 0, 2), Candidate(0.0, 0.5, 1, 4)
    rows = [row(broke, 94.5, 100.0), row(harsher, 94.8, 60.0), row(milder, 94.5, 100.0)]
    for turn in range(3):
        choice, _ = pick(rows, confirmed, Budget(max_drop=1.0), base, margin=2.0, turn=turn)
        assert choice is not None and choice["key"] == milder.key


def test_a_plan_names_its_folder_after_its_key_so_a_rerun_finds_it(tiny_digits):
    a = PlanTask.from_dict({"checkpoint": tiny_digits, "max_drop": 1.0, "trials": 10})
    b = PlanTask.from_dict({"checkpoint": tiny_digits, "max_drop": 1.0, "trials": 30, "max_runs": 9})
    c = PlanTask.from_dict({"checkpoint": tiny_digits, "max_drop": 2.0})
    assert plan_out_dir(a) == plan_out_dir(b) != plan_out_dir(c)


def test_a_bad_space_is_refused_naming_the_field(tiny_digits):
    from engine.core.errors import ConfigError

    with pytest.raises(ConfigError, match="bits must each be in"):
        PlanTask.from_dict({"checkpoint": tiny_digits, "bits": [12]})
    with pytest.raises(ConfigError, match="sparsities"):
        PlanTask.from_dict({"checkpoint": tiny_digits, "sparsities": [1.5]})


def test_a_recipe_stage_runs_a_plan_as_a_unit(tiny_digits, tmp_path):
    from engine.run.recipes import RECIPE_TASK

    db = str(tmp_path / "runs.duckdb")
    stage = {k: v for k, v in tiny_plan(tiny_digits, "", max_runs=1, trials=3, bits=[8, 32], sparsities=[0.0],
                                        finetune_epochs=[0]).items() if k not in ("checkpoint", "out")}
    recipe = {"name": "plan-in-a-recipe", "dataset": "digits", "model": tiny_digits, "out": str(tmp_path / "out"),
              "stages": [{"name": "plan", "task": PLAN_TASK, "config": stage}]}
    run_sync(RECIPE_TASK, {"recipe": recipe}, db)
    store = open_store(db)
    store.flush()
    units = store.list_runs(kind=PLAN_TASK)
    assert len(units) == 1 and units["status"].iloc[0] == "finished"
    folder = next((tmp_path / "out").glob("plan-*"))
    assert read_plan_state(folder)["status"] == "finished"


def test_the_plan_uses_the_stores_points_of_the_same_checkpoint_in_place_of_the_proxy(tiny_digits, tmp_path):
    """A store that already holds variants of the baseline made as the planner makes them: a pruning sweep's
    50 % point (no fine-tuning, far over the accuracy budget: a breakpoint) and that point fine-tuned one epoch
    like the plan's; plus chains the planner never makes (another learning rate, quantize before prune). The plan
    reads the two, shows the fine-tuned one's accuracy as its estimate there, calibrates with it, and runs neither
    again nor anything as aggressive as the broken one."""
    from engine.core.point import Measurement
    from engine.methods.tasks import make_point
    from engine.run.planner import calibration_of

    db, out = str(tmp_path / "runs.duckdb"), str(tmp_path / "plan")
    config = tiny_plan(tiny_digits, out, max_runs=1, trials=8)

    def m(accuracy: float, size: float) -> Measurement:
        return Measurement(accuracy=accuracy, top5=1.0, loss=0.1, params_total=1000, params_nonzero=500,
                           sparsity=0.5, bits=32.0, size_bytes=size, size_fp32_bytes=4000, file_bytes=size, macs=1,
                           latency_ms_b1=None, latency_p90_ms_b1=None, latency_ms_b32=None, latency_p90_ms_b32=None,
                           threads=1, backend="fp32 eager cpu", simulated=False, dataset="digits", model="cnn_s",
                           runtime="torch")

    p50, tuned, other = (str(tmp_path / n) for n in ("p50", "p50-ft", "p50-ft-lr"))
    prune = dict(family="prune", method="global_unstructured", level_name="sparsity", input_checkpoint=tiny_digits)
    tune = dict(family="train", method="finetune", stage="variant", level=0.5, level_name="sparsity",
                input_checkpoint=p50)
    with open_store(db) as store:
        rid = store.create_run("prune.global_unstructured", {}, name="a stored sweep")
        store.add_point(rid, make_point(m(0.20, 9e9), stage="variant", level=0.5, artifact=p50, **prune))
        rid = store.create_run("finetune", {}, name="a stored fine-tuning")
        store.add_point(rid, make_point(m(0.97, 9e9), artifact=tuned, **tune, params={
            "mode": "all", "samples": 300, "train": {"epochs": 1, "lr": 0.01}}))
        store.add_point(rid, make_point(m(0.99, 9e9), artifact=other, **tune, params={  # another fine-tuning
            "mode": "all", "samples": 300, "train": {"epochs": 1, "lr": 0.5}}))
        rid = store.create_run("quantize.fake", {}, name="quantized after pruning and fine-tuning")
        store.add_point(rid, make_point(m(0.99, 9e9), family="quantize", method="fake", stage="variant", level=8.0,
                                        level_name="bits", input_checkpoint=other, params={"granularity": "per_channel"}))
        store.flush()
    run_sync(PLAN_TASK, config, db)
    state = read_plan_state(out)
    assert set(state["stored"]) == {"c0-s0.5-e0-b32", "c0-s0.5-e1-b32"}  # the other chains are not the planner's
    assert state["stored"]["c0-s0.5-e1-b32"]["accuracy"] == pytest.approx(97.0)
    rows = {r["key"]: r for r in estimate_rows(state)}
    assert rows["c0-s0.5-e1-b32"]["basis"] == "stored run" and rows["c0-s0.5-e1-b32"]["label"] == "estimate"
    assert rows["c0-s0.5-e1-b32"]["accuracy"] == pytest.approx(97.0)  # the stored result, not the proxy's
    assert all(r["basis"] == "proxy" for k, r in rows.items() if k not in state["stored"])
    cal = calibration_of(state["confirmed"], state["baseline"], state["stored"])
    stored = state["stored"]["c0-s0.5-e1-b32"]
    assert stored["accuracy"] - stored["estimate_accuracy"] in cal.gaps[1]
    broken = Candidate(0.0, 0.5, 0, 32)
    ran = [Candidate(**r["candidate"]) for r in state["confirmed"].values()]
    assert len(ran) == 1 and ran[0].key not in state["stored"] and not ran[0].at_least_as_aggressive(broken)
