"""Breakpoints: accuracy against remaining parameters (or size, bits, latency, level) for chosen curves,
mean ± std bands from repeats, each curve's breakpoint by a chosen detector, the detector's own curve
underneath, and Malihi and Heidemann's (2023) Table 3 (engine.analysis.study_tables.PAPERS["002"])."""

import streamlit as st

from engine.analysis.breakpoint import DETECTORS, X_FIELDS, X_LABELS, detect, suggest_log_x
from engine.analysis.study_tables import PAPERS, cite
from engine.analysis.tradeoffs import (
    CURVE_GROUPS,
    build_curve,
    curve_candidates,
    default_curves,
    detector_fields,
    map_selection,
    per_curve_text,
    shape_points,
    table3_text,
)
from engine.core.errors import UserError
from pages.figures.breakpoints import breakpoint_figure
from pages.shared import open_runner_or_stop, show_error

st.title("Breakpoints")
PAPER = PAPERS["002"]
st.caption(f"Where further compression starts to cost accuracy steeply: the breakpoint is the last point before the "
           f"fall, the most compressed model worth keeping. After {cite('002', full=True)}, where {PAPER.finding}.")
runner = open_runner_or_stop()
store = runner.store

try:
    points = shape_points(store.points(expand=False))
except Exception as e:  # noqa: BLE001 - shown as a message
    show_error(e)
    st.stop()

group = st.radio("Curves from", list(CURVE_GROUPS), format_func=CURVE_GROUPS.get, horizontal=True,
                 key="breakpoints_group")
candidates = curve_candidates(points, group)
if not candidates:
    st.info("No curves yet: a curve is a sweep, a run with points at two levels or more (a prune sweep over "
            "sparsities, a quantize sweep over bit widths). Launch one, or the kd-prune study for a teacher and "
            "its students pruned side by side, and come back when it has finished.", icon=":material/show_chart:")
    st.page_link("pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()

by_id = {k.id: k for k in candidates}
if "breakpoints_curves" not in st.session_state:  # open on the newest sweep that has a breakpoint
    st.session_state["breakpoints_curves"] = default_curves(
        points, candidates, st.session_state.get("breakpoints_x", "params"),
        st.session_state.get("breakpoints_detector", DETECTORS.names()[0]))
elif st.session_state.get("_breakpoints_group", group) != group:  # the same sweeps, run by run or pooled
    st.session_state["breakpoints_curves"] = map_selection(points, st.session_state["breakpoints_curves"],
                                                           candidates)
st.session_state["_breakpoints_group"] = group
st.session_state["breakpoints_curves"] = [i for i in st.session_state["breakpoints_curves"] if i in by_id]
picked = st.multiselect("Curves (teacher and students together)", list(by_id),
                        format_func=lambda i: by_id[i].label, key="breakpoints_curves")
c1, c2, c3 = st.columns([1.4, 1.4, 1])
x = c1.selectbox("x", list(X_FIELDS), format_func=lambda k: X_LABELS[k], key="breakpoints_x")
detector = c2.selectbox("Detector", DETECTORS.names(), key="breakpoints_detector",
                        help="; ".join(f"{n}: {d.description}" for n, d in DETECTORS.items()))

settings = {}
fields = detector_fields(detector)
cols = st.columns(len(fields))
for col, f in zip(cols, fields, strict=True):
    key = f"breakpoints_{detector}_{f['name']}"
    label = f["name"].replace("_", " ")
    if f["choices"]:
        settings[f["name"]] = col.selectbox(label, f["choices"], index=f["choices"].index(f["default"]),
                                            help=f["help"], key=key)
    elif f["type"] == "bool":
        settings[f["name"]] = col.checkbox(label, value=bool(f["default"]), help=f["help"], key=key)
    elif f["type"] in ("float", "int"):
        number = float if f["type"] == "float" else int
        lo = None if f["lo"] is None else number(f["lo"])
        hi = None if f["hi"] is None else number(f["hi"])
        step = 0.01 if number is float and (hi or 0) <= 1 else (0.1 if number is float else 1)
        settings[f["name"]] = col.number_input(label, min_value=lo, max_value=hi, value=number(f["default"]),
                                               step=step, help=f["help"], key=key,
                                               format="%.3f" if number is float else "%d")
    else:
        settings[f["name"]] = col.text_input(label, value=str(f["default"] or ""), help=f["help"], key=key)

if not picked:
    st.info("Choose one or more curves above.", icon=":material/touch_app:")
    st.stop()

curves, results = {}, {}
for cid in picked:
    key = by_id[cid]
    try:
        curve = build_curve(points, key, x)
        result = detect(curve, detector, settings)
    except UserError as e:
        st.warning(f"{key.label}: {e}", icon=":material/warning:")
        continue
    except Exception as e:  # noqa: BLE001 - shown as a message
        show_error(e)
        continue
    curves[key.label] = curve
    results[key.label] = result

if not curves:
    st.stop()

log_x = c3.toggle("Log x", value=suggest_log_x([v for c in curves.values() for v in c.x]), key="breakpoints_log",
                  help="on by default where the chosen curves' x values spread over orders of magnitude and crowd "
                       "near zero on a linear axis")
st.plotly_chart(breakpoint_figure(curves, results, log_x), key="breakpoints_chart")
for name, r in results.items():
    if r.found:
        c = curves[name]
        level = c.levels[r.index] if c.levels else None
        where = f"{c.level_name or 'level'} {level:g}" if level is not None else "the reference"
        subset = c.subset_bars()[2][r.index]  # a breakpoint the sweep did not measure again (other settings)
        st.markdown(f":material/star: **{name}**: breakpoint at {where} ({c.x_label} {r.x:,.6g}), accuracy "
                    f"{r.accuracy:.4f} ± {r.accuracy_std or 0:.4f}. {r.reason.rstrip('.')}."
                    + (f" An estimate, not measured on the whole split: {subset}." if subset else ""))
    else:
        st.markdown(f":material/remove: **{name}**: {r.reason.replace('--', '').rstrip('.')}.")

st.subheader(f"Table 3 of {cite('002')}: before pruning and at the breakpoint")
names = list(curves)
teachers = {by_id[i].label for i in picked if by_id[i].teacher}  # see tradeoffs.teacher_rows
guess = next((n for n in names if n in teachers), None)
teacher = st.selectbox("Teacher curve", ["(none)", *names], index=names.index(guess) + 1 if guess else 0,
                       key="breakpoints_teacher",
                       help=f"the teacher's curve; every other chosen curve is a student beside it, as in {cite('002')}")
if x != "params":
    st.caption(f"Breakpoints here are found on accuracy against {X_LABELS[x]}; parameters are read at the same "
               f"points. {cite('002')} use remaining parameters.")
if teacher != "(none)" and len(curves) > 1:
    st.dataframe(table3_text(curves, results, teacher), key="breakpoints_table3")
    st.caption("Percentage decrease = (P(t) before pruning - P(s) at its breakpoint) / P(t) before pruning x 100; "
               f"compression rate = P(t) before pruning / P(s) at its breakpoint ({cite('002')}). Accuracies in %.")
else:
    st.caption(f"Choose a teacher curve and at least one other curve for {cite('002')}'s teacher-student layout; "
               "meanwhile, each curve against its own reference:")
st.dataframe(per_curve_text(curves, results), hide_index=True, key="breakpoints_per_curve")
