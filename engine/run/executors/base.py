"""What an executor is: the interface the recipe driver calls, its outcome, and the registry by name."""


from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from engine.core.config import Config
from engine.core.errors import UserError
from engine.core.point import Point
from engine.core.registry import Registry


@dataclass
class Outcome:
    """How one unit ended, as the driver records it."""

    handle: Any
    run_id: str
    status: str  # finished | failed | cancelled | interrupted
    points: list[Point] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    error: str | None = None
    recorded: bool = True  # the executor already wrote the points and the end status (see records_live)
    traceback: str | None = None  # a failed unit's traceback, when the executor has one (recorded=False)


class Executor(ABC):
    """Runs units for the recipe driver. Handles are opaque and hashable."""

    # True: the executor writes each run's progress, points and end status to the store as it goes (in this
    # process). False: the driver marks a run running when it is submitted and records its Outcome.
    records_live = False

    @classmethod
    def check_available(cls) -> None:
        """Raises UserError when this executor cannot run here (checked before a recipe starts)."""
        return None

    @abstractmethod
    def submit(self, unit, config: Config, run_id: str) -> Any:
        """Starts (or queues) one unit and returns its handle at once."""

    @abstractmethod
    def wait(self, handles: list, timeout: float | None = None) -> list[Outcome]:
        """The outcomes of the handles that have ended, waiting until at least one has (or `timeout` passes)."""

    @abstractmethod
    def cancel(self, handle, reason: str | None = None) -> None:
        """Stops a unit: a queued one never starts, a running one stops at its next batch.
        With a `reason` (a shutdown, Ctrl-C) the run is recorded as interrupted rather than cancelled."""

    @abstractmethod
    def run_id(self, handle) -> str:
        """The child run a handle runs."""

    def shutdown(self) -> None:
        """Releases the workers; a unit still inside a step that ignores its token is not waited for."""
        return None


EXECUTORS: Registry[type[Executor]] = Registry("executor")


def register_executor(name: str):
    return EXECUTORS.register(name)


def make_executor(name: str, store, workers: int = 1, **options) -> Executor:
    """The executor `name` for a recipe; `options` are that executor's own (ray: address, cpus, gpus, shared)."""
    cls = EXECUTORS.get(name)
    cls.check_available()
    return cls(store, workers, **options)


def available_executors() -> list[str]:
    """The executors that can run here, `local` first (`ray` only where Ray is installed); cheap: imports nothing."""
    names = []
    for name, cls in EXECUTORS.items():
        try:
            cls.check_available()
        except UserError:
            continue
        names.append(name)
    return names
