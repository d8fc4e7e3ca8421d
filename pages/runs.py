"""Runs: the live table (name, tags, status, progress, ETA, message) filtered by name and tag, cancel, and a
selected run's details: rename, tag and note it; config, lineage, training curves, points, log and error;
re-run with the same config; delete."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from engine.core.errors import UserError
from engine.model.checkpoint import describe_lineage, read_meta
from engine.model.outputs import remove_artifacts
from pages.figures.runs import metric_history_figure
from pages.point_actions import latency_history, points_actions, retime
from pages.shared import open_runner_or_stop, show_error
from store import parse_tags

st.title("Runs")
runner = open_runner_or_stop()
store = runner.store
st.caption(f"Store: `{store.path}`")

DETAILS_REFRESH_S = 2  # how often a queued or running run's details are read again
CANCELLING = "cancelling…"
SHOWN = ["name", "tags", "kind", "status", "progress", "eta", "message", "n_points", "duration_s", "created_at", "run_id"]


def table_view(runs: pd.DataFrame, now: pd.Timestamp, cancelling: set[str] = frozenset()) -> pd.DataFrame:
    """The runs as the table shows them: an ETA in words for running runs and the seconds each took; a run that
    was asked to stop (`cancelling`) says so until its worker has stopped."""
    view = runs.copy()
    stopping = view["run_id"].isin(cancelling) & view["status"].isin(["queued", "running"])
    view.loc[stopping, "status"] = "cancelling"
    view.loc[stopping, "message"] = CANCELLING
    eta = view["eta_s"].where(view["status"] == "running")
    view["eta"] = eta.map(lambda s: "" if pd.isna(s) else f"{int(s // 60)} min {int(s % 60)} s" if s >= 60
                          else f"{int(s)} s")
    end = view["ended_at"].fillna(now)
    view["duration_s"] = (end - view["started_at"]).dt.total_seconds()
    return view[SHOWN]


@st.fragment(run_every=2)
def live_table() -> None:
    runs = store.list_runs(limit=500, top_level=not st.session_state.get("runs.children", False),
                           tag=st.session_state.get("runs.filter_tag"),
                           name_contains=st.session_state.get("runs.filter_name") or None)
    if runs.empty and (st.session_state.get("runs.filter_tag") or st.session_state.get("runs.filter_name")):
        st.info("No run matches the name and tag filters.", icon=":material/filter_alt:")
        return
    if runs.empty:
        st.info("No runs yet. Launch one on the Launch page (or try a quick study there), or from a terminal "
                "with `python -m engine train --db ...`.", icon=":material/info:")
        return
    active = runner.active()
    view = table_view(runs, pd.Timestamp.now(tz="UTC"), {r for r, state in active.items() if state == "cancelling"})
    # a new key after a delete: the row index the old selection held now points at the neighbouring run
    event = st.dataframe(
        view, hide_index=True, key=f"runs.table.{st.session_state.get('runs.table_version', 0)}", on_select="rerun",
        selection_mode="single-row",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0),
            "duration_s": st.column_config.NumberColumn("seconds", format="%.1f"),
            "n_points": st.column_config.NumberColumn("points"),
        },
    )
    rows = tuple(event.selection.rows) if event is not None else ()
    chosen = str(view["run_id"].iloc[rows[0]]) if rows and rows[0] < len(view) else None
    if rows != st.session_state.get("runs.table_rows"):  # the user chose a row
        st.session_state["runs.table_rows"] = rows
        if chosen and chosen != st.session_state.get("runs.selected"):
            st.session_state["runs.selected"] = chosen
            st.session_state.pop("runs.deleted", None)  # the message was about the last delete
            st.rerun()  # the details below belong to the whole page
    elif chosen != st.session_state.get("runs.selected") and rows:
        # the same row index, but the rows moved under it (a new run on top, a filter): the selection is by
        # index, so it now marks another run; it is cleared, and the chosen run's details stay
        st.session_state["runs.table_version"] = st.session_state.get("runs.table_version", 0) + 1
        st.session_state["runs.table_rows"] = ()
        st.rerun()
    if active:
        pick = st.selectbox("Active run", list(active), key="runs.active",
                            format_func=lambda r: f"{r} ({CANCELLING if active.get(r) == 'cancelling' else active.get(r)})")
        # cancelled in the click's callback, before the rerun draws the table: it says "cancelling…" at once
        st.button("Cancel run", icon=":material/stop:", key="runs.cancel", on_click=cancel_picked,
                  disabled=active.get(pick) == "cancelling")
    if cancelled := st.session_state.pop("runs.cancelled", None):
        st.toast(f"Cancelling {cancelled}: it stops at its next step", icon=":material/stop:")


def cancel_picked() -> None:
    pick = st.session_state.get("runs.active")
    if pick and runner.cancel(pick):
        st.session_state["runs.cancelled"] = pick


def lineage_lines(artifacts: pd.DataFrame) -> list[str]:
    lines = []
    for path in artifacts["path"].drop_duplicates():
        try:
            lines.append(f"`{path}`: {describe_lineage(read_meta(path))}")
        except Exception:  # noqa: BLE001 - a folder deleted since: said so, not an error
            lines.append(f"`{path}`: no longer on disk")
    return lines


LIVE = ("queued", "running")


def details(run_id: str) -> None:
    """The selected run's details; while it is queued or running they are read again every DETAILS_REFRESH_S
    (curves, progress, points, log), and once it has ended the page is drawn once more, static."""
    live = store.get_run(run_id)["status"] in LIVE
    st.fragment(run_every=DETAILS_REFRESH_S if live else None)(run_details)(run_id, live)


def run_details(run_id: str, live: bool) -> None:
    try:
        run = store.get_run(run_id)
    except Exception as e:  # noqa: BLE001 - e.g. deleted meanwhile: shown as a message
        show_error(e)
        return
    if live and run["status"] not in LIVE:
        st.rerun()  # it has ended: the whole page again (the table, and these details without the refresh)
    try:
        show_details(run)
    except Exception as e:  # noqa: BLE001 - shown as a message
        show_error(e)


def show_details(run: dict) -> None:
    status = CANCELLING if runner.active().get(run["run_id"]) == "cancelling" else run["status"]
    st.subheader(run["name"])
    facts = [f"**{status}**", run["kind"], *(f"seed {run['seed']}" for _ in [0] if run["seed"] is not None),
             *(str(run[k]) for k in ("device",) if run[k]), *(f"code {run['code_version']}" for _ in [0]
                                                              if run["code_version"]), f"run `{run['run_id']}`"]
    st.write(" · ".join(facts))  # a fact the run does not have (a What-if's seed) is left out, not "None"
    if run["stage"]:
        st.caption(f"Recipe unit: stage **{run['stage']}**, swept {json.dumps(run['sweep'])}, key `{run['unit_key']}`")
    if run["tags"] or run["note"]:
        st.markdown(" ".join(f":blue-badge[{t}]" for t in run["tags"]) + (f"\n\n{run['note']}" if run["note"] else ""))
    label_form(run)
    if run["status"] in LIVE:
        st.progress(min(max(float(run["progress"] or 0.0), 0.0), 1.0), text=run["message"] or status)
    if run["error"]:
        st.error(run["error"], icon=":material/error:")
        with st.expander("Traceback"):
            st.code(run["traceback"] or "", language="text")
    left, right = st.columns(2)
    with left.expander("Config"):
        st.json(json.loads(run["config"]) if isinstance(run["config"], str) else run["config"])
    artifacts = store.artifacts(run["run_id"])
    with right.expander("Lineage of its checkpoints", expanded=not artifacts.empty):
        lines = lineage_lines(artifacts) if not artifacts.empty else []
        st.markdown("\n".join(f"- {line}" for line in lines) or "This run saved no checkpoint.")
    children = store.list_runs(parent=run["run_id"])
    if not children.empty:
        st.markdown(f"**{len(children)} child runs** (the units of this recipe or study)")
        st.dataframe(children[["name", "kind", "status", "n_points", "run_id"]], hide_index=True,
                     key="runs.children_table")
    points = store.points(run["run_id"])
    if not points.empty:
        st.markdown("**Points**")
        st.dataframe(points.drop(columns=["params", "extra"], errors="ignore"), hide_index=True, key="runs.points")
        points_actions(points, "runs.point")  # Open in What-if, Launch from it, Download (pages/point_actions.py)
        chosen = st.multiselect("Points to re-time", list(points["point_id"]), key="runs.retime_points",
                                default=list(points.loc[points["latency_ms_b1"].notna(), "point_id"]),
                                format_func=lambda p: f"#{p}")
        retime(chosen, "runs.points")
        for pid in sorted(store.retimed(points["point_id"])):
            latency_history(pid)  # an expander for each point timed more than once
    history = store.metric_history(run["run_id"])
    epoch_keys = [k for k in history["key"].unique() if not k.startswith("batch_")] if not history.empty else []
    if epoch_keys:
        keys = st.multiselect("Training curves", epoch_keys, key="runs.curves",
                              default=[k for k in epoch_keys if "accuracy" in k][:3])
        if keys:
            st.plotly_chart(metric_history_figure(history, keys), key="runs.curves_chart")
    with st.expander("Log"):
        st.dataframe(store.events(run["run_id"]), hide_index=True, key="runs.log")
    actions(run, artifacts)


def label_form(run: dict) -> None:
    """Rename, tag and note the run: all three are checked, then written in one commit."""
    rid = run["run_id"]
    with st.expander("Name, tags and note"), st.form(f"runs.labels.{rid}", border=False):
        name = st.text_input("Name", value=run["name"], key=f"runs.label_name.{rid}")
        tags = st.text_input("Tags (separated by commas)", value=", ".join(run["tags"]), key=f"runs.label_tags.{rid}")
        note = st.text_area("Note", value=run["note"] or "", key=f"runs.label_note.{rid}")
        if st.form_submit_button("Save", icon=":material/save:", key="runs.label_save"):
            try:
                store.label_run(rid, name=name, tags=parse_tags(tags), note=note)
                st.session_state["runs.labelled"] = rid
                st.rerun()
            except UserError as e:
                show_error(e)


def actions(run: dict, artifacts: pd.DataFrame) -> None:
    left, right = st.columns(2)
    if left.button("Re-run with the same config", icon=":material/replay:", key="runs.rerun"):
        try:
            config = json.loads(run["config"]) if isinstance(run["config"], str) else run["config"]
            new = runner.submit(run["kind"], config, name=run["name"], tags=run["tags"])
            st.success(f"Queued run {new} with the same config.", icon=":material/schedule:")
        except UserError as e:
            show_error(e)
    if run["status"] in ("queued", "running"):
        right.caption("A queued or running run cannot be deleted: cancel it first.")
        return
    # keyed by the run: the popover of the run drawn here after a delete starts closed
    with right.popover("Delete this run", icon=":material/delete:", key=f"runs.delete_popover.{run['run_id']}"):
        st.write(f"Delete **{run['name']}**, its child runs and their points, metrics and log from the store?")
        remove = st.checkbox("Also delete the checkpoints it saved (only folders Compression Lab created, and "
                             "none that another run still uses)", value=True, key="runs.delete_files")
        if st.button("Delete for good", type="primary", key="runs.delete"):
            try:
                paths = store.delete_run(run["run_id"])
                removed, left_alone = [], []
                if remove:
                    removed, left_alone = remove_artifacts(paths, store.paths_in_use())
                # nothing selected or armed afterwards: no row, no open confirmation (one more click must not
                # delete the run that took this one's place)
                for key in ("runs.selected", "runs.delete_files", "runs.curves"):
                    st.session_state.pop(key, None)
                st.session_state["runs.table_version"] = st.session_state.get("runs.table_version", 0) + 1
                st.session_state["runs.deleted"] = (run["run_id"], run["name"], removed, left_alone)
                st.rerun()
            except UserError as e:
                show_error(e)


deleted = st.session_state.get("runs.deleted")  # kept until another row is chosen
if deleted:
    run_id, name, removed, left_alone = deleted
    st.success(f"Deleted run {name} ({run_id})" + (f" and {len(removed)} checkpoint folder(s)" if removed else "") + ".",
               icon=":material/delete:")
    if left_alone:
        st.caption("Left on disk: " + "; ".join(left_alone))

if st.session_state.pop("runs.labelled", None):
    st.toast("Saved the run's name, tags and note", icon=":material/save:")
left, mid, right = st.columns([2, 2, 3])
left.text_input("Name contains", key="runs.filter_name", placeholder="any name")
mid.selectbox("Tag", store.all_tags(), index=None, key="runs.filter_tag", placeholder="any tag")
right.toggle("Show recipe and study units (child runs)", key="runs.children")
live_table()

selected = st.session_state.get("runs.selected")
if selected:
    try:
        details(selected)
    except Exception as e:  # noqa: BLE001 - shown as a message
        show_error(e)
else:
    st.caption("Select a row to see the run's config, lineage, curves, points and log.")
