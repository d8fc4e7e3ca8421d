"""Plan: pick a baseline checkpoint and budgets, and let the planner search variants the store does not hold yet.
Estimates (a proxy on a test subset, no training) fill the chart first, drawn hollow; the few real runs they point to
are drawn filled; the plan ends with a recommendation that is always a confirmed checkpoint. A plan can be cancelled
and resumed; its end shows the ranking of Recommend (the winner to download or open, every confirmed variant with
the budget it breaks, exports). The search is engine/run/planner.py (run by the job runner); this page polls the store and the plan's
state file."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.analysis.recommend import recommend
from engine.core.errors import UserError
from engine.run.planner import (
    PLAN_TASK,
    SAMPLERS,
    PlanTask,
    confirmed_rows,
    estimate_rows,
    plan_folder_of,
    plan_out_dir,
    read_plan_state,
)
from pages.figures.plan import plan_figure
from pages.point_actions import recommendation_view
from pages.shared import open_runner_or_stop, points_and_baselines, show_error
from store.paths import checkpoints_dir

POLL_S = 2
ACTIVE = ("queued", "running")

st.title("Plan")
runner = open_runner_or_stop()
store = runner.store
st.caption("Search channel ratio, global sparsity, fine-tuning epochs and weight bits under a budget. Estimates "
           "are a proxy (no training, on a test subset) and say so; only real runs can be recommended.")

points, choices = points_and_baselines(store)

with st.expander("Start a plan", expanded=store.list_runs(kind=PLAN_TASK, limit=1).empty):
    if choices.empty:
        st.info("No saved checkpoint yet: train a model on Launch first.", icon=":material/info:")
    else:
        labels = dict(zip(choices["artifact"], choices["label"], strict=True))
        checkpoint = st.selectbox("Baseline checkpoint", list(labels), format_func=labels.get, key="plan.baseline")
        c1, c2, c3 = st.columns(3)
        max_drop = c1.number_input("Accuracy lost at most (points)", 0.0, 100.0, 1.0, 0.5, key="plan.max_drop")
        min_smaller = c2.number_input("At least x smaller (0: no size budget)", 0.0, 1000.0, 4.0, key="plan.smaller")
        min_faster = c3.number_input("At least x faster (0: no latency budget)", 0.0, 100.0, 0.0, key="plan.faster")
        c1, c2, c3 = st.columns(3)
        max_runs = c1.number_input("Real runs at most", 1, 1000, 6, key="plan.max_runs")
        trials = c2.number_input("Estimates", 1, 10_000, 60, key="plan.trials")
        sampler = c3.selectbox("Sampler (Optuna)", SAMPLERS, key="plan.sampler")
        defaults = PlanTask(checkpoint=checkpoint)
        c1, c2, c3, c4 = st.columns(4)
        ratios = c1.text_input("Channel ratios", ",".join(f"{v:g}" for v in defaults.channel_ratios), key="plan.c")
        sparsities = c2.text_input("Sparsities", ",".join(f"{v:g}" for v in defaults.sparsities), key="plan.s")
        bits = c3.text_input("Weight bits", ",".join(str(v) for v in defaults.bits), key="plan.b")
        epochs = c4.text_input("Fine-tuning epochs", ",".join(str(v) for v in defaults.finetune_epochs), key="plan.e")
        if st.button("Start the plan", type="primary", icon=":material/play_arrow:"):
            try:
                config = {"checkpoint": checkpoint, "max_drop": float(max_drop), "max_runs": int(max_runs),
                          "trials": int(trials), "sampler": sampler, "channel_ratios": ratios,
                          "sparsities": sparsities, "bits": bits, "finetune_epochs": epochs,
                          "min_smaller": float(min_smaller) or None, "min_faster": float(min_faster) or None}
                cfg = PlanTask.from_dict(config)
                cfg = PlanTask.from_dict({**cfg.to_dict(), "out": plan_out_dir(cfg, checkpoints_dir())})
                run_id = runner.submit(PLAN_TASK, cfg)
                st.session_state["plan.run"] = run_id
                st.success(f"Plan started (run {run_id}); it fills in below.", icon=":material/check:")
            except UserError as e:
                show_error(e)

plans = store.list_runs(kind=PLAN_TASK, limit=50)
if plans.empty:
    st.stop()
names = {r: f"{n} · {s} · {r}" for r, n, s in zip(plans["run_id"], plans["name"], plans["status"], strict=True)}
ids = list(names)
current = st.session_state.get("plan.run")
run_id = st.selectbox("Plan", ids, index=ids.index(current) if current in ids else 0, format_func=names.get,
                      key="plan.chosen")


@st.fragment(run_every=POLL_S)
def plan_view(run_id: str) -> None:
    """Polls the plan run and its state file: never called from a worker thread."""
    try:
        run = store.get_run(run_id)
    except Exception as e:  # noqa: BLE001 - a deleted run
        show_error(e)
        return
    config = run["config"]
    status = run["status"]
    c1, c2 = st.columns([4, 1])
    c1.progress(min(1.0, float(run.get("progress") or 0.0)), text=f"{status}: {run.get('message') or ''}")
    if status in ACTIVE:
        if c2.button("Cancel", icon=":material/stop_circle:", key=f"plan.cancel.{run_id}"):
            runner.cancel(run_id)
    elif status in ("cancelled", "interrupted", "failed") or (status == "finished"):
        label = "Resume" if status != "finished" else "Run again (reuses everything)"
        if c2.button(label, icon=":material/replay:", key=f"plan.resume.{run_id}"):
            new = runner.submit(PLAN_TASK, config, name=run["name"])
            st.session_state["plan.run"] = new
            st.rerun()
    if status == "failed" and run.get("error"):
        st.error(run["error"], icon=":material/error:")
    state = read_plan_state(plan_folder_of(config))
    if not state or not state.get("baseline"):
        st.info("Waiting for the plan's first estimates.", icon=":material/hourglass_top:")
        return
    estimates, confirmed = estimate_rows(state), confirmed_rows(state)
    base = state["baseline"]
    rec = state.get("recommendation")
    st.plotly_chart(plan_figure(estimates, confirmed, base, max_drop=config.get("max_drop"),
                                max_size_bytes=(base["size_bytes"] / config["min_smaller"]
                                                if config.get("min_smaller") else config.get("max_size_bytes")),
                                recommended=rec), key=f"plan.figure.{run_id}")
    m1, m2, m3 = st.columns(3)
    m1.metric("Estimates", f"{len(state.get('trials', []))}", help="candidates the proxy scored (not measured)")
    m2.metric("Real runs", f"{sum(1 for r in state.get('confirmed', {}).values() if r.get('ran_units', 0) > 0)}"
                           f" / {config.get('max_runs')}")
    m3.metric("Baseline", f"{base['accuracy']:.2f} %", help=f"{base['size_bytes']:,.0f} B")
    if confirmed:
        st.subheader("Confirmed by a real run")
        df = pd.DataFrame(confirmed)[["key", "accuracy", "estimate_accuracy", "size_bytes", "why", "artifact"]]
        st.dataframe(df.rename(columns={"accuracy": "accuracy %", "estimate_accuracy": "estimate was %"}),
                     hide_index=True)
    if rec or state.get("status") == "finished":
        # the store's ranking under the plan's budget, as on Recommend: the winner (download, open, launch from
        # it), and every confirmed variant of this baseline with the budget it breaks, exportable
        st.subheader("Recommendation (confirmed runs only)")
        try:
            ranked = recommend(store.points(expand=False), int(base["point_id"]), PlanTask.from_dict(config).budget())
        except UserError as e:
            show_error(e)
            return
        recommendation_view(ranked, f"plan.rec.{run_id}")
        if ranked.best is None:
            st.caption("Loosen the budget or give the plan more real runs.")


plan_view(run_id)
