"""Layer 6, orchestration: the job runner, recipes, studies, the Launch page's choices and executors (local, ray).

Importing the layer registers its own tasks, `recipe`, `study` and `plan`, beside the methods' (engine/methods/tasks.py),
so the job runner, the CLI and the app find them by name.
"""

from engine.run import planner, recipes, studies  # noqa: F401  (register the "recipe", "study" and "plan" tasks)
