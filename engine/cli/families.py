"""`python -m engine <family> --method NAME [options]` and `<family>-methods`, for every method family.

The commands come from the registries (engine/methods/registry.py): one pair per declared family,
a plugin's included. The options are generated from the method configs (engine/core/options.py), as
the union of the family's methods' options; one the chosen method does not take is refused by name,
so a typo never runs something else.

A method's task takes either the method's own config (quantize.<name>, prune.<name>), or a config
shared by the family's methods that holds the method's name and its settings (`method` and
`settings` fields, as DistillTask does): the command then offers the shared config's options, each
method's settings, and `--method` defaults to the shared config's default method. A family adds
options of its own through its `cli_options` hook (quantize: --asymmetric).
"""

from __future__ import annotations

import argparse
import dataclasses

from engine.cli.common import add_run_args, execute
from engine.core.config import Config
from engine.core.options import OptionSet, method_rows, print_method_rows
from engine.methods.registry import Family, discover_families
from engine.methods.tasks import get_task

RUN_FLAGS = ("--method", "--db", "--json", "--name", "--tag")  # added here, never generated


def shared_config(family: Family) -> type[Config] | None:
    """The task config the family's methods share (it holds `method` and `settings`), or None when each
    method's task takes the method's own config."""
    configs = {get_task(m.task).config for _, m in family.methods.items()}
    shared = next(iter(configs)) if len(configs) == 1 else None
    if shared is None or not {"method", "settings"} <= {f.name for f in dataclasses.fields(shared)}:
        return None
    return shared


def method_options(family: Family) -> OptionSet:
    """The union of the family's methods' options, keyed by method name."""
    return OptionSet.of({name: m.config for name, m in family.methods.items()})


def build_config(args: argparse.Namespace) -> Config:
    """The chosen method's validated task config from the options given (others are refused by name)."""
    family: Family = args.family
    method = family.methods.get(args.method)
    settings = args.method_options.values(args, args.method)
    if args.task_options is None:
        return method.config.from_dict(settings)
    shared = get_task(method.task).config
    return shared.from_dict({**args.task_options.values(args, "task"), "method": args.method, "settings": settings})


def cmd_family(args: argparse.Namespace) -> None:
    execute(args, args.family.methods.get(args.method).task, build_config(args))


def cmd_methods(args: argparse.Namespace) -> None:
    methods = args.family.methods
    print_method_rows(method_rows({name: (m.config, m.description) for name, m in methods.items()}), args.json)


def add_family_commands(sub: argparse._SubParsersAction, family: Family) -> None:
    methods = family.methods
    if not methods.names():
        return  # a family with no method yet offers nothing to run
    shared = shared_config(family)
    task_options = OptionSet.of({"task": shared}) if shared is not None else None
    options = method_options(family)
    p = sub.add_parser(family.name, help=family.description, description=family.description)
    listed = "; ".join(f"{name}: {m.description}" for name, m in methods.items())
    default = getattr(shared, "method", None) if shared is not None else None
    if default in methods:
        p.add_argument("--method", default=default, choices=methods.names(),
                       help=f"the method (default {default}; see {family.name}-methods): {listed}")
    else:
        p.add_argument("--method", required=True, choices=methods.names(), help=f"the method: {listed}")
    taken = set(RUN_FLAGS)
    if task_options is not None:
        task_options.add_to(p, taken=taken)
        taken |= set(task_options.flags)
    options.add_to(p, taken=taken)
    if family.cli_options is not None:
        family.cli_options(p, {**options.flags, **(task_options.flags if task_options else {})})
    add_run_args(p)
    p.set_defaults(func=cmd_family, family=family, method_options=options, task_options=task_options)

    p = sub.add_parser(f"{family.name}-methods", help=f"list the {family.name} methods and their settings")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    p.set_defaults(func=cmd_methods, family=family)


def add_commands(sub: argparse._SubParsersAction) -> None:
    for _, family in discover_families().items():
        add_family_commands(sub, family)
