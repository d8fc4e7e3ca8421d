"""The reads the pages and the CLI need, as pandas DataFrames (or plain dicts for one run).

Each function takes a DuckDB cursor; `Store` attaches the file for each read and gives one, so any
thread (and any process) may call them.
Times come back as UTC datetimes; JSON columns (config, params, extra) as text, and `points`
can also spread them into columns (`params.<key>`, and each extra key under its own name).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import pandas as pd

from engine.core.config import check_choice, check_range
from engine.core.point import METRIC_FIELDS
from store.errors import RunNotFound
from store.schema import CONTRACT_COLUMNS, RUN_STATUSES

RUN_TIME_COLUMNS = ("created_at", "started_at", "ended_at", "heartbeat_at")
POINT_KEYS = ("method", "params", "stage", "artifact", *CONTRACT_COLUMNS)  # the point fields besides the metrics


def as_list(values: str | Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)


def _datetimes(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    for c in columns:
        if c in df:
            df[c] = pd.to_datetime(df[c], unit="s", utc=True)
    return df


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


# ---------------------------------------------------------------- runs


def list_runs(cur, status: str | Iterable[str] | None = None, kind: str | Iterable[str] | None = None,
              parent: str | None = None, top_level: bool = False, limit: int | None = None) -> pd.DataFrame:
    """Runs, newest first, with their number of points and the run time so far in `duration_s`."""
    where, args = [], []
    statuses = as_list(status)
    if statuses is not None:
        for s in statuses:
            check_choice("status", s, RUN_STATUSES)
        where.append("r.status IN (SELECT unnest(?::VARCHAR[]))")
        args.append(statuses)
    kinds = as_list(kind)
    if kinds is not None:
        where.append("r.kind IN (SELECT unnest(?::VARCHAR[]))")
        args.append(kinds)
    if parent is not None:
        where.append("r.parent_id = ?")
        args.append(parent)
    if top_level:
        where.append("r.parent_id IS NULL")
    sql = ("SELECT r.*, coalesce(p.n_points, 0) AS n_points FROM runs r "
           "LEFT JOIN (SELECT run_id, count(*) AS n_points FROM points GROUP BY run_id) p USING (run_id)"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY r.created_at DESC, r.run_id")
    if limit is not None:
        check_range("limit", limit, 0)
        sql += f" LIMIT {int(limit)}"
    df = cur.execute(sql, args).df()
    end = df["ended_at"].where(df["ended_at"].notna(), time.time())
    df["duration_s"] = (end - df["started_at"]).where(df["started_at"].notna())
    return _datetimes(df, RUN_TIME_COLUMNS)


def resolve_run_id(cur, run_id: str) -> str:
    """The full id of a run given its id or a unique prefix of it."""
    rows = cur.execute("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id LIMIT 6",
                       [run_id]).fetchall()
    exact = [r[0] for r in rows if r[0] == run_id]
    if exact:
        return exact[0]
    if not rows or not run_id:
        raise RunNotFound(f"no run with id '{run_id}' (list them with `python -m engine runs`)")
    if len(rows) > 1:
        raise RunNotFound(f"run id '{run_id}' is ambiguous: it starts {', '.join(r[0] for r in rows)}")
    return rows[0][0]


def get_run(cur, run_id: str) -> dict:
    """One run as a dict: its config parsed, times as UTC datetimes."""
    run_id = resolve_run_id(cur, run_id)
    cur.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
    names = [d[0] for d in cur.description]
    run = dict(zip(names, cur.fetchone()))
    run["config"] = json.loads(run["config"])
    for c in RUN_TIME_COLUMNS:
        if c in run:
            run[c] = _when(run[c])
    return run


# ---------------------------------------------------------------- points


def points(cur, run_ids: str | Iterable[str] | None = None, expand: bool = True) -> pd.DataFrame:
    """One row per evaluated model variant of these runs (all runs if None), in logging order.

    Columns: point_id, run_id, run_name, run_kind, stage, method, every METRIC_FIELDS name,
    artifact, params and extra (JSON text), created_at. With `expand`, also `params.<key>` for
    each parameter (nested keys joined by dots) and each extra key (accuracy_std, checkpoint...).
    """
    ids = as_list(run_ids)
    sql = ("SELECT p.*, r.name AS run_name, r.kind AS run_kind FROM points p LEFT JOIN runs r USING (run_id)"
           + (" WHERE p.run_id IN (SELECT unnest(?::VARCHAR[]))" if ids is not None else "")
           + " ORDER BY p.point_id")
    df = cur.execute(sql, [ids] if ids is not None else []).df()
    first = ["point_id", "run_id", "run_name", "run_kind", "family", "method", "stage", "level", "level_name", "role"]
    last = ["artifact", "params", "extra", "created_at"]
    middle = [c for c in df.columns if c not in first and c not in last]
    df = _datetimes(df[first + middle + last], ["created_at"])
    return expand_json(df) if expand else df


def expand_json(df: pd.DataFrame) -> pd.DataFrame:
    """Adds `params.<key>` columns and one column per extra key to a points frame."""
    if df.empty:
        return df
    params = _spread(df["params"]).add_prefix("params.")
    extra = _spread(df["extra"])
    extra.columns = [c if c not in df.columns else f"extra.{c}" for c in extra.columns]
    return pd.concat([df.reset_index(drop=True), params, extra], axis=1)


def _spread(texts: pd.Series) -> pd.DataFrame:
    """JSON objects as columns; each distinct text is parsed once (a sweep repeats the same few)."""
    texts = texts.fillna("{}")
    distinct = pd.unique(texts)
    table = pd.json_normalize([json.loads(t) for t in distinct], sep=".")
    table.index = distinct
    return table.reindex(texts.to_numpy()).reset_index(drop=True)


def run_points(cur, run_id: str) -> list[dict]:
    """A run's points rebuilt as the dicts the task logged (metrics, method, params, stage, artifact, extras)."""
    cur.execute("SELECT * FROM points WHERE run_id = ? ORDER BY point_id", [run_id])
    names = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        r = dict(zip(names, row))
        point = {name: r.get(name) for name in METRIC_FIELDS}
        point.update({name: r.get(name) for name in CONTRACT_COLUMNS if name in r})
        if point.get("accuracy_runs") is not None:
            point["accuracy_runs"] = json.loads(point["accuracy_runs"])
        point.update(method=r["method"], params=json.loads(r["params"]), stage=r["stage"], artifact=r["artifact"])
        point.update(json.loads(r.get("extra") or "{}"))
        out.append(point)
    return out


