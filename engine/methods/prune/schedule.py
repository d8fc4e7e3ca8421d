"""Schedules are pure functions returning the target sparsity after each pruning step."""

from __future__ import annotations

from engine.core.config import check_range
from engine.core.errors import ConfigError

DEFAULT_LEVELS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(10))  # 0%..90%, seed 002


def geometric(rate: float, steps: int) -> list[float]:
    """Prune `rate` of what remains at each step: 1 - (1 - rate)^i (Han et al. 2015; Frankle & Carbin 2019)."""
    check_range("rate", rate, 0, 1, lo_open=True, hi_open=True)
    check_range("iterations", steps, 1, 1000)
    return [1 - (1 - rate) ** i for i in range(1, steps + 1)]


def check_levels(item: str, levels: tuple[float, ...] | list[float]) -> None:
    """A list of `item` values (sparsities, ratios): non-empty, each in [0, 1)."""
    if len(levels) == 0:
        raise ConfigError(f"give at least one {item} in [0, 1)")
    for v in levels:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{item} must be a number in [0, 1), got {v!r}")
        check_range(item, float(v), 0, 1, hi_open=True)


def check_schedule(levels: tuple[float, ...] | list[float]) -> None:
    """An iterative schedule: sparsities in (0, 1) that strictly increase (masks only ever grow)."""
    check_levels("schedule sparsity", levels)
    for a, b in zip(levels, levels[1:]):
        if b <= a:
            raise ConfigError(f"schedule must strictly increase (each step prunes more), got {a:g} then {b:g}")
    if levels[0] <= 0:
        raise ConfigError(f"schedule starts at sparsity 0; its first step must prune something, got {levels[0]:g}")
