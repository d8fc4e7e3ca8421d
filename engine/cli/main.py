"""`python -m engine ...`: the same tasks the app runs, for scripts.

Each method family adds its commands from its own module (listed in FAMILY_COMMANDS) through
`add_commands(subparsers)`; every command runs a registered task through `execute`, so --db,
--json, progress and error handling are the same everywhere.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
import traceback

from engine.core.config import Config
from engine.core.context import ConsoleContext
from engine.core.errors import Cancelled, UserError
from engine.core.options import OptionSet
from engine.core.point import Point, json_safe
from engine.methods.measure import MeasureTask
from engine.methods.tasks import run_task
from engine.methods.train import TrainTask
from engine.model.data import DEFAULT_ROOT
from engine.model.data import catalog as data_catalog
from engine.model.zoo import catalog as model_catalog

# modules that define `add_commands(subparsers)` for a family of methods
FAMILY_COMMANDS: list[str] = ["engine.cli.runs", "engine.cli.prune", "engine.cli.quantize", "engine.cli.distill",
                              "engine.cli.breakpoint", "engine.cli.recipes", "engine.cli.studies", "engine.cli.export"]


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The options every task command shares (its config's own options are generated)."""
    p.add_argument("--db", help="record the run in this DuckDB file (e.g. compression_lab.duckdb)")
    p.add_argument("--json", action="store_true", help="print the result as strict JSON (NaN as null), no progress bar")


def print_json(value) -> None:
    """Strict JSON on stdout: NaN and infinities are written as null."""
    print(json.dumps(json_safe(value), indent=2, default=str, allow_nan=False))


def execute(args: argparse.Namespace, task: str, config: Config, *, single: bool = False) -> list[Point]:
    """Runs a task from the CLI: in the store when --db is given, else in this process; prints --json."""
    console = ConsoleContext(quiet=args.json)
    try:
        if getattr(args, "db", None):
            from engine.run.jobs import run_sync

            points = run_sync(task, config, args.db, echo=console)
        else:
            points = run_task(task, config, console)
    finally:
        console.close()
    rows = [p.to_dict() for p in points]
    if args.json:
        print_json(rows[-1] if single else rows)
    else:
        for p in rows:
            print(format_point(p))
    return points


def format_point(p: dict) -> str:
    lat = p.get("latency_ms_b1")
    lat_s = f"{lat:.3f} ms (b1)" if lat is not None else "not timed"
    where = f"  -> {p['artifact']}" if p.get("artifact") else ""
    level = p.get("level")
    level_s = f" {p.get('level_name') or 'level'}={level:g}" if isinstance(level, int | float) else ""
    role = f" {p['role']}" if p.get("role") else ""
    return (f"{p.get('method', '')}[{p.get('stage', '')}{level_s}{role}] acc {p['accuracy']:.4f}  "
            f"params {p['params_total']:,} nonzero {p['params_nonzero']:,}  sparsity {p['sparsity']:.3f}  "
            f"bits {p['bits']:.2f}  size {p['size_bytes']:,} B  file {p['file_bytes']:,} B  MACs {p['macs']:,}  "
            f"latency {lat_s} [{p['backend']}{', simulated' if p.get('simulated') else ''}]{where}")


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


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming it and the command's --help (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


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

    p = sub.add_parser("measure", help="measure a checkpoint directory of any format, and show its lineage")
    MEASURE_OPTIONS.add_to(p)
    add_run_args(p)
    p.set_defaults(func=cmd_measure)

    for module in FAMILY_COMMANDS:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
