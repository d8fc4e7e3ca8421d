"""Compression Lab engine: data, models, training, measurement and compression methods.

Nothing in this package imports Streamlit or DuckDB; pages and the store sit on either side of it.
"""
