"""Compression Lab: the Streamlit entry. It frames and routes; pages hold the screens."""

import streamlit as st

from pages.shared import choose_store
from store import default_db_path

st.set_page_config(page_title="Compression Lab", page_icon=":material/compress:", layout="wide")

with st.sidebar.expander("Settings"):
    st.text_input("Run store (DuckDB file)", value=default_db_path(), key="db_path",
                  help="Runs are recorded here: a .duckdb file in the store directory ($COMPRESSION_LAB_STORE_DIR, "
                       "default the working directory). The default is set by $COMPRESSION_LAB_DB.")
choose_store()

pages = [
    st.Page("pages/overview.py", title="Datasets and models", icon=":material/dataset:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/list_alt:"),
]
st.navigation(pages).run()
