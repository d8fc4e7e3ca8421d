"""`python -m engine ...`: the same tasks the app runs, for scripts.

The commands are generated from the registries: train and measure here, one `<family>` and
`<family>-methods` command per method family (engine/cli/families.py), and the command modules in
COMMANDS (runs, breakpoint, recipes, studies, export, recommend, plan), each adding its commands through
`add_commands(subparsers)`. Every command runs a registered task through `execute` (engine/cli/common.py),
so --db, --json, progress and error handling are the same everywhere.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from pathlib import Path

from engine.cli import breakpoint, export, families, plan, recipes, recommend, runs, studies
from engine.cli.common import OneLineParser, add_run_args, execute, print_json
from engine.core.errors import Cancelled, UserError
from engine.core.options import OptionSet
from engine.methods.measure import MeasureTask
from engine.methods.train import TrainTask
from engine.model.data import DEFAULT_ROOT
from engine.model.data import catalog as data_catalog
from engine.model.uploads import import_weights
from engine.model.zoo import catalog as model_catalog

# the modules whose `add_commands(subparsers)` add the rest of the commands, in --help's order
COMMANDS = (runs, families, breakpoint, recipes, studies, export, recommend, plan)


# ---------------------------------------------------------------- core commands


def cmd_datasets(args: argparse.Namespace) -> None:
    rows = data_catalog(args.data_root)
    if args.json:
        print_json(rows)
        return
    for r in rows:
        print(f"{r['name']:<20} {r['availability']:<40} {r['description']}")


def cmd_models(args: argparse.Namespace) -> None:
    rows = model_catalog()
    if args.json:
        print_json(rows)
        return
    for r in rows:
        print(f"{r['name']:<20} {r['description']}")


TRAIN_OPTIONS = OptionSet.of({"train": TrainTask})
MEASURE_OPTIONS = OptionSet.of({"measure": MeasureTask})


def cmd_train(args: argparse.Namespace) -> None:
    execute(args, "train", TrainTask.from_dict(TRAIN_OPTIONS.values(args, "train")), single=True)


def cmd_measure(args: argparse.Namespace) -> None:
    cfg = MeasureTask.from_dict(MEASURE_OPTIONS.values(args, "measure"))
    points = execute(args, "measure", cfg, single=len(cfg.runtime) == 1)  # one point per runtime
    if not args.json and points:
        print(f"lineage: {points[-1].extra.get('lineage_text', '')}")


def cmd_import_weights(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    directory = import_weights(path.read_bytes(), path.name, args.arch, args.dataset, image_size=args.image_size,
                               data_root=args.data_root)
    if args.json:
        print_json({"checkpoint": directory})
    else:
        print(directory)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m engine", description="Compression Lab: train, compress, measure")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    p = sub.add_parser("datasets", help="list datasets and whether each is available")
    p.add_argument("--data-root", default=DEFAULT_ROOT)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", help="list the architectures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train a model and save a checkpoint directory")
    TRAIN_OPTIONS.add_to(p)
    add_run_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("import-weights", help="your own weights (.safetensors or a state_dict .pt) for a zoo, timm: "
                       "or torchvision: architecture, saved as a checkpoint the other commands start from")
    p.add_argument("file", help="the weights file (nothing in it is unpickled)")
    p.add_argument("--arch", required=True, help="zoo name, timm:<name> or torchvision:<name> (options after ?)")
    p.add_argument("--dataset", required=True, help="dataset name or imagefolder:<path> the weights were trained for")
    p.add_argument("--image-size", type=int, default=None,
                   help="side of imagefolder images (default: the architecture's own, e.g. 224)")
    p.add_argument("--data-root", default=DEFAULT_ROOT)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import_weights)

    p = sub.add_parser("measure", help="measure a checkpoint directory of any format, and show its lineage")
    MEASURE_OPTIONS.add_to(p)
    add_run_args(p)
    p.set_defaults(func=cmd_measure)

    for module in COMMANDS:
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except UserError as e:  # a plugin family named in $COMPRESSION_LAB_PLUGINS that cannot be imported
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        args.func(args)
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            return _unexpected(e, args.debug)
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {DISK_ERRORS[e.errno]}{where}: free space or choose another --out / --db", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the CLI's promise is a one-line message
        return _unexpected(e, args.debug)


# file-system failures a user can act on, with what to say
DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted"}


def _unexpected(e: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    text = " ".join(str(e).split())
    print(f"error: {type(e).__name__}: {text} (rerun with --debug for the traceback)", file=sys.stderr)
    return 1
