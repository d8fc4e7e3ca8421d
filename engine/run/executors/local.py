"""The `local` executor: a recipe's units in this process, on worker threads, recorded live."""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass
from typing import Any

from engine.core.config import Config
from engine.core.errors import Cancelled, UserError
from engine.run.executors.base import Executor, Outcome, register_executor
from engine.run.jobs import StoreContext, execute_run


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
        ctx = StoreContext(self.store, run_id)
        handle = _LocalHandle(run_id, None, ctx)  # type: ignore[arg-type]
        handle.future = self._pool.submit(self._run, handle, unit.task, config)
        return handle

    def _run(self, handle: _LocalHandle, task: str, config: Config) -> Outcome:
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
