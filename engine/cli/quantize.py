"""`python -m engine quantize --checkpoint DIR --method NAME [options]` and `python -m engine quantize-methods`.

The options are generated from the methods' configs (engine/core/options.py); one a method does not
take is refused by name, so a typo never runs something else.
"""

from __future__ import annotations

import argparse

from engine.cli.main import add_run_args, execute
from engine.core.options import OptionSet, method_rows, print_method_rows
from engine.methods.registry import family_methods


def options() -> OptionSet:
    return OptionSet.of({name: method.config for name, method in family_methods("quantize").items()})


def cmd_quantize(args: argparse.Namespace) -> None:
    method = family_methods("quantize").get(args.method)
    values = args.options.values(args, args.method)
    execute(args, method.task, method.config.from_dict(values))


def cmd_methods(args: argparse.Namespace) -> None:
    methods = family_methods("quantize")
    print_method_rows(method_rows({name: (m.config, m.description) for name, m in methods.items()}), args.json)


def add_commands(sub: argparse._SubParsersAction) -> None:
    methods = family_methods("quantize")
    opts = options()
    p = sub.add_parser("quantize", help="quantize a checkpoint: int8, simulated sweeps, mixed precision, QAT",
                       description="; ".join(f"{name}: {m.description}" for name, m in methods.items()))
    p.add_argument("--method", required=True, choices=methods.names(), help="the quantization method")
    opts.add_to(p, taken=("--method", "--db", "--json", "--asymmetric"))
    # the README's spelling of --no-symmetric
    p.add_argument("--asymmetric", dest=opts.flags["--symmetric"].dest, action="store_const", const=False,
                   default=None, help="same as --no-symmetric")
    add_run_args(p)
    p.set_defaults(func=cmd_quantize, options=opts)

    p = sub.add_parser("quantize-methods", help="list the quantization methods and their settings")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    p.set_defaults(func=cmd_methods)
