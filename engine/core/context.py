"""What a running piece of work sees: progress reporting, logging and its cancel token.

Methods take a `RunContext` and never know whether they run in the CLI, in a test or in a
background job. The job runner's context (engine/run/jobs.py) writes to the store; `ConsoleContext`
draws a tqdm bar; the base class records points in memory and nothing else.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from engine.core.progress import CancelToken, Progress

if TYPE_CHECKING:
    from engine.core.point import Point


class RunContext:
    run_id: str | None = None

    def __init__(self, cancel: CancelToken | None = None) -> None:
        self.cancel = cancel or CancelToken()
        self.points: list[Point] = []
        self.timings: list[tuple[int, dict]] = []  # (stored point id, its new timing), from a re-measure run
        self.latency_reference = None  # the run's baseline runner, which later points are timed beside

    def progress(self, p: Progress) -> None:
        """Called often (every batch): implementations must be cheap."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Per-step or per-epoch history: {key: value} at `step`."""

    def log_point(self, point: Point) -> None:
        """One evaluated model variant (engine/core/point.py)."""
        self.points.append(point)

    def log_timing(self, point_id: int, timing: dict) -> None:
        """A new timing (engine.core.point.LATENCY_FIELDS) of a point already stored: a re-measure run's result."""
        self.timings.append((point_id, timing))

    def log_event(self, message: str, level: str = "info") -> None:
        """A log line for the run (a fallback taken, a warning, a milestone)."""

    def log_artifact(self, path: str, kind: str) -> None:
        """A file the run produced (a checkpoint directory, an exported model)."""


class ConsoleContext(RunContext):
    """A tqdm progress bar on stderr, and events printed to stderr; quiet for --json."""

    def __init__(self, quiet: bool = False, cancel: CancelToken | None = None) -> None:
        super().__init__(cancel)
        self.quiet = quiet
        self._bar = None

    def progress(self, p: Progress) -> None:
        if self.quiet:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=1000, file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        self._bar.n = int(p.fraction * 1000)
        self._bar.set_description(p.message, refresh=False)
        if p.metrics:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in list(p.metrics.items())[:4]}, refresh=False)
        self._bar.refresh()

    def log_event(self, message: str, level: str = "info") -> None:
        if not self.quiet or level in ("warning", "error"):
            print(f"[{level}] {message}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
