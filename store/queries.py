"""The reads the pages and the CLI need, as pandas DataFrames (or plain dicts for one run).

Each function takes a DuckDB cursor; `Store` attaches the file for each read and gives one, so any
thread (and any process) may call them.
Times come back as UTC datetimes; JSON columns (config, params, extra) as text, and `points`
can also spread them into columns (`params.<key>`, and each extra key under its own name).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from engine.core.config import check_choice
from engine.core.errors import ConfigError, quoted
from engine.core.point import LATENCY_FIELDS, METRIC_FIELDS
from store.errors import RunNotFound
from store.schema import CONTRACT_COLUMNS, RUN_STATUSES

RUN_TIME_COLUMNS = ("created_at", "started_at", "ended_at", "heartbeat_at")
MAX_LIMIT = 2**63 - 1  # DuckDB's LIMIT is a BIGINT: a larger one fails in the database, not with a message
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
              parent: str | None = None, top_level: bool = False, limit: int | None = None, *,
              tag: str | None = None, name_contains: str | None = None,
              unit_keys: Iterable[str] | None = None) -> pd.DataFrame:
    """Runs, newest first, with their number of points (a recipe or study run: with its child runs') and the
    run time so far in `duration_s`.

    `tag`: only runs with that tag; `name_contains`: only runs whose name holds that text (any case);
    `unit_keys`: only recipe units with one of these keys, or with its first 16 hex digits (all that a
    unit recorded before schema version 5 kept). `tags` come back as lists, `sweep` as JSON text."""
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
    if tag is not None:
        where.append("list_contains(r.tags, ?)")
        args.append(str(tag).strip())
    if name_contains:
        where.append("contains(lower(r.name), lower(?))")
        args.append(str(name_contains).strip())
    if unit_keys is not None:
        keys = list(unit_keys)
        where.append("(r.unit_key IN (SELECT unnest(?::VARCHAR[])) OR r.unit_key IN (SELECT unnest(?::VARCHAR[])))")
        args += [keys, [k[:16] for k in keys]]
    sql = ("SELECT r.*, coalesce(p.n_points, 0) AS n_points FROM runs r "
           f"LEFT JOIN ({_TREE_POINTS_SQL}) p USING (run_id)"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY r.created_at DESC, r.run_id")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
            raise ConfigError(f"limit must be a whole number of runs from 0 to {MAX_LIMIT:,}, got {quoted(limit)}")
        sql += f" LIMIT {int(limit)}"
    df = cur.execute(sql, args).df()
    end = df["ended_at"].where(df["ended_at"].notna(), time.time())
    df["duration_s"] = (end - df["started_at"]).where(df["started_at"].notna())
    df["tags"] = [list(t) if t is not None else [] for t in df["tags"]]  # numpy arrays otherwise
    return _datetimes(df, RUN_TIME_COLUMNS)


# each run's points plus those of every run below it (a recipe's or a study's units): a parent row's count is
# its whole tree's. UNION (not UNION ALL) ends the recursion even if a damaged store had a cycle of parents.
_TREE_POINTS_SQL = (
    "WITH RECURSIVE own AS (SELECT run_id, count(*) AS n FROM points GROUP BY run_id), "
    "tree(root, run_id) AS (SELECT run_id, run_id FROM runs UNION "
    "SELECT t.root, c.run_id FROM tree t JOIN runs c ON c.parent_id = t.run_id) "
    "SELECT t.root AS run_id, CAST(sum(o.n) AS BIGINT) AS n_points FROM tree t JOIN own o USING (run_id) GROUP BY t.root")


def all_tags(cur) -> list[str]:
    """Every tag some run has, sorted."""
    return [r[0] for r in cur.execute("SELECT DISTINCT unnest(tags) AS tag FROM runs ORDER BY tag").fetchall()]


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
    run["sweep"] = None if run.get("sweep") is None else json.loads(run["sweep"])
    run["tags"] = list(run.get("tags") or [])
    for c in RUN_TIME_COLUMNS:
        if c in run:
            run[c] = _when(run[c])
    return run


# ---------------------------------------------------------------- points


def paths_in_use(cur) -> dict[str, str]:
    """Paths that the runs in the store still need, each with why: every existing path named in the config
    of a queued or running run (its input checkpoints: checkpoint, teacher, student_init, a recipe's model
    and teacher, at any depth), and every point's artifact and input checkpoint."""
    used: dict[str, str] = {}
    active = cur.execute("SELECT run_id, name, status, config FROM runs WHERE status IN ('queued', 'running') "
                         "ORDER BY created_at").fetchall()
    for run_id, name, status, config in active:
        for text in _texts(json.loads(config or "{}")):
            if Path(text).exists():
                used.setdefault(text, f"the {status} run '{name}' ({run_id}) will read it")
    rows = cur.execute("SELECT p.run_id, r.name, p.artifact, p.input_checkpoint FROM points p "
                       "LEFT JOIN runs r USING (run_id) ORDER BY p.point_id").fetchall()
    for run_id, name, artifact, checkpoint in rows:
        for path in (artifact, checkpoint):
            if path:
                used.setdefault(path, f"run '{name}' ({run_id}) has a point made from it")
    return used


def _texts(value) -> Iterator[str]:
    """Every text in a JSON value, at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _texts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _texts(v)


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


def latency_history(cur, point_id: int) -> pd.DataFrame:
    """See Store.latency_history."""
    rows = cur.execute("SELECT run_id, measured_at, timing FROM timings WHERE point_id = ? ORDER BY measured_at",
                       [point_id]).fetchall()
    if not rows:
        names = ", ".join(f'"{c}"' for c in LATENCY_FIELDS)
        first = cur.execute(f"SELECT run_id, created_at, {names} FROM points WHERE point_id = ? "
                            f"AND latency_ms_b1 IS NOT NULL", [point_id]).fetchone()
        rows = [] if first is None else [(first[0], first[1], json.dumps(dict(zip(LATENCY_FIELDS, first[2:]))))]
    df = pd.DataFrame([{"run_id": r, "measured_at": at, **{k: json.loads(t).get(k) for k in LATENCY_FIELDS}}
                       for r, at, t in rows], columns=["run_id", "measured_at", *LATENCY_FIELDS])
    if not df.empty:
        clean = df.index[df["latency_quality"] == "clean"]
        df["shown"] = df.index == (clean[-1] if len(clean) else df.index[-1])
    return _datetimes(df, ["measured_at"])


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
