"""`python -m engine distill ...` and `python -m engine distill-methods`.

Every option is generated: the task's own fields (teacher, student, dataset, out, the training
budget: --epochs, --lr, ...) from DistillTask, and the union of every method's settings from the
method configs (--temperature, --alpha, --beta, --student-layers, ...). A setting that the chosen
--method does not take is refused by name.
"""

from __future__ import annotations

import argparse
import functools

from engine.cli.main import add_run_args, execute
from engine.core.options import OptionSet, method_rows, print_method_rows
from engine.methods.distill.task import DistillTask
from engine.methods.registry import Method, family_methods

TASK = "distill"


def methods() -> dict[str, Method]:
    """The distillers, the baseline (scratch) first, then by name."""
    registry = family_methods("distill")
    return {n: registry.get(n) for n in sorted(registry.names(), key=lambda n: (n != "scratch", n))}


@functools.cache
def task_options() -> OptionSet:
    return OptionSet.of({TASK: DistillTask})


@functools.cache
def settings_options() -> OptionSet:
    return OptionSet.of({name: m.config for name, m in methods().items()})


def build_config(args: argparse.Namespace) -> DistillTask:
    """The task from the parsed options: its own fields, and the settings the chosen method takes."""
    settings = settings_options().values(args, args.method)
    return DistillTask.from_dict({**task_options().values(args, TASK), "method": args.method, "settings": settings})


def cmd_distill(args: argparse.Namespace) -> None:
    execute(args, "distill", build_config(args))


def cmd_methods(args: argparse.Namespace) -> None:
    rows = method_rows({name: (m.config, m.description) for name, m in methods().items()})
    print_method_rows(rows, args.json)


def add_commands(sub) -> None:
    names = list(methods())
    p = sub.add_parser("distill", help="distil a teacher checkpoint into a student (" + ", ".join(names) + ")")
    p.add_argument("--method", default=DistillTask.method, choices=names,
                   help=f"distillation method (default {DistillTask.method}; see distill-methods)")
    task_options().add_to(p, taken={"--method"})
    settings_options().add_to(p, taken={"--method", *task_options().flags})
    add_run_args(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("distill-methods", help="list the distillation methods, their papers and their settings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_methods)
