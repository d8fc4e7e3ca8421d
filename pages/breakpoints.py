"""Breakpoints (issue #11): being built."""

import streamlit as st

st.title("Breakpoints")
st.info("This page is being built.", icon=":material/construction:")
