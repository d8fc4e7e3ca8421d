"""Home (the default page): what the tool does, the store in use, run counts and recent runs, and a
one-click demo."""

from __future__ import annotations

import streamlit as st

from engine.analysis.study_tables import cite
from engine.core.errors import UserError
from engine.run.studies import StudyTask
from pages.shared import open_runner_or_stop, show_error

DEMO = {"study": "kd-prune", "dataset": "mnist5k", "quick": True}
STATUS_ORDER = ("running", "queued", "finished", "failed", "cancelled", "interrupted")


st.title("Compression Lab")
st.markdown("Bring an image classifier (train one here or upload its weights), compress it with quantization, "
            "pruning, distillation or chains of them,  \nand see what each choice costs and buys: accuracy "
            "against size, latency and sparsity, and where compression starts to hurt.")
runner = open_runner_or_stop()
store = runner.store
st.caption(f"Run store: `{store.path}` (change it under Settings in the sidebar)")
runs = store.list_runs(top_level=True)
if runs.empty:
    st.info("No runs yet. Start with the demo below: it distils students from a teacher on mnist5k and "
            "prunes them, with budgets cut so real curves appear within minutes. Or launch any method on "
            "the Launch page.", icon=":material/lightbulb:")
else:
    counts = runs["status"].value_counts()
    cols = st.columns(len(STATUS_ORDER))
    for col, status in zip(cols, STATUS_ORDER, strict=True):
        col.metric(status, int(counts.get(status, 0)))
    st.subheader("Recent runs")
    st.dataframe(runs.head(8)[["name", "kind", "status", "progress", "n_points", "created_at"]],
                 hide_index=True, key="home.recent",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0,
                                                                            max_value=1.0)})
    st.page_link("pages/runs.py", label="All runs", icon=":material/list_alt:")
st.subheader("Demo")
st.write(f"The kd-prune study, quick, on mnist5k ({cite('002', full=True)}): a teacher, a scratch student and KD students, "
         "then the teacher and the best students pruned 0–90 %. Quick budgets: the curves are real, the "
         "numbers are a check, not findings.")
if st.button("Run the demo", type="primary", icon=":material/play_arrow:", key="home.demo"):
    try:
        run_id = runner.submit("study", StudyTask(**DEMO), name="demo: study kd-prune (quick)")
        st.success(f"Queued the demo as run {run_id}. Watch it on Runs; its points appear on Trade-offs "
                   f"and Breakpoints as they finish.", icon=":material/schedule:")
        st.page_link("pages/runs.py", label="Open Runs", icon=":material/list_alt:")
    except UserError as e:
        show_error(e)
