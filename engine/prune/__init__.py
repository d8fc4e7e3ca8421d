"""Pruning: unstructured magnitude masks, structured channel removal, sweeps with repeats,
iterative pruning, lottery tickets and per-layer sensitivity.

Split as in Torch-Pruning: what to score (importance.py), how to cut (masks.py for single
weights, channels.py for channels through Torch-Pruning), schedules as pure functions
(schedule.py). Each method is one file that registers a task named `prune.<method>`.
"""

from engine.prune import (  # noqa: F401 - importing registers the tasks
    iterative,
    lottery_ticket,
    sensitivity,
    structured,
    unstructured,
)

METHODS = ("l1_unstructured", "global_unstructured", "structured", "iterative", "lottery_ticket", "sensitivity")


def task_name(method: str) -> str:
    return f"prune.{method}"
