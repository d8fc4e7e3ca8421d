"""`python -m engine runs` and `python -m engine show RUN_ID`: what the run store holds.

Both read the file read-only for the moment each query takes (or use this process's open store),
so they work while the app or a `--db` command is recording runs in it: those let go of the file
between their commits. Only a process that keeps it open for writing (not Compression Lab) makes
them wait a few seconds and then say which process holds it, instead of printing a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime

import pandas as pd

from engine.cli.common import format_point, print_json
from engine.core.context import ConsoleContext
from engine.core.errors import ConfigError, UserError
from engine.run.jobs import run_sync
from engine.run.remeasure import remeasure_config
from store import DB_ENV, DEFAULT_DB_PATH, RUN_STATUSES, reading

DB_HELP = f"the run store file (default: ${DB_ENV}, else {DEFAULT_DB_PATH})"


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list the runs recorded in the run store")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status")
    p.add_argument("--kind", help="only runs of this task (train, measure, ...)")
    p.add_argument("--parent", help="only the child runs of this run (e.g. a sweep's levels)")
    p.add_argument("--tag", help="only runs with this tag")
    p.add_argument("--name", help="only runs whose name contains this text (any case)")
    p.add_argument("--limit", type=int, default=50, help="the newest N runs (0: all; default 50)")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="show one run: its config, points, metric history, artifacts and events")
    p.add_argument("run_id", metavar="RUN_ID", help="a run id, or a unique prefix of one")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--json", action="store_true", help="print the run as JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("remeasure", help="time stored points again now, each beside its baseline, as one run; "
                                         "each point keeps its latency history and shows the newest clean timing")
    p.add_argument("points", metavar="POINT_IDS", help="point ids, comma-separated (`show RUN` lists them as #id)")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--json", action="store_true", help="print each point's latency history as JSON")
    p.set_defaults(func=cmd_remeasure)


# ---------------------------------------------------------------- runs


def cmd_runs(args: argparse.Namespace) -> None:
    if args.limit < 0:
        raise ConfigError(f"--limit must be a number of runs >= 0 (0 lists all), got {args.limit}")
    with reading(args.db) as store:
        df = store.list_runs(status=args.status, kind=args.kind, parent=args.parent, limit=args.limit or None,
                             tag=args.tag, name_contains=args.name)
        path = store.path
    if args.json:
        print_json(records(df.drop(columns=["config", "traceback"])))
        return
    if df.empty:
        print(f"no runs{' with status ' + args.status if args.status else ''}{' tagged ' + args.tag if args.tag else ''}"
              f"{' named *' + args.name + '*' if args.name else ''} in {path}")
        return
    print(f"{'RUN ID':<12}  {'STATUS':<11}  {'CREATED (UTC)':<19}  {'TIME':>8}  {'DONE':>4}  {'PTS':>3}  "
          "NAME [TAGS] / MESSAGE")
    for r in df.itertuples():
        note = r.error if r.status == "failed" and r.error else (r.message or "")
        note = "" if note == r.status else note  # "finished - finished" says nothing
        tags = f" [{', '.join(r.tags)}]" if r.tags else ""
        print(f"{r.run_id:<12}  {r.status:<11}  {_when(r.created_at):<19}  {_seconds(r.duration_s):>8}  "
              f"{r.progress:>4.0%}  {r.n_points:>3}  {r.name}{tags}{'  - ' + _one_line(note) if note else ''}")


def records(df: pd.DataFrame) -> list[dict]:
    """DataFrame rows as JSON-ready dicts: missing values as null, times as ISO text."""
    out = []
    for row in df.to_dict("records"):
        out.append({k: _plain(v) for k, v in row.items()})
    return out


def _plain(v):
    if isinstance(v, pd.Timestamp | datetime):
        return None if pd.isna(v) else v.isoformat()
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return v.item() if hasattr(v, "item") else v


def _when(t) -> str:
    return "" if t is None or pd.isna(t) else t.strftime("%Y-%m-%d %H:%M:%S")


def _seconds(s) -> str:
    if s is None or pd.isna(s):
        return "-"
    return f"{s:.1f}s" if s < 600 else f"{s / 60:.1f}m"


def _one_line(text: str, width: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


# ---------------------------------------------------------------- show


def cmd_show(args: argparse.Namespace) -> None:
    with reading(args.db) as store:
        run = store.get_run(args.run_id)
        run_id = run["run_id"]
        points = store.run_points(run_id)
        ids = [int(i) for i in store.points(run_id, expand=False)["point_id"]]
        history = store.metric_history(run_id)
        events = store.events(run_id)
        artifacts = store.artifacts(run_id)
    if args.json:
        doc = {"run": {k: _plain(v) for k, v in run.items()},
               "points": [{"point_id": i, **p} for i, p in zip(ids, points)],
               "metrics": [{"key": r.key, "step": int(r.step), "value": float(r.value), "time": r.time.isoformat()}
                           for r in history.itertuples()],
               "events": records(events), "artifacts": records(artifacts)}
        print_json(doc)
        return
    print_run(run, points, history, events, artifacts, ids)


def print_run(run: dict, points: list[dict], history: pd.DataFrame, events: pd.DataFrame,
              artifacts: pd.DataFrame, ids: list[int] | None = None) -> None:
    took = ""
    if run["started_at"] and run["ended_at"]:
        took = f"  (took {(run['ended_at'] - run['started_at']).total_seconds():.1f} s)"
    print(f"run {run['run_id']}  {run['name']}")
    print(f"  status    {run['status']} ({run['progress']:.0%}){'  - ' + run['message'] if run['message'] else ''}")
    print(f"  task      {run['kind']}{'   parent ' + run['parent_id'] if run['parent_id'] else ''}")
    if run.get("stage"):
        print(f"  unit      stage {run['stage']}   sweep {json.dumps(run['sweep'])}   key {run['unit_key']}")
    if run.get("tags"):
        print(f"  tags      {', '.join(run['tags'])}")
    if run.get("note"):
        print("  note      " + run["note"].replace("\n", "\n            "))
    print(f"  created   {_when(run['created_at'])} UTC   started {_when(run['started_at']) or '-'}   "
          f"ended {_when(run['ended_at']) or '-'}{took}")
    print(f"  seed {run['seed'] if run['seed'] is not None else '-'}   code {run['code_version'] or 'unknown'}   device {run['device'] or 'unknown'}   "
          f"pid {run['pid']} on {run['host']}")
    if run["error"]:
        print(f"  error     {run['error']}")
        print("  " + (run["traceback"] or "").rstrip().replace("\n", "\n  "))
    print(f"  config    {json.dumps(run['config'])}")
    print(f"points ({len(points)})")
    for i, p in enumerate(points):
        print(f"  #{ids[i]} " + format_point(p) if ids else "  " + format_point(p))
    per_step = history[~history["key"].str.startswith("batch_")]
    if not per_step.empty:
        table = per_step.drop_duplicates(["step", "key"], keep="last").pivot(index="step", columns="key",
                                                                             values="value")
        table.columns.name = None
        print("metrics by step")
        print("  " + table.to_string(float_format=lambda v: f"{v:.4g}").replace("\n", "\n  "))
    per_batch = history[history["key"].str.startswith("batch_")]
    for key, rows in per_batch.groupby("key"):
        print(f"per-batch {key}: {len(rows)} values, first {rows['value'].iloc[0]:.4g}, "
              f"last {rows['value'].iloc[-1]:.4g}")
    if not artifacts.empty:
        print("artifacts")
        for a in artifacts.itertuples():
            print(f"  {a.kind:<11} {a.path}  {_plain(a.bytes) or '?'} bytes  sha256 {str(a.sha256)[:16]}")
    if not events.empty:
        print("events")
        for e in events.itertuples():
            print(f"  {_when(e.time)}  {e.level:<7}  {e.message}")


# ---------------------------------------------------------------- remeasure


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ConfigError(f"POINT_IDS must be point ids separated by commas, e.g. 12,13; got {text!r}") from None
    if not ids:
        raise ConfigError("POINT_IDS must name at least one point id (`show RUN` lists them as #id)")
    return ids


def cmd_remeasure(args: argparse.Namespace) -> None:
    ids = parse_ids(args.points)
    with reading(args.db) as store:
        cfg, skipped = remeasure_config(store, ids)
    for reason in skipped:
        print(f"left out: {reason}", file=sys.stderr)
    if cfg is None:
        raise UserError("none of the chosen points can be timed again: " + "; ".join(skipped))
    console = ConsoleContext(quiet=args.json)
    try:
        run_sync("remeasure", cfg, args.db, echo=console)
    finally:
        console.close()
    with reading(args.db) as store:
        histories = {pid: store.latency_history(pid) for pid in cfg.points}
    if args.json:
        print_json({str(pid): records(h) for pid, h in histories.items()})
        return
    for pid, h in histories.items():
        print(f"point {pid}: {len(h)} timing(s)")
        for r in h.itertuples():
            sp = "" if pd.isna(r.speedup_b1) else f"  {r.speedup_b1:.2f}x [{r.speedup_lo_b1:.2f}, {r.speedup_hi_b1:.2f}]"
            print(f"  {'*' if r.shown else ' '} {_when(r.measured_at)}  {r.latency_ms_b1:8.3f} ms b1  "
                  f"{r.latency_ms_b32:8.3f} ms b32{sp}  {r.machine}  {r.latency_quality}")
    print("* the timing the point shows: the newest clean one, else the newest")
