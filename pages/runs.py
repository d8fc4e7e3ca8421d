"""Every recorded run: live status and progress, cancel, and one run's points, metrics and log."""

import streamlit as st

from pages.figures.runs import metric_history_figure
from pages.shared import open_runner_or_stop, show_error

st.title("Runs")
runner = open_runner_or_stop()
store = runner.store
st.caption(f"Store: `{store.path}`")

STATUS_ICONS = {"queued": "⏳", "running": "▶️", "finished": "✅", "failed": "❌", "cancelled": "⏹️",
                "interrupted": "⚠️"}


@st.fragment(run_every=2)
def runs_table() -> None:
    runs = store.list_runs(limit=200)
    if runs.empty:
        st.info("No runs yet. Start one on the Train page, or with `python -m engine train --db ...`.")
        return
    view = runs.assign(status=runs["status"].map(lambda s: f"{STATUS_ICONS.get(s, '')} {s}"))
    st.dataframe(
        view[["run_id", "name", "status", "progress", "message", "n_points", "duration_s", "created_at"]],
        hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0),
            "duration_s": st.column_config.NumberColumn("seconds", format="%.1f"),
        },
    )
    active = runner.active()
    if active:
        pick = st.selectbox("Active run", list(active), format_func=lambda r: f"{r} ({active[r]})")
        if st.button("Cancel run", icon=":material/stop:"):
            runner.cancel(pick)
            st.toast(f"Cancelling {pick}")


runs_table()

st.subheader("Run details")
run_id = st.text_input("Run id (or a unique prefix)")
if run_id:
    try:
        run = store.get_run(run_id)
        st.write(f"**{run['name']}** — {run['status']}, seed {run['seed']}, {run['device']}, code {run['code_version']}")
        if run["error"]:
            st.error(run["error"])
            with st.expander("Traceback"):
                st.code(run["traceback"] or "", language="text")
        points = store.points(run["run_id"])
        if not points.empty:
            st.dataframe(points.drop(columns=["params", "extra"], errors="ignore"), hide_index=True)
            st.download_button("Export points (CSV)", points.to_csv(index=False), f"points-{run['run_id']}.csv",
                               "text/csv")
        history = store.metric_history(run["run_id"])
        epoch_keys = [k for k in history["key"].unique() if not k.startswith("batch_")] if not history.empty else []
        if epoch_keys:
            keys = st.multiselect("Metrics", epoch_keys, default=[k for k in epoch_keys if "accuracy" in k][:3])
            if keys:
                st.plotly_chart(metric_history_figure(history, keys))
        with st.expander("Log"):
            st.dataframe(store.events(run["run_id"]), hide_index=True)
    except Exception as e:  # noqa: BLE001 - shown as a message
        show_error(e)
