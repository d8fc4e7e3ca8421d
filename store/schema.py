"""The store's tables and the migrations that build them, version by version.

Laid out like MLflow's tracking store: a `runs` table whose status is constrained to a fixed set,
a metric history keyed by (run, key, step), one row per evaluated model variant in `points`,
plus `artifacts` and `events`. Every time is seconds since the epoch (UTC) as a DOUBLE.

A new file runs every migration from 1; an older file runs the ones it lacks, each in its own
transaction, and records the version it reached. A file from a newer version is refused.
JSON is kept as VARCHAR so NaN and Infinity survive the round trip (Python's json writes them).
"""

from __future__ import annotations

import re
import typing
from dataclasses import fields

from engine.core.point import METRIC_FIELDS, Measurement

RUN_STATUSES: tuple[str, ...] = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
ACTIVE_STATUSES: tuple[str, ...] = ("queued", "running")  # a process still owns these
# the typed point's fields (engine/core/point.py) stored as their own columns since version 3
CONTRACT_COLUMNS: tuple[str, ...] = ("family", "level", "level_name", "role", "input_checkpoint", "accuracy_std",
                                     "accuracy_runs")

_STATUS_LIST = ", ".join(f"'{s}'" for s in RUN_STATUSES)


def _sql_type(hint: typing.Any) -> str:
    """DuckDB column type for a Measurement field's annotation."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0]
    if base is bool:
        return "BOOLEAN"
    if base is int:
        return "BIGINT"
    if base is float:
        return "DOUBLE"
    return "VARCHAR"


def metric_columns() -> dict[str, str]:
    """{column: type} for every name in engine.deploy.measure.METRIC_FIELDS, typed from Measurement."""
    hints = typing.get_type_hints(Measurement)
    types = {f.name: _sql_type(hints[f.name]) for f in fields(Measurement)}
    return {name: types[name] for name in METRIC_FIELDS}


# Version 1: the five tables. Point metric columns are added by `ensure_metric_columns`, so a
# field added to Measurement later reaches old files too.
V1 = [
    f"""CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        status VARCHAR NOT NULL CHECK (status IN ({_STATUS_LIST})),
        config VARCHAR NOT NULL,
        created_at DOUBLE NOT NULL,
        started_at DOUBLE,
        ended_at DOUBLE,
        progress DOUBLE NOT NULL DEFAULT 0,
        message VARCHAR,
        eta_s DOUBLE,
        error VARCHAR,
        traceback VARCHAR,
        parent_id VARCHAR,
        seed BIGINT,
        code_version VARCHAR,
        device VARCHAR
    )""",
    """CREATE TABLE metrics (
        run_id VARCHAR NOT NULL,
        step BIGINT NOT NULL,
        key VARCHAR NOT NULL,
        value DOUBLE NOT NULL,
        time DOUBLE NOT NULL
    )""",
    "CREATE SEQUENCE point_ids START 1",
    """CREATE TABLE points (
        point_id BIGINT NOT NULL DEFAULT nextval('point_ids'),
        run_id VARCHAR NOT NULL,
        stage VARCHAR,
        method VARCHAR,
        params VARCHAR NOT NULL DEFAULT '{}',
        artifact VARCHAR,
        created_at DOUBLE NOT NULL
    )""",
    """CREATE TABLE artifacts (
        run_id VARCHAR NOT NULL,
        path VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        bytes BIGINT,
        sha256 VARCHAR,
        created_at DOUBLE NOT NULL
    )""",
    """CREATE TABLE events (
        run_id VARCHAR NOT NULL,
        time DOUBLE NOT NULL,
        level VARCHAR NOT NULL,
        message VARCHAR NOT NULL
    )""",
]

# Version 2: who runs a run (so a crashed process's runs can be found), a heartbeat, and the
# point keys that are neither metrics nor params (accuracy_std, checkpoint, ...).
V2 = [
    "ALTER TABLE runs ADD COLUMN pid INTEGER",
    "ALTER TABLE runs ADD COLUMN process_started VARCHAR",
    "ALTER TABLE runs ADD COLUMN host VARCHAR",
    "ALTER TABLE runs ADD COLUMN heartbeat_at DOUBLE",
    "ALTER TABLE points ADD COLUMN extra VARCHAR DEFAULT '{}'",
    "UPDATE points SET extra = '{}' WHERE extra IS NULL",
]


def fill_point_contract(cur) -> None:
    """Version 3's columns for points recorded before it, read from their run's task, stage and extras."""
    import pandas as pd

    rows = cur.execute("SELECT p.point_id, p.stage, p.method, p.params, p.extra, r.kind FROM points p "
                       "LEFT JOIN runs r USING (run_id)").fetchall()
    if not rows:
        return
    filled = [old_point_contract(*row) for row in rows]
    cur.register("v3_fill", pd.DataFrame(filled))
    cur.execute("""UPDATE points SET family = f.family, stage = f.stage, level = f.level, level_name = f.level_name,
                   role = f.role, input_checkpoint = f.input_checkpoint, accuracy_std = f.accuracy_std,
                   accuracy_runs = f.accuracy_runs FROM v3_fill f WHERE points.point_id = f.point_id""")
    cur.unregister("v3_fill")


def old_point_contract(point_id: int, stage: str | None, method: str | None, params: str | None, extra: str | None,
                       kind: str | None) -> dict:
    """The contract fields of a point written by schema version 2 (see engine/core/point.py)."""
    import json

    params_d = json.loads(params or "{}")
    extra_d = json.loads(extra or "{}")
    family = (kind or "").split(".", 1)[0] or "measure"
    stage = stage or ""
    level, level_name = None, ""
    new_stage = "variant"
    if stage in ("trained", "measured", "fp32", "dense") or (family == "train"):
        new_stage = "baseline"
    elif stage.startswith("step") or stage in ("iteration", "round"):
        new_stage = "step"
    if stage.endswith("bit") and stage[:-3].isdigit():
        level, level_name = float(stage[:-3]), "bits"
        new_stage = "baseline" if level >= 32 else "variant"
    elif "average_bits" in extra_d:
        level, level_name = extra_d["average_bits"], "average_bits"
    elif isinstance(extra_d.get("level"), int | float):
        level, level_name = extra_d["level"], "channel_ratio" if method == "structured" else "sparsity"
    elif isinstance(extra_d.get("sparsity"), int | float):
        level, level_name = extra_d["sparsity"], "sparsity"
    if family == "prune" and level == 0 and new_stage == "variant":
        new_stage = "baseline"  # nothing pruned: the sweep's uncompressed reference
    # before version 3, `checkpoint` meant the output for train and distill but the input elsewhere
    input_checkpoint = "" if family in ("train", "distill") else str(extra_d.get("checkpoint") or "")
    if family == "distill":
        input_checkpoint = str(params_d.get("teacher") or extra_d.get("teacher") or "")
    runs = extra_d.get("accuracy_runs")
    return {"point_id": point_id, "family": family, "stage": new_stage, "level": level, "level_name": level_name,
            "role": "student" if family == "distill" else "", "input_checkpoint": input_checkpoint,
            "accuracy_std": extra_d.get("accuracy_std"), "accuracy_runs": json.dumps(runs) if runs is not None else None}


# Version 3: the typed point's contract (engine/core/point.py) as columns, filled for older points.
V3 = [
    "ALTER TABLE points ADD COLUMN family VARCHAR",
    "ALTER TABLE points ADD COLUMN level DOUBLE",
    "ALTER TABLE points ADD COLUMN level_name VARCHAR",
    "ALTER TABLE points ADD COLUMN role VARCHAR",
    "ALTER TABLE points ADD COLUMN input_checkpoint VARCHAR",
    "ALTER TABLE points ADD COLUMN accuracy_std DOUBLE",
    "ALTER TABLE points ADD COLUMN accuracy_runs VARCHAR",
    fill_point_contract,
]

def fill_point_provenance(cur) -> None:
    """Version 4's dataset, model and runtime for points recorded before measure() wrote them: the runtime
    was always torch; dataset and model come from the meta.json of the point's artifact or input checkpoint
    when it is still on disk, else from the run's config (a train run names both)."""
    import json

    import pandas as pd

    cur.execute("UPDATE points SET runtime = 'torch' WHERE runtime IS NULL")
    rows = cur.execute("SELECT p.point_id, p.artifact, p.input_checkpoint, r.config FROM points p "
                       "LEFT JOIN runs r USING (run_id) WHERE p.dataset IS NULL OR p.model IS NULL").fetchall()
    filled = []
    for point_id, artifact, input_checkpoint, config in rows:
        found = _meta_provenance(artifact) or _meta_provenance(input_checkpoint)
        if found is None:
            cfg = json.loads(config or "{}")
            found = (str(cfg.get("dataset") or ""), str(cfg.get("model") or ""))
        filled.append({"point_id": point_id, "dataset": found[0], "model": found[1]})
    if filled:
        cur.register("v4_fill", pd.DataFrame(filled))
        cur.execute("UPDATE points SET dataset = f.dataset, model = f.model FROM v4_fill f "
                    "WHERE points.point_id = f.point_id")
        cur.unregister("v4_fill")


