"""What-if (issue #11): being built."""

import streamlit as st

st.title("What-if")
st.info("This page is being built.", icon=":material/construction:")
