"""`python -m engine ...`: the same tasks the app runs, for scripts.

Each method family adds its commands from its own module (listed in FAMILY_COMMANDS) through
`add_commands(subparsers)`; every command runs a registered task through `execute`, so --db,
--json, progress and error handling are the same everywhere.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback

from engine.config import Config
from engine.context import ConsoleContext
from engine.data import DEFAULT_ROOT
from engine.data import catalog as data_catalog
from engine.errors import Cancelled, UserError
from engine.models import catalog as model_catalog
from engine.recipe import MeasureTask, TrainTask, run_task
from engine.train import TrainConfig

# modules that define `add_commands(subparsers)` for a family of methods
FAMILY_COMMANDS: list[str] = ["engine.runs_cli", "engine.prune.cli", "engine.quant.cli", "engine.distill.cli"]


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The options every task command shares."""
    p.add_argument("--db", help="record the run in this DuckDB file (e.g. compression_lab.duckdb)")
    p.add_argument("--json", action="store_true", help="print the result as JSON, no progress bar")
    p.add_argument("--data-root", default=DEFAULT_ROOT, help=f"where torchvision datasets live (default {DEFAULT_ROOT})")


def execute(args: argparse.Namespace, task: str, config: Config, *, single: bool = False) -> list[dict]:
    """Runs a task from the CLI: in the store when --db is given, else in this process; prints --json."""
    console = ConsoleContext(quiet=args.json)
    try:
        if getattr(args, "db", None):
            from engine.jobs import run_sync

            points = run_sync(task, config, args.db, echo=console)
        else:
            points = run_task(task, config, console)
    finally:
        console.close()
    if args.json:
        print(json.dumps(points[-1] if single else points, indent=2, default=str))
    else:
        for p in points:
            print(format_point(p))
    return points


def format_point(p: dict) -> str:
    lat = p.get("latency_ms_b1")
    lat_s = f"{lat:.3f} ms (b1)" if lat is not None else "not timed"
    where = f"  -> {p['artifact']}" if p.get("artifact") else ""
    return (f"{p.get('method', '')}[{p.get('stage', '')}] acc {p['accuracy']:.4f}  params {p['params_total']:,} "
            f"nonzero {p['params_nonzero']:,}  sparsity {p['sparsity']:.3f}  bits {p['bits']:.2f}  "
            f"size {p['size_bytes']:,} B  file {p['file_bytes']:,} B  MACs {p['macs']:,}  latency {lat_s} "
            f"[{p['backend']}{', simulated' if p.get('simulated') else ''}]{where}")


# ---------------------------------------------------------------- core commands


def cmd_datasets(args: argparse.Namespace) -> None:
    rows = data_catalog(args.data_root)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['name']:<20} {r['availability']:<40} {r['description']}")


def cmd_models(args: argparse.Namespace) -> None:
    rows = model_catalog()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['name']:<20} {r['description']}")


def cmd_train(args: argparse.Namespace) -> None:
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                     schedule=args.schedule, seed=args.seed, augment=args.augment)
    cfg = TrainTask(dataset=args.dataset, model=args.model, width=args.width, data_root=args.data_root,
                    download=args.download, image_size=args.image_size, out=args.out,
                    latency=not args.no_latency, train=tc)
    execute(args, "train", cfg, single=True)


def cmd_measure(args: argparse.Namespace) -> None:
    cfg = MeasureTask(checkpoint=args.checkpoint, data_root=args.data_root, latency=not args.no_latency)
    execute(args, "measure", cfg, single=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Compression Lab: train, compress, measure")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("datasets", help="list datasets and whether each is available")
    p.add_argument("--data-root", default=DEFAULT_ROOT)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", help="list the architectures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train a model and save a checkpoint directory")
    p.add_argument("--dataset", default="mnist5k", help="dataset name or imagefolder:<path>")
    p.add_argument("--model", default="cnn_l", help="architecture (see `models`)")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="random shifts (and flips where valid)")
    p.add_argument("--image-size", type=int, help="resize imagefolder images to this side (default 64)")
    p.add_argument("--download", action="store_true", help="download a missing torchvision dataset")
    p.add_argument("--out", help="checkpoint directory (default checkpoints/<model>-<dataset>-<time>)")
    p.add_argument("--no-latency", action="store_true", help="skip timing the final model")
    add_run_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("measure", help="measure a checkpoint")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--no-latency", action="store_true")
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
    except Exception as e:  # noqa: BLE001 - the CLI's promise is a one-line message
        if args.debug:
            traceback.print_exc()
        print(f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
