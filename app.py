"""Compression Lab: the Streamlit entry. It frames and routes; pages hold the screens."""

import streamlit as st

st.set_page_config(page_title="Compression Lab", page_icon=":material/compress:", layout="wide")

pages = [
    st.Page("pages/overview.py", title="Datasets and models", icon=":material/dataset:", default=True),
]
st.navigation(pages).run()
