"""Layer 5, analysis: pure functions of points and runs (breakpoints, trade-offs, seed tables, exports)."""
