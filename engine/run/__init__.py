"""Layer 6, orchestration: the job runner, recipes, studies, the Launch page's choices and executors (local, ray).

Importing the layer registers its own tasks, `recipe`, `study` and `plan`, beside the methods' (engine/methods/tasks.py),
so the job runner, the CLI and the app find them by name; and hands the pruning sweeps their breakpoint finder
(engine/analysis/breakpoint.py), so a sweep on a test subset measures its breakpoints again on the whole split.
"""

from engine.analysis.breakpoint import reported_levels
from engine.methods.prune.sweep import add_breakpoint_finder
from engine.run import planner, recipes, studies  # noqa: F401  (register the "recipe", "study" and "plan" tasks)

add_breakpoint_finder(reported_levels)
