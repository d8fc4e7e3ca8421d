"""`python -m engine prune --checkpoint DIR --method METHOD ...` and `prune-methods`.

The options are generated from the registered methods' configs (engine.core.options.OptionSet) when
the parser is built, so a new method file brings its own options; an option the chosen method
does not take is refused by name.
"""

from __future__ import annotations

import argparse
import functools

from engine.core.config import Config
from engine.core.options import OptionSet, method_rows, print_method_rows
from engine.methods.registry import family_methods


def prune_options() -> OptionSet:
    return OptionSet.of({name: m.config for name, m in family_methods("prune").items()})


def build_config(args: argparse.Namespace, options: OptionSet) -> Config:
    """The chosen method's validated config from the options given (others are refused by name)."""
    method = family_methods("prune").get(args.method)
    return method.config.from_dict(options.values(args, args.method))


def cmd_prune(args: argparse.Namespace, options: OptionSet) -> None:
    from engine.cli.main import execute

    execute(args, family_methods("prune").get(args.method).task, build_config(args, options))


def cmd_prune_methods(args: argparse.Namespace) -> None:
    methods = family_methods("prune")
    print_method_rows(method_rows({name: (m.config, m.description) for name, m in methods.items()}), args.json)


def add_commands(sub: argparse._SubParsersAction) -> None:
    from engine.cli.main import add_run_args

    methods = family_methods("prune")
    options = prune_options()
    p = sub.add_parser("prune", help="prune a checkpoint: " + ", ".join(methods.names()),
                       description="Prune a float checkpoint with one method; every pruned model is saved as a "
                                   "checkpoint directory under --out (--no-save: measure only). An option the chosen "
                                   "method does not take is refused; `prune-methods` lists each method's settings.")
    p.add_argument("--method", required=True, choices=methods.names(),
                   help="; ".join(f"{name}: {m.description}" for name, m in methods.items()))
    options.add_to(p, taken=("--method", "--db", "--json"))
    add_run_args(p)
    p.set_defaults(func=functools.partial(cmd_prune, options=options))

    p = sub.add_parser("prune-methods", help="list the pruning methods, each with its settings")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    p.set_defaults(func=cmd_prune_methods)
