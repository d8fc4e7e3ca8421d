"""Compare & export (issue #11): being built."""

import streamlit as st

st.title("Compare & export")
st.info("This page is being built.", icon=":material/construction:")
