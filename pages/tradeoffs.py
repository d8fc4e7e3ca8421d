"""Trade-offs (issue #11): being built."""

import streamlit as st

st.title("Trade-offs")
st.info("This page is being built.", icon=":material/construction:")
