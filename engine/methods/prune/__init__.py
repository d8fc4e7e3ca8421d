"""Pruning: unstructured magnitude masks, structured channel removal, sweeps with repeats,
iterative pruning, lottery tickets and per-layer sensitivity.

Split as in Torch-Pruning: what to score (importance.py), how to cut (masks.py for single
weights, channels.py for channels through Torch-Pruning), schedules as pure functions
(schedule.py). Each method is one file that declares itself with `@prune_method` (common.py),
registering the task `prune.<method>`; every module here is imported, so a new file is found
without being listed anywhere.
"""

from engine.methods.registry import import_family_modules, register_family

register_family("prune", package=__name__, title="Prune", from_checkpoint=True,
                description="prune a checkpoint: unstructured and structured sweeps, iterative pruning, lottery "
                            "tickets, per-layer sensitivity")
import_family_modules(__name__, __path__)
