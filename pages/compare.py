"""Compare & export (issue #11): chosen runs (or points) as the seeds' tables and a free pivot, each
downloadable as CSV, Excel, Markdown, LaTeX, Parquet or JSON; a variant's checkpoint as a safetensors zip,
and as ONNX where the export works. The tables come from engine/analysis/tables.py, the files from engine/analysis/exports.py."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.analysis import tables
from engine.analysis.breakpoint import X_FIELDS, X_LABELS
from engine.analysis.exports import (
    FORMATS,
    arrow_ready,
    checkpoint_directory,
    export_onnx,
    export_table,
    file_name,
    zip_checkpoint,
)
from engine.analysis.study_tables import cite
from engine.core.errors import UserError
from engine.run import studies
from pages.point_actions import point_actions, retime
from pages.shared import open_runner_or_stop, show_error

st.title("Compare & export")
runner = open_runner_or_stop()
store = runner.store
st.caption(f"Store: `{store.path}`")

NONE = "(none)"


def show_table(table: tables.Table, key: str) -> None:
    """The table, its notes, and one download button per format (the file is made when it is clicked)."""
    st.markdown(f"**{table.title}**" + (f" — as in {table.paper}" if table.paper else ""))
    if table.data.empty and not len(table.data.columns):
        for note in table.notes:
            st.info(note, icon=":material/info:")
        return
    st.dataframe(arrow_ready(table.data), hide_index=isinstance(table.data.index, pd.RangeIndex))
    for note in table.notes:
        st.caption(note)
    full = bool(st.session_state.get("compare_full_precision", False))
    for col, fmt in zip(st.columns(len(FORMATS)), FORMATS.values(), strict=True):
        col.download_button(fmt.label, data=lambda df=table.data, f=fmt.name, t=table.title, fp=full: export_table(
                                df, f, t, full_precision=fp)[0],
                            file_name=file_name(table.title, fmt.extension), mime=fmt.mime, key=f"dl_{key}_{fmt.name}",
                            on_click="ignore", icon=":material/download:")


def run_label(row) -> str:
    what = f"{row.kind}: its child runs" if row.kind in tables.CONTAINER_KINDS else f"{row.kind}, {row.n_points} points"
    return f"{row.name} ({what}) · {row.run_id}"


@st.cache_resource(show_spinner=False, max_entries=4)
def lineage(path: str, signature: tuple) -> tables.Lineage:
    """Who made each checkpoint, from every point in the store; rebuilt when a run or a point comes or goes."""
    return tables.Lineage(store.points(expand=False))


every_run = store.list_runs()
runs = every_run[every_run["status"] == "finished"].reset_index(drop=True)
if runs.empty:
    st.info("No finished runs yet. Launch one on the Launch page (its Studies tab has the papers' experiments "
            "as presets); its runs appear here once they finish.", icon=":material/info:")
    st.stop()

labels = {row.run_id: run_label(row) for row in runs.itertuples()}
picked = st.multiselect("Runs to compare", list(labels), format_func=labels.get, key="compare_runs",
                        placeholder="Choose finished runs (a recipe or study run brings its child runs)")
if not picked:
    st.info("Choose one or more finished runs above: their points fill the tables below.", icon=":material/info:")
    st.stop()

containers = [r for r in picked if runs.loc[runs["run_id"] == r, "kind"].iloc[0] in tables.CONTAINER_KINDS]
children = runs.loc[runs["parent_id"].isin(containers), "run_id"].tolist() if containers else []
run_ids = list(dict.fromkeys([r for r in picked if r not in containers] + children))

try:
    points = store.points(run_ids) if run_ids else pd.DataFrame()
    # every point of the store: names the models the chosen points started from
    known = lineage(store.path, tuple(zip(every_run["run_id"], every_run["n_points"], strict=True)))
except Exception as e:  # noqa: BLE001 - shown as a message
    show_error(e)
    st.stop()

if not points.empty:
    names = dict(zip(points["point_id"], tables.variant_labels(points, known), strict=True))
    chosen = st.multiselect(
        "Only these points (none chosen: every point of the runs)", list(points["point_id"]), key="compare_points",
        format_func=lambda p: f"#{p} {names[p]} · {points.loc[points['point_id'] == p, 'accuracy'].iloc[0]:.2%}")
    if chosen:
        points = points[points["point_id"].isin(chosen)].reset_index(drop=True)
    st.caption(f"{len(points)} points from {points['run_id'].nunique()} runs.")
elif not containers:
    st.info("The chosen runs recorded no points.", icon=":material/info:")

st.toggle("Full precision in downloads", key="compare_full_precision",
          help="Downloads round each measured value to what was measured (percentages to 2 decimals, fractions to "
               "4, times and ratios to 3 significant digits); on, they keep every digit the store holds.")
tab_names = ["Accuracy × bit width", "Techniques compared", "Breakpoints", "Free pivot", "Points", "Checkpoints"]
if containers:
    tab_names.insert(0, "Study tables")
tabs = dict(zip(tab_names, st.tabs(tab_names), strict=True))

if containers:
    with tabs["Study tables"]:
        for rid in containers:
            try:
                study = studies.study_tables(store, rid)
            except Exception as e:  # noqa: BLE001 - shown as a message
                show_error(e)
                continue
            if study is None:
                st.caption(f"{labels[rid]}: a recipe, not a study's; its child runs are in the other tabs.")
                continue
            st.subheader(f"Study {study.study}")
            if cite(study.seeds, full=True):
                st.caption(f"Reproduces {cite(study.seeds, full=True)}.")
            for i, table in enumerate(study.tables):
                show_table(table, f"study_{rid}_{i}")
            for note in study.notes:
                st.markdown(f"- {note}")

with tabs["Accuracy × bit width"]:
    show_table(tables.accuracy_by_bits(points, known), "bits")

with tabs["Techniques compared"]:
    if points.empty:
        st.info("No points chosen.", icon=":material/info:")
    else:
        per = st.radio("Rows", ["point", "run"], horizontal=True, key="compare_per",
                       format_func={"point": "each point", "run": "one per run (its representative)"}.get)
        rows = tables.representatives(points) if per == "run" else points
        row_ids = [int(p) for p in rows["point_id"]]
        row_names = dict(zip(row_ids, tables.variant_labels(rows, known), strict=True))
        ref = st.selectbox("Compression rate relative to", row_ids, key="compare_reference",
                           index=row_ids.index(tables.default_reference(rows)),
                           format_func=lambda p: f"#{p} {row_names[p]}")
        try:
            show_table(tables.method_comparison(points, known, per=per, reference=ref), "techniques")
        except UserError as e:
            show_error(e)

with tabs["Breakpoints"]:
    x = st.selectbox("x axis", list(X_FIELDS), key="compare_bp_x", format_func=X_LABELS.get)
    try:
        show_table(tables.breakpoint_summary(points, known, x=x), "breakpoints")
        found, _ = tables.curves(points, known)
        if len(found) >= 2:
            teacher_names = {run_id: name for name, (run_id, _) in found.items()}
            teacher = st.selectbox(f"Teacher curve for {cite('002')}'s Table 3 (the other curves are its students)",
                                   [NONE, *teacher_names], key="compare_teacher",
                                   format_func=lambda r: teacher_names.get(r, r))
            if teacher != NONE:
                show_table(tables.teacher_student_table(points, teacher, known), "table3")
    except UserError as e:
        show_error(e)

with tabs["Free pivot"]:
    if points.empty:
        st.info("No points chosen.", icon=":material/info:")
    else:
        groups, numeric = tables.pivot_fields(points)

        def pick(label: str, options: list, default, key: str):
            return st.selectbox(label, options, key=key, index=options.index(default) if default in options else 0)

        left, mid, right, agg_col = st.columns(4)
        with left:
            index = pick("Rows", groups, "method", "compare_pivot_index")
        with mid:
            columns = pick("Columns", [NONE, *groups], "level", "compare_pivot_columns")
        with right:
            values = pick("Values", numeric, "accuracy", "compare_pivot_values")
        with agg_col:
            agg = pick("Aggregation", list(tables.AGGREGATIONS), "mean", "compare_pivot_agg")
        try:
            data = tables.pivot(points, index, None if columns == NONE else columns, values, agg)
            title = f"{values} ({agg}) by {index}" + ("" if columns == NONE else f" and {columns}")
            show_table(tables.Table(title, data), "pivot")
        except UserError as e:
            show_error(e)

with tabs["Points"]:
    if points.empty:
        st.info("No points chosen.", icon=":material/info:")
    else:
        show_table(tables.Table("Points", points.drop(columns=["extra"], errors="ignore")), "points")
        timed = points[points["latency_ms_b1"].notna()] if "latency_ms_b1" in points else points.iloc[:0]
        retime(list(timed["point_id"]), "compare.points", f"Re-time these {len(timed)} timed points now")

with tabs["Checkpoints"]:
    saved = points[points["artifact"].fillna("") != ""] if not points.empty else points
    if saved.empty:
        st.info("None of the chosen points was saved as a checkpoint (runs with --no-save keep none).",
                icon=":material/info:")
    else:
        saved_names = dict(zip(saved["point_id"], tables.variant_labels(saved, known), strict=True))
        artifacts = dict(zip(saved["point_id"], saved["artifact"], strict=True))
        pid = st.selectbox("Variant", list(artifacts), key="compare_variant",
                           format_func=lambda p: f"#{p} {saved_names[p]} — {artifacts[p]}")
        artifact = str(artifacts[pid])
        point_actions({"artifact": artifact}, "compare.point", download=False)  # its zip is the button below
        try:
            directory = checkpoint_directory(artifact)
        except UserError as e:
            st.error(str(e), icon=":material/folder_off:")
        else:
            zip_col, onnx_col = st.columns(2)
            with zip_col:
                st.download_button("Safetensors checkpoint (zip)", data=lambda a=artifact: zip_checkpoint(a),
                                   file_name=f"{directory.name}.zip", mime="application/zip",
                                   key="dl_checkpoint_zip", on_click="ignore", icon=":material/folder_zip:")
                st.caption(f"`{directory}`: meta.json, model.safetensors and whatever else the directory holds.")
            with onnx_col:
                if st.button("Export to ONNX", key="compare_onnx_export", icon=":material/conversion_path:"):
                    with st.spinner("Exporting to ONNX and checking it against PyTorch..."):
                        try:
                            st.session_state["compare_onnx"] = {"artifact": artifact, "file": export_onnx(artifact)}
                        except UserError as e:
                            st.session_state["compare_onnx"] = {"artifact": artifact, "error": str(e)}
                        except Exception as e:  # noqa: BLE001 - a message next to the button, never a traceback
                            st.session_state["compare_onnx"] = {
                                "artifact": artifact, "error": f"ONNX export failed: {type(e).__name__}: {e}"}
                done = st.session_state.get("compare_onnx")
                if done and done["artifact"] == artifact:
                    if "error" in done:
                        st.error(done["error"], icon=":material/error:")
                    else:
                        onnx = done["file"]
                        st.download_button("ONNX file", data=onnx.data, file_name=onnx.file_name,
                                           mime="application/octet-stream", key="dl_onnx", on_click="ignore",
                                           icon=":material/download:")
                        if onnx.check:
                            st.caption(f"Checked: {onnx.check}.")
                        elif onnx.max_abs_diff is not None:
                            st.caption(f"ONNX Runtime against PyTorch on test images: largest logit difference "
                                       f"{onnx.max_abs_diff:.2e}.")
                else:
                    st.caption("Made on request: the export runs the model through ONNX Runtime to check it.")
