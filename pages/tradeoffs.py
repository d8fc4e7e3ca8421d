"""Trade-offs: accuracy against size, file size, latency, sparsity, bits, MACs or parameters for every
stored point, with filters, the Pareto front and a clicked point's details and lineage."""


import streamlit as st

from engine.analysis.classes import class_report
from engine.analysis.tradeoffs import (
    AXES,
    COLOUR_BY,
    FILTERS,
    SYMBOL_BY,
    apply_filters,
    detail_table,
    error_bar_caption,
    filter_options,
    filters_title,
    lineage_of,
    on_axis,
    pareto_points,
    pareto_table,
    point_details,
    run_labels,
    selected_point_id,
    shape_points,
    timing_warning,
)
from pages.figures.classes import confusion_figure
from pages.figures.tradeoffs import SIMULATED_TEXT, tradeoff_figure
from pages.point_actions import latency_history, point_actions, retime
from pages.shared import cpu_capability, open_runner_or_stop, show_error

st.title("Trade-offs")
runner = open_runner_or_stop()
store = runner.store
st.caption(f"Store: `{store.path}`")
cpu_capability("tradeoffs")

try:
    points = shape_points(store.points(expand=False))
except Exception as e:  # noqa: BLE001 - shown as a message
    show_error(e)
    st.stop()

if points.empty:
    st.info("No points yet: every trained, pruned, quantized or distilled model a run measures becomes a point "
            "here. Launch a sweep (for example a prune or quantize sweep on a trained checkpoint) and come back "
            "when it has finished.", icon=":material/scatter_plot:")
    st.page_link("pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()

c1, c2, c3, c4 = st.columns([2, 1.3, 1.3, 1.2])
axis = c1.selectbox("x axis", list(AXES), format_func=lambda k: AXES[k].label, key="tradeoffs_x")
colour_by = c2.selectbox("Colour by", list(COLOUR_BY), key="tradeoffs_colour")
symbol_by = c3.selectbox("Symbol by", list(SYMBOL_BY), key="tradeoffs_symbol")
with c4:
    log_x = st.toggle("Log x", key="tradeoffs_log", help="points at x = 0 (e.g. sparsity 0) cannot be drawn on a "
                      "log axis; the caption says how many are left off")
    show_front = st.toggle("Pareto front", value=True, key="tradeoffs_pareto",
                           help="the points no other point beats on both accuracy and x (less is better on x, "
                                "except sparsity, where more is)")

options = filter_options(points)
labels = run_labels(points)
with st.expander(filters_title({n: st.session_state.get(f"tradeoffs_filter_{n}") for n in FILTERS}), expanded=False):
    cols = st.columns(3)
    chosen = {}
    for i, name in enumerate(FILTERS):
        fmt = (lambda r: labels.get(r, r)) if name == "run" else str
        chosen[name] = cols[i % 3].multiselect(name.capitalize(), options[name], format_func=fmt,
                                               key=f"tradeoffs_filter_{name}", placeholder="all")

shown = apply_filters(points, chosen)
view = on_axis(shown, axis, log_x)
if shown.empty:
    st.warning("No point matches these filters: clear one of them.", icon=":material/filter_alt_off:")
    st.stop()
if view.caption():
    st.caption(view.caption())
if timing_warning(view):
    st.warning(timing_warning(view), icon=":material/speed:")
if view.points.empty:
    st.warning(f"None of the {len(shown)} chosen points has {AXES[axis].label}: choose another x axis.",
               icon=":material/warning:")
    st.stop()

# colours by the unfiltered values: a family keeps its colour whatever the filters leave
fig = tradeoff_figure(view, colour_by, symbol_by, log_x, show_front, colour_values=points[COLOUR_BY[colour_by]])
event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="tradeoffs_chart")
front = pareto_points(view)
n_sim = int(view.points["simulated"].sum())
st.caption(f"{len(view.points)} points drawn, {len(front)} on the Pareto front. "
           + (f"{n_sim} open symbols: {SIMULATED_TEXT}. " if n_sim else "") + error_bar_caption(view.points)
           + "Click a point for its details and lineage.")

with st.expander(f"Pareto front ({len(front)} points)"):
    st.dataframe(pareto_table(front, axis), hide_index=True, key="tradeoffs_front_table")


point_id = selected_point_id(event.selection.points if event is not None else [])
if point_id is None:
    st.stop()

st.subheader("Selected point")
try:
    d = point_details(points, point_id)
except Exception as e:  # noqa: BLE001 - shown as a message
    show_error(e)
    st.stop()
level = f", {d['level_name'] or 'level'} {d['level']:g}" if d.get("level") is not None else ""
st.markdown(f"**{d['run_name']}** (`{d['run_id']}`): {d['family']} / {d['method']}, {d['stage']}{level}, "
            f"{d['model']} on {d['dataset']}, {d['runtime']}")
point_actions(d, "tradeoffs.point")  # Open in What-if, Launch from this checkpoint, Download
retime([point_id], "tradeoffs.point", "Re-time this point now")  # paired with its baseline, as one run
latency_history(point_id)
if d.get("simulated"):
    st.info(f"Quantization here is simulated: {SIMULATED_TEXT}. Its size counts the low-bit weights; its latency "
            "is the float model's.", icon=":material/info:")
left, right = st.columns(2)
with left:
    metrics = {k: v for k, v in d.items() if k not in ("params", "extra", "run_name", "run_id")}
    table = detail_table(metrics)
    st.dataframe(table, hide_index=True, key="tradeoffs_point_table", height=420)
with right:
    st.markdown("**Lineage**")
    lineage = lineage_of(d.get("artifact"))
    if lineage.found:
        st.markdown(f"`{lineage.text}`")
        st.caption(f"Checkpoint: `{d['artifact']}`")
        with st.expander("Lineage steps"):
            st.json(lineage.steps, expanded=False)
    else:
        st.caption(lineage.note)
    with st.expander("Method settings (params)"):
        st.json(d["params"], expanded=False)
    with st.expander("Extra"):
        st.json(d["extra"], expanded=False)

with st.expander("Per class: which classes this point loses first, beside its baseline"):
    per_class = class_report(points, point_id)
    for note in per_class.notes:
        st.caption(note)
    if per_class.found:
        st.caption(f"Baseline: {per_class.baseline_label}" if per_class.baseline_label else "No baseline.")
        pct = {c: st.column_config.NumberColumn(format="percent") for c in ("baseline accuracy", "accuracy")}
        st.dataframe(per_class.table, hide_index=True, key="tradeoffs_per_class_table",
                     column_config={**pct, "change (points)": st.column_config.NumberColumn(format="%+.1f")})
        st.plotly_chart(confusion_figure(per_class), key="tradeoffs_confusion_chart")
