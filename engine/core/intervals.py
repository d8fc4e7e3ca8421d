"""Confidence intervals of an accuracy measured on n images: the Wilson score interval (no torch).

One definition for everything that reports an accuracy on a sample of a split (the What-if's subset, a
sweep's or a search's seeded subset) and for the estimator that mixes such measurements.
"""

from __future__ import annotations

import math

Z95 = 1.959964  # the two-sided 95 % normal quantile


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion correct/n (Wilson, 1927): sound near 0 and 1 and for small n."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_half_width(accuracy: float, n: int) -> float:
    lo, hi = wilson(round(accuracy * n), n)
    return (hi - lo) / 2


def accuracy_interval(accuracy: float, n: int) -> dict[str, float]:
    """`accuracy_lo` / `accuracy_hi`: the 95 % Wilson interval of an accuracy measured on n images, as point fields."""
    lo, hi = wilson(round(accuracy * n), n)
    return {"accuracy_lo": lo, "accuracy_hi": hi}
