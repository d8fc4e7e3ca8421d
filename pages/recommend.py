"""Recommend: pick a baseline checkpoint and budgets (accuracy points lost, size, latency, runtime); every stored
variant descended from it on its dataset is ranked, the one to ship is highlighted, the others say which budget they
break. Open the winner's run, start from it, download it, or export the comparison. The ranking is
engine/analysis/recommend.py; the chart is pages/figures/recommend.py."""

from __future__ import annotations

import streamlit as st

from engine.analysis.recommend import Budget, recommend
from engine.core.errors import UserError
from pages.figures.recommend import recommend_figure
from pages.point_actions import recommendation_view
from pages.shared import open_runner_or_stop, points_and_baselines, show_error

st.title("Recommend")
runner = open_runner_or_stop()
store = runner.store
st.caption(f"Store: `{store.path}`")

points, choices = points_and_baselines(store)
if choices.empty:
    st.info("No saved checkpoint yet: train a model (Launch), compress it, and come back to choose which variant to "
            "ship.", icon=":material/recommend:")
    st.page_link("pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()

labels = dict(zip(choices["point_id"], choices["label"], strict=True))
baseline_id = st.selectbox("Baseline (the checkpoint you start from)", list(labels), format_func=labels.get,
                           key="recommend.baseline",
                           help="every stored variant made from this checkpoint, on its dataset, is ranked; those "
                                "with the most variants come first")

c1, c2, c3, c4 = st.columns([1.2, 1.6, 1.6, 1.2])
max_drop = c1.number_input("Accuracy lost at most (points)", min_value=0.0, max_value=100.0, value=1.0, step=0.5,
                           key="recommend.max_drop")
size_kind = c2.selectbox("Size budget", ["none", "x smaller", "bytes"], key="recommend.size_kind")
size_value = c2.number_input("x smaller" if size_kind == "x smaller" else "bytes at most", min_value=0.0,
                             value=4.0 if size_kind != "bytes" else 100_000.0, key=f"recommend.size.{size_kind}",
                             disabled=size_kind == "none")
speed_kind = c3.selectbox("Latency budget (this machine)", ["none", "x faster", "ms"], key="recommend.speed_kind")
speed_value = c3.number_input("x faster" if speed_kind != "ms" else "ms at most", min_value=0.0,
                              value=2.0 if speed_kind != "ms" else 1.0, key=f"recommend.speed.{speed_kind}",
                              disabled=speed_kind == "none")
runtimes = sorted(set(points["runtime"].dropna().astype(str)) - {""}) or ["torch"]
runtime = c4.selectbox("Runtime", ["any", *runtimes], key="recommend.runtime")
batch = c4.radio("Latency at batch", [1, 32], horizontal=True, key="recommend.batch")

try:
    budget = Budget(max_drop=float(max_drop),
                    min_smaller=size_value if size_kind == "x smaller" else None,
                    max_size_bytes=size_value if size_kind == "bytes" else None,
                    min_faster=speed_value if speed_kind == "x faster" else None,
                    max_latency_ms=speed_value if speed_kind == "ms" else None,
                    runtime=None if runtime == "any" else runtime, batch=int(batch))
    rec = recommend(points, int(baseline_id), budget)
except UserError as e:
    show_error(e)
    st.stop()

b = rec.baseline
st.caption(f"Baseline: point {b['point_id']}, {b['method']} {b['model']} on {b['dataset']}, accuracy "
           f"{100 * b['accuracy']:.2f} %, {b['size_bytes']:,.0f} B. Budget: " + "; ".join(budget.stated().values())
           + f". Ranked by {'size, smallest first' if rec.objective == 'size' else 'speed, fastest first'}, then "
             "accuracy.")

if not rec.table.empty:
    st.plotly_chart(recommend_figure(rec), key="recommend.chart")
recommendation_view(rec, "recommend")
