"""Executors: where a recipe's units run. The driver (engine.run.recipes.run_recipe) submits every unit whose
inputs are ready, waits for outcomes and records them; units that do not depend on each other are
independent submissions, so an executor may run them side by side.

An executor receives a unit, its validated config (input checkpoints filled in) and the id of the child
run the driver created; it hands back an `Outcome`: the status, the Points (each with its `artifact`)
and the artifact paths. `LocalExecutor` runs units in this process through engine.run.jobs.execute_run, so
progress, metrics and events reach the store live through the process's one writer (`recorded=True`).
The `ray` executor (engine/run/executors/ray.py, optional: requirements-ray.txt) runs each unit as a Ray task
and returns the points with `recorded=False`; the driver then writes them: only the driver's process
writes the store. `available_executors()` names the executors that can run here (for the app's Launch page).
"""

from __future__ import annotations

import concurrent.futures as cf
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from engine.core.config import Config
from engine.core.errors import Cancelled, UserError
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


@dataclass(eq=False)
class _LocalHandle:
    run_id: str
    future: cf.Future
    ctx: Any  # the StoreContext, whose token cancels the run


@register_executor("local")
class LocalExecutor(Executor):
    """Units run in this process on `workers` threads (one by default: PyTorch already uses every core),
    each through engine.run.jobs.execute_run with its own StoreContext and cancel token, as the job runner does."""

    records_live = True

    def __init__(self, store, workers: int = 1) -> None:
        self.store = store
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="compression-lab-recipe")

    def submit(self, unit, config: Config, run_id: str) -> _LocalHandle:
        from engine.run.jobs import StoreContext

        ctx = StoreContext(self.store, run_id)
        handle = _LocalHandle(run_id, None, ctx)  # type: ignore[arg-type]
        handle.future = self._pool.submit(self._run, handle, unit.task, config)
        return handle

    def _run(self, handle: _LocalHandle, task: str, config: Config) -> Outcome:
        from engine.run.jobs import execute_run

        ctx = handle.ctx
        try:
            points = execute_run(self.store, handle.run_id, task, config, ctx)
        except Cancelled as e:
            return Outcome(handle, handle.run_id, "interrupted" if ctx.interrupt_reason else "cancelled",
                           list(ctx.points), error=str(e))
        except Exception as e:  # noqa: BLE001 - recorded in the store by execute_run; the siblings go on
            error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
            return Outcome(handle, handle.run_id, "failed", list(ctx.points), error=error)
        return Outcome(handle, handle.run_id, "finished", points, [p.artifact for p in points if p.artifact])

    def wait(self, handles: list, timeout: float | None = None) -> list[Outcome]:
        if not handles:
            return []
        by_future = {h.future: h for h in handles}
        done, _ = cf.wait(by_future, timeout=timeout,
                          return_when=cf.ALL_COMPLETED if timeout is None else cf.FIRST_COMPLETED)
        return [self._outcome(by_future[f]) for f in done]

    def _outcome(self, handle: _LocalHandle) -> Outcome:
        if handle.future.cancelled():
            return Outcome(handle, handle.run_id, "interrupted" if handle.ctx.interrupt_reason else "cancelled")
        return handle.future.result()

    def cancel(self, handle: _LocalHandle, reason: str | None = None) -> None:
        if reason:
            handle.ctx.interrupt_reason = reason
        handle.ctx.cancel.cancel()
        if handle.future.cancel():  # it had not started
            status = "interrupted" if reason else "cancelled"
            self.store.end_run(handle.run_id, status, message=f"{status}: {reason}" if reason else
                               "cancelled before it started")

    def run_id(self, handle: _LocalHandle) -> str:
        return handle.run_id

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


import engine.run.executors.ray  # noqa: E402, F401 - registers "ray" (Ray itself is imported only when used)
