"""The Plan page against a store holding a small finished plan (cnn_s on digits, one real run): estimates are drawn
hollow and named estimates, the confirmed run filled, and the recommendation is the confirmed checkpoint."""

from __future__ import annotations

from engine.run.jobs import run_sync
from engine.run.planner import PLAN_TASK, read_plan_state
from tests.pages.conftest import chart, open_page

PAGE = "pages/plan.py"


def test_the_page_draws_estimates_hollow_confirmed_runs_filled_and_the_recommendation(db, lab_store, tmp_path):
    out = str(tmp_path / "plan")
    run_sync(PLAN_TASK, {"checkpoint": lab_store["checkpoint"], "out": out, "max_drop": 5.0, "min_smaller": 3.0,
                         "max_runs": 1, "trials": 6, "eval_samples": 100, "channel_ratios": [0.0],
                         "sparsities": [0.0, 0.5], "bits": [4, 8, 32], "finetune_epochs": [0]}, db)
    state = read_plan_state(out)
    at = open_page(PAGE)
    assert not at.exception, at.exception
    traces = {t["name"].split(" (")[0]: t for t in chart(at)["data"]}
    assert traces["estimate"]["marker"]["symbol"] == "circle-open"
    assert traces["confirmed"]["marker"]["symbol"] == "circle"
    assert "baseline" in traces
    rec = state["recommendation"]
    if rec is not None:
        assert "recommended" in traces
        assert any(f"Ship point {rec['point_id']}" in s.value for s in at.success)
    # the store's ranking under the plan's budget, as on Recommend: every confirmed variant with what it breaks
    table = next(df.value for df in at.dataframe if "breaks" in getattr(df.value, "columns", []))
    assert table["rank"].iloc[0] == "baseline" and len(table) >= 2
    for fits, breaks in zip(table["fits"][1:], table["breaks"][1:], strict=True):
        assert fits in ("yes", "no") and (fits == "no") == bool(breaks)  # a variant that does not fit says why