def _meta_provenance(directory: str | None) -> tuple[str, str] | None:
    """(dataset, arch) from a checkpoint directory's meta.json, or None when it is not readable."""
    import json
    from pathlib import Path

    if not directory:
        return None
    try:
        meta = json.loads((Path(directory) / "meta.json").read_text())
        return str(meta["dataset"]), str(meta["arch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# Version 4: where a point was measured (dataset, model) and on which runtime (issue #13), filled for older points.
V4 = [
    "ALTER TABLE points ADD COLUMN IF NOT EXISTS dataset VARCHAR",
    "ALTER TABLE points ADD COLUMN IF NOT EXISTS model VARCHAR",
    "ALTER TABLE points ADD COLUMN IF NOT EXISTS runtime VARCHAR",
    fill_point_provenance,
]

# a recipe unit's name before version 5: "<recipe>/<stage> <axis>=<value> ... key=<16 hex>"
_OLD_UNIT_NAME = re.compile(r"^[^/]*/(?P<words>.+) key=(?P<key>[0-9a-f]{16})$")


def fill_unit_fields(cur) -> None:
    """Version 5's stage, sweep and unit_key for recipe units recorded before it, read from their names:
    the one place a run name is parsed. Their key is the 16-hex prefix those names held."""
    import json

    import pandas as pd

    filled = []
    for run_id, name in cur.execute("SELECT run_id, name FROM runs").fetchall():
        found = old_unit_fields(str(name))
        if found is not None:
            stage, sweep, key = found
            filled.append({"run_id": run_id, "stage": stage, "sweep": json.dumps(sweep), "unit_key": key})
    if filled:
        cur.register("v5_fill", pd.DataFrame(filled))
        cur.execute("UPDATE runs SET stage = f.stage, sweep = f.sweep, unit_key = f.unit_key FROM v5_fill f "
                    "WHERE runs.run_id = f.run_id")
        cur.unregister("v5_fill")


def old_unit_fields(name: str) -> tuple[str, dict, str] | None:
    """(stage, swept values, key) of a recipe unit named by the code before version 5, else None."""
    import json

    m = _OLD_UNIT_NAME.match(name)
    if m is None:
        return None
    stage, *words = m.group("words").split(" ")
    sweep = {}
    for word in words:
        axis, eq, value = word.partition("=")
        if not eq:
            continue
        try:
            sweep[axis] = json.loads(value)
        except ValueError:
            sweep[axis] = value  # a text value was written without quotes
    return stage, sweep, m.group("key")


# Version 5: run metadata as data (issue #21): the user's tags and note, and a recipe unit's stage, swept values
# and key as columns instead of words in its name.
V5 = [
    "ALTER TABLE runs ADD COLUMN tags VARCHAR[] DEFAULT []",  # the default fills the existing rows too
    "ALTER TABLE runs ADD COLUMN note VARCHAR DEFAULT ''",
    "ALTER TABLE runs ADD COLUMN stage VARCHAR",
    "ALTER TABLE runs ADD COLUMN sweep VARCHAR",
    "ALTER TABLE runs ADD COLUMN unit_key VARCHAR",
    fill_unit_fields,
]

# Version 6: the machines that timed points (issue #23): each fingerprint once (engine/core/machine.py), which a
# point's `machine` column names.
V6 = [
    """CREATE TABLE machines (
        machine_id VARCHAR PRIMARY KEY,
        fingerprint VARCHAR NOT NULL,
        first_seen DOUBLE NOT NULL
    )""",
]

# Version 7: a point's latency history (issue #23): every timing of it, the first one (its own run's) and each
# re-timing (a `remeasure` run), with the machine and the quality; the point's own columns hold the one shown.
V7 = [
    """CREATE TABLE timings (
        point_id BIGINT NOT NULL,
        run_id VARCHAR NOT NULL,
        measured_at DOUBLE NOT NULL,
        machine VARCHAR,
        latency_quality VARCHAR,
        timing VARCHAR NOT NULL
    )""",
]

# each step is SQL text or a function of a cursor (a data fill that SQL says less clearly)
MIGRATIONS: dict[int, list] = {1: V1, 2: V2, 3: V3, 4: V4, 5: V5, 6: V6, 7: V7}
SCHEMA_VERSION = max(MIGRATIONS)


def read_version(cur) -> int:
    """The schema version a file is at; 0 for an empty file."""
    exists = cur.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'").fetchone()[0]
    if not exists:
        return 0
    row = cur.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(cur, now: float) -> tuple[int, int]:
    """Carries the file forward to SCHEMA_VERSION; returns (version before, version after)."""
    before = read_version(cur)
    if before == 0:
        cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at DOUBLE NOT NULL)")
    for version in range(before + 1, SCHEMA_VERSION + 1):
        cur.execute("BEGIN TRANSACTION")
        try:
            for statement in MIGRATIONS[version]:
                statement(cur) if callable(statement) else cur.execute(statement)
            cur.execute("INSERT INTO schema_version VALUES (?, ?)", [version, now])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    ensure_metric_columns(cur)
    return before, SCHEMA_VERSION


def table_columns(cur, table: str) -> list[str]:
    return [r[0] for r in cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
        [table]).fetchall()]


def ensure_metric_columns(cur) -> None:
    """Adds any METRIC_FIELDS column the points table lacks (a field measure() gained since)."""
    have = set(table_columns(cur, "points"))
    for name, sql_type in metric_columns().items():
        if name not in have:
            cur.execute(f'ALTER TABLE points ADD COLUMN "{name}" {sql_type}')
