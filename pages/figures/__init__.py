"""Plain functions that turn store DataFrames into Plotly figures, one module per page.

Tests call them without a browser. Pages import them as `from pages.figures.<page> import ...`.
"""
