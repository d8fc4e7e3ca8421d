"""`python -m engine run RECIPE` and `python -m engine validate RECIPE`: recipes from the command line.

`run` records the recipe as a parent run (kind "recipe") with one child run per unit, in --db (default:
the usual store), reusing every unit a finished run of the same store already computed. `validate`
checks a recipe without running anything and prints the size of its expanded grid.
"""

from __future__ import annotations

import argparse

from engine.cli.common import add_run_args, format_point, print_json, run_labels
from engine.core.context import ConsoleContext
from engine.run.executors import EXECUTORS
from engine.run.jobs import run_sync
from engine.run.recipes import RECIPE_TASK, RecipeTask, load_recipe


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a recipe (YAML or JSON): chained tasks with sweep axes; finished units are "
                                   "reused")
    p.add_argument("recipe", metavar="RECIPE", help="recipe file, e.g. examples/kd_prune_finetune.yaml")
    add_run_args(p)
    p.add_argument("--executor", default="local", choices=EXECUTORS.names(),
                   help="where units run: local (this process, the default) or ray (a Ray cluster; "
                        "pip install -r requirements-ray.txt)")
    p.add_argument("--workers", type=int, default=1, help="units the local executor runs at once (default 1)")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="ray: auto (the cluster `ray start` runs on this machine) or ray://HEAD:10001; "
                        "default: start a local Ray")
    p.add_argument("--ray-cpus", type=float, default=1.0, help="ray: CPUs each unit declares (default 1)")
    p.add_argument("--ray-gpus", type=float, default=0.0, help="ray: GPUs each unit declares (default 0)")
    p.add_argument("--ray-shared", action="store_true",
                   help="ray: the recipe's out is on storage every node mounts at the same path (checkpoints "
                        "are written there, not sent back as bytes)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a recipe without running it and print its expanded grid size")
    p.add_argument("recipe", metavar="RECIPE", help="recipe file (YAML or JSON)")
    p.add_argument("--json", action="store_true", help="print the grid as strict JSON")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> dict:
    recipe = load_recipe(args.recipe)
    summary = {"valid": True, "name": recipe.name, "runs": len(recipe.units), "stages": recipe.grid(),
               "units": [{"stage": u.stage, "task": u.task, "key": u.key[:16], "axes": u.axes, "inputs":
                          {f: k[:16] for f, k in u.inputs.items()}} for u in recipe.units]}
    if args.json:
        print_json(summary)
    else:
        stages = ", ".join(f"{name} {n}" for name, n in summary["stages"].items())
        print(f"{args.recipe}: valid; {summary['runs']} run(s) when nothing is in the store yet ({stages})")
    return summary


def cmd_run(args: argparse.Namespace) -> list:
    recipe = load_recipe(args.recipe)
    config = RecipeTask(recipe=recipe.to_dict(), executor=args.executor, workers=args.workers,
                        ray_address=args.ray_address, ray_cpus=args.ray_cpus, ray_gpus=args.ray_gpus,
                        ray_shared=args.ray_shared)
    console = ConsoleContext(quiet=args.json)
    try:
        name, tags = run_labels(args)
        points = run_sync(RECIPE_TASK, config, args.db, echo=console, name=name or f"recipe {recipe.name}", tags=tags)
    finally:
        console.close()
    rows = [p.to_dict() for p in points]
    if args.json:
        print_json(rows)
    else:
        for p in rows:
            how = "reused" if p.get("reused") else "ran"
            print(f"{p['recipe_stage']} ({how} run {p['run_id']}): {format_point(p)}")
    return rows
