"""Progress reports and cancellation, shared by the train loop, every method and the job runner."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.core.errors import Cancelled


@dataclass
class Progress:
    fraction: float  # 0..1 of the whole piece of work
    message: str = ""
    epoch: int | None = None
    step: int | None = None
    eta_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # latest values, e.g. {"loss": 0.31}


ProgressFn = Callable[[Progress], None]


class CancelToken:
    """Set from any thread; checked by the worker at least once per batch."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


class Eta:
    """Estimates the time left from the fraction done so far."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, fraction: float) -> float | None:
        if fraction <= 0:
            return None
        elapsed = time.perf_counter() - self.start
        return elapsed * (1 - fraction) / fraction


def scaled(progress: ProgressFn | None, start: float, end: float) -> ProgressFn | None:
    """Maps a sub-task's 0..1 progress onto [start, end] of the parent's, e.g. one level of a sweep; call it
    as the sub-task starts: the ETA is the parent's time left at the pace of the sub-task so far."""
    if progress is None:
        return None
    began = time.perf_counter()

    def report(p: Progress) -> None:
        fraction = start + (end - start) * p.fraction
        done = fraction - start
        eta = (time.perf_counter() - began) * (1 - fraction) / done if done > 0 else None
        progress(Progress(fraction, p.message, p.epoch, p.step, eta, p.metrics))

    return report
