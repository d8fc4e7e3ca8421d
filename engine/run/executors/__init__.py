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

from engine.run.executors import local, ray  # noqa: F401  (each registers itself by name)
from engine.run.executors.base import (
    EXECUTORS,
    Executor,
    Outcome,
    available_executors,
    make_executor,
    register_executor,
)
from engine.run.executors.local import LocalExecutor

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "Outcome", "available_executors", "make_executor",
           "register_executor"]