# ---------------------------------------------------------------- metrics, events, artifacts


def metric_history(cur, run_ids: str | Iterable[str], keys: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Every logged value: run_id, key, step, value, time; ordered by run, key and step."""
    ids, wanted = as_list(run_ids), as_list(keys)
    sql = "SELECT run_id, key, step, value, time FROM metrics WHERE run_id IN (SELECT unnest(?::VARCHAR[]))"
    args: list = [ids]
    if wanted is not None:
        sql += " AND key IN (SELECT unnest(?::VARCHAR[]))"
        args.append(wanted)
    df = cur.execute(sql + " ORDER BY run_id, key, step, time", args).df()
    return _datetimes(df, ["time"])


def latest_metrics(cur, run_ids: str | Iterable[str] | None = None, keys: str | Iterable[str] | None = None,
                   wide: bool = False) -> pd.DataFrame:
    """The value at the highest step of each (run, key); `wide` gives one row per run, one column per key."""
    ids, wanted = as_list(run_ids), as_list(keys)
    where, args = [], []
    if ids is not None:
        where.append("run_id IN (SELECT unnest(?::VARCHAR[]))")
        args.append(ids)
    if wanted is not None:
        where.append("key IN (SELECT unnest(?::VARCHAR[]))")
        args.append(wanted)
    sql = ("SELECT run_id, key, max(step) AS step, arg_max(value, (step, time)) AS value, max(time) AS time "
           "FROM metrics" + (" WHERE " + " AND ".join(where) if where else "")
           + " GROUP BY run_id, key ORDER BY run_id, key")
    df = _datetimes(cur.execute(sql, args).df(), ["time"])
    if not wide:
        return df
    table = df.pivot(index="run_id", columns="key", values="value")
    table.columns.name = None
    return table.reset_index()


def events(cur, run_id: str, since: float | None = None) -> pd.DataFrame:
    """A run's log lines in order: time, level, message (`since`: seconds since the epoch)."""
    sql, args = "SELECT time, level, message FROM events WHERE run_id = ?", [run_id]
    if since is not None:
        sql += " AND time > ?"
        args.append(since)
    return _datetimes(cur.execute(sql + " ORDER BY time, rowid", args).df(), ["time"])


def artifacts(cur, run_ids: str | Iterable[str] | None = None) -> pd.DataFrame:
    ids = as_list(run_ids)
    sql = "SELECT run_id, path, kind, bytes, sha256, created_at FROM artifacts"
    if ids is not None:
        sql += " WHERE run_id IN (SELECT unnest(?::VARCHAR[]))"
    df = cur.execute(sql + " ORDER BY created_at", [ids] if ids is not None else []).df()
    return _datetimes(df, ["created_at"])
