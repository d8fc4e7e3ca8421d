"""What every command shares: the --db/--json/--name/--tag options, running a task and printing its points,
strict JSON, and a parser whose usage errors are one line. Command modules import these at module level."""

from __future__ import annotations

import argparse
import json

from engine.core.config import Config
from engine.core.context import ConsoleContext
from engine.core.errors import ConfigError
from engine.core.point import Point, json_safe
from engine.methods.tasks import run_task
from engine.run.jobs import run_sync
from store import read_labels


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The options every task command shares (its config's own options are generated)."""
    p.add_argument("--db", help="record the run in this DuckDB file (e.g. compression_lab.duckdb)")
    p.add_argument("--json", action="store_true", help="print the result as strict JSON (NaN as null), no progress bar")
    p.add_argument("--name", dest="run_name", metavar="TEXT", help="with --db: the run's name in lists (default: "
                   "made from the task and its config)")
    p.add_argument("--tag", dest="run_tags", metavar="TAG", action="append",
                   help="with --db: tag the run (repeat, or separate tags with commas)")


def run_labels(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """The run name and tags given with --name and --tag, checked as the store checks them."""
    return read_labels(getattr(args, "run_name", None), getattr(args, "run_tags", None) or [])


def print_json(value) -> None:
    """Strict JSON on stdout: NaN and infinities are written as null."""
    print(json.dumps(json_safe(value), indent=2, default=str, allow_nan=False))


def execute(args: argparse.Namespace, task: str, config: Config, *, single: bool = False) -> list[Point]:
    """Runs a task from the CLI: in the store when --db is given, else in this process; prints --json."""
    console = ConsoleContext(quiet=args.json)
    try:
        name, tags = run_labels(args)
        if getattr(args, "db", None):
            points = run_sync(task, config, args.db, echo=console, name=name, tags=tags)
        elif name is not None or tags:
            raise ConfigError("--name and --tag label a recorded run: add --db FILE (without it nothing is recorded)")
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


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming it and the command's --help (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")
