"""Compression Lab: the Streamlit entry. It frames and routes; pages hold the screens."""

import streamlit as st

from pages.shared import choose_store, run_notices
from store import default_db_path

st.set_page_config(page_title="Compression Lab", page_icon=":material/compress:", layout="wide")

with st.sidebar.expander("Settings"):
    st.text_input("Run store (DuckDB file)", value=default_db_path(), key="db_path",
                  help="Runs are recorded here: a .duckdb file in the store directory ($COMPRESSION_LAB_STORE_DIR, "
                       "default the working directory). The default is set by $COMPRESSION_LAB_DB.")
choose_store()
with st.sidebar:
    run_notices()  # a toast when a run ends, on whichever page the user is

pages = {
    "": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/overview.py", title="Datasets and models", icon=":material/dataset:"),
    ],
    "Run": [
        st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/list_alt:"),
    ],
    "Explore": [
        st.Page("pages/tradeoffs.py", title="Trade-offs", icon=":material/scatter_plot:"),
        st.Page("pages/breakpoints.py", title="Breakpoints", icon=":material/show_chart:"),
        st.Page("pages/whatif.py", title="What-if", icon=":material/tune:"),
        st.Page("pages/compare.py", title="Compare & export", icon=":material/table_view:"),
        st.Page("pages/recommend.py", title="Recommend", icon=":material/recommend:"),
        st.Page("pages/plan.py", title="Plan", icon=":material/explore:"),
    ],
}
st.navigation(pages).run()
