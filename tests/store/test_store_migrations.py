"""Schema versions: an older file is carried forward on open; a newer one is refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

# The store as version 1 of the code wrote it, frozen here so later edits to the migrations
# cannot quietly change what "an old file" means.
V1_FILE = [
    "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at DOUBLE NOT NULL)",
    """CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, kind VARCHAR NOT NULL,
        status VARCHAR NOT NULL CHECK (status IN ('queued', 'running', 'finished', 'failed', 'cancelled',
        'interrupted')), config VARCHAR NOT NULL, created_at DOUBLE NOT NULL, started_at DOUBLE, ended_at DOUBLE,
        progress DOUBLE NOT NULL DEFAULT 0, message VARCHAR, eta_s DOUBLE, error VARCHAR, traceback VARCHAR,
        parent_id VARCHAR, seed BIGINT, code_version VARCHAR, device VARCHAR)""",
    "CREATE TABLE metrics (run_id VARCHAR NOT NULL, step BIGINT NOT NULL, key VARCHAR NOT NULL, "
    "value DOUBLE NOT NULL, time DOUBLE NOT NULL)",
    "CREATE SEQUENCE point_ids START 1",
    """CREATE TABLE points (point_id BIGINT NOT NULL DEFAULT nextval('point_ids'), run_id VARCHAR NOT NULL,
        stage VARCHAR, method VARCHAR, params VARCHAR NOT NULL DEFAULT '{}', artifact VARCHAR,
        created_at DOUBLE NOT NULL, accuracy DOUBLE, top5 DOUBLE, loss DOUBLE, params_total BIGINT,
        params_nonzero BIGINT, sparsity DOUBLE, bits DOUBLE, size_bytes BIGINT, size_fp32_bytes BIGINT,
        file_bytes BIGINT, macs BIGINT, latency_ms_b1 DOUBLE, latency_p90_ms_b1 DOUBLE, latency_ms_b32 DOUBLE,
        latency_p90_ms_b32 DOUBLE, threads BIGINT, backend VARCHAR, simulated BOOLEAN)""",
    "CREATE TABLE artifacts (run_id VARCHAR NOT NULL, path VARCHAR NOT NULL, kind VARCHAR NOT NULL, bytes BIGINT, "
    "sha256 VARCHAR, created_at DOUBLE NOT NULL)",
    "CREATE TABLE events (run_id VARCHAR NOT NULL, time DOUBLE NOT NULL, level VARCHAR NOT NULL, "
    "message VARCHAR NOT NULL)",
    "INSERT INTO schema_version VALUES (1, 1700000000)",
    "INSERT INTO runs (run_id, name, kind, status, config, created_at, started_at, ended_at, progress, seed) VALUES "
    "('oldfinished1', 'train cnn_s', 'train', 'finished', '{\"model\": \"cnn_s\"}', 1700000000, 1700000001, "
    "1700000100, 1.0, 7), "
    "('oldrunning01', 'prune', 'prune', 'running', '{}', 1700000200, 1700000201, NULL, 0.3, NULL)",
    "INSERT INTO metrics VALUES ('oldfinished1', 1, 'val_accuracy', 0.91, 1700000050)",
    "INSERT INTO points (run_id, stage, method, params, artifact, created_at, accuracy, params_total, backend) "
    "VALUES ('oldfinished1', 'trained', 'train', '{\"epochs\": 2}', 'ck', 1700000099, 0.93, 94962, 'fp32 eager cpu')",
]


def write_v1_file(path: str) -> None:
    con = duckdb.connect(path)
    for statement in V1_FILE:
        con.execute(statement)
    con.close()


def test_a_version_1_file_is_migrated_on_open_and_keeps_its_rows(db_path):
    from store import SCHEMA_VERSION, Store

    write_v1_file(db_path)
    with Store(db_path) as store:
        assert store.migrated_from == 1 and SCHEMA_VERSION >= 2
        finished = store.get_run("oldfinished1")
        assert finished["status"] == "finished" and finished["seed"] == 7 and finished["config"] == {"model": "cnn_s"}
        assert finished["pid"] is None  # a column version 2 added
        (p,) = store.run_points("oldfinished1")
        assert p["accuracy"] == 0.93 and p["params"] == {"epochs": 2} and p["params_total"] == 94962
        assert store.metric_history("oldfinished1").value.tolist() == [0.91]
        # version 1 recorded no process, so its "running" run cannot be running any more
        assert store.recovered == ["oldrunning01"]
        stuck = store.get_run("oldrunning01")
        assert stuck["status"] == "interrupted" and "no process was recorded" in stuck["message"]
        new = store.create_run("train", {})  # and the migrated file takes new runs
        store.add_point(new, {**p, "accuracy_std": 0.01})
        assert store.run_points(new)[0]["accuracy_std"] == 0.01
    con = duckdb.connect(db_path, read_only=True)
    versions = [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
    con.close()
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_reading_an_old_file_migrates_it_when_no_one_holds_it(db_path):
    from store import Store, StoreOutdatedError, reading

    write_v1_file(db_path)
    with pytest.raises(StoreOutdatedError, match="schema version 1; open it once for writing"):
        Store(db_path, read_only=True)
    with reading(db_path) as store:
        assert set(store.list_runs().run_id) == {"oldfinished1", "oldrunning01"}
    with reading(db_path) as store:
        assert store.read_only  # migrated: read-only from now on


def test_a_file_from_a_newer_version_is_refused_with_a_clear_message(db_path):
    from store import SCHEMA_VERSION, Store, StoreVersionError

    Store(db_path).close()
    con = duckdb.connect(db_path)
    con.execute("INSERT INTO schema_version VALUES (?, 0)", [SCHEMA_VERSION + 1])
    con.close()
    for read_only in (False, True):
        with pytest.raises(StoreVersionError, match=f"newer Compression Lab .*version {SCHEMA_VERSION + 1}; this "
                                                    f"code reads up to {SCHEMA_VERSION}"):
            Store(db_path, read_only=read_only)


def test_a_metric_field_missing_from_an_old_points_table_is_added(db_path):
    from store import Store

    write_v1_file(db_path)
    con = duckdb.connect(db_path)
    con.execute("ALTER TABLE points DROP COLUMN top5")  # as if measure() gained top5 after the file was made
    con.close()
    with Store(db_path) as store:
        run_id = store.create_run("train", {})
        store.add_point(run_id, {"accuracy": 0.5, "top5": 0.8, "method": "m", "params": {}})
        assert store.run_points(run_id)[0]["top5"] == 0.8
        assert json.loads(store.points(run_id).iloc[0]["extra"]) == {}


# Version 2 added who runs a run and an `extra` column; points then kept "checkpoint" in extra, meaning the
# output for train and distill but the input for prune and quantize, and stages were family words.
V2_STEPS = [
    "ALTER TABLE runs ADD COLUMN pid INTEGER",
    "ALTER TABLE runs ADD COLUMN process_started VARCHAR",
    "ALTER TABLE runs ADD COLUMN host VARCHAR",
    "ALTER TABLE runs ADD COLUMN heartbeat_at DOUBLE",
    "ALTER TABLE points ADD COLUMN extra VARCHAR DEFAULT '{}'",
    "UPDATE points SET extra = '{}' WHERE extra IS NULL",
    "INSERT INTO schema_version VALUES (2, 1700000300)",
    "INSERT INTO runs (run_id, name, kind, status, config, created_at, progress) VALUES "
    "('prunesweep01', 'prune', 'prune.global_unstructured', 'finished', '{}', 1700000400, 1.0), "
    "('quantfake001', 'quantize', 'quantize.fake', 'finished', '{}', 1700000500, 1.0), "
    "('distilled001', 'distill', 'distill', 'finished', '{}', 1700000600, 1.0)",
    "INSERT INTO points (run_id, stage, method, params, artifact, created_at, accuracy, extra) VALUES "
    "('prunesweep01', 'pruned', 'global_unstructured', '{\"sparsity\": 0.0}', NULL, 1700000401, 0.97, "
    "'{\"level\": 0.0, \"checkpoint\": \"ck/teacher\", \"accuracy_std\": 0.0, \"accuracy_runs\": [0.97]}'), "
    "('prunesweep01', 'pruned', 'global_unstructured', '{\"sparsity\": 0.5}', NULL, 1700000402, 0.95, "
    "'{\"level\": 0.5, \"checkpoint\": \"ck/teacher\", \"accuracy_std\": 0.004, \"accuracy_runs\": [0.946, 0.954]}'), "
    "('quantfake001', '4bit', 'fake', '{\"bits\": 4}', NULL, 1700000501, 0.96, '{\"checkpoint\": \"ck/teacher\"}'), "
    "('quantfake001', '32bit', 'fake', '{\"bits\": 32}', NULL, 1700000502, 0.97, '{\"checkpoint\": \"ck/teacher\"}'), "
    "('distilled001', 'distilled', 'kd', '{\"teacher\": \"ck/teacher\"}', 'ck/student', 1700000601, 0.94, "
    "'{\"checkpoint\": \"ck/student\", \"teacher\": \"ck/teacher\"}')",
]


def test_a_version_2_file_migrates_to_3_with_its_points_intact_and_their_contract_filled(db_path):
    from store import SCHEMA_VERSION, Store

    write_v1_file(db_path)
    con = duckdb.connect(db_path)
    for statement in V2_STEPS:
        con.execute(statement)
    con.close()
    with Store(db_path) as store:
        assert store.migrated_from == 2 and SCHEMA_VERSION >= 3
        pts = store.points().set_index(["run_id", "point_id"]).sort_index()
        assert len(pts) == 6  # the v1 train point and the five v2 points, none lost
        prune = store.run_points("prunesweep01")
        assert [p["accuracy"] for p in prune] == [0.97, 0.95]
        assert [(p["family"], p["stage"], p["level"], p["level_name"]) for p in prune] == [
            ("prune", "baseline", 0.0, "sparsity"), ("prune", "variant", 0.5, "sparsity")]
        assert prune[1]["accuracy_std"] == 0.004 and prune[1]["accuracy_runs"] == [0.946, 0.954]
        assert prune[1]["input_checkpoint"] == "ck/teacher"
        fake = store.run_points("quantfake001")
        assert [(p["stage"], p["level"], p["level_name"]) for p in fake] == [("variant", 4.0, "bits"),
                                                                            ("baseline", 32.0, "bits")]
        (kd,) = store.run_points("distilled001")
        # "checkpoint" was the student (the output) here: the input is the teacher
        assert kd["family"] == "distill" and kd["role"] == "student" and kd["input_checkpoint"] == "ck/teacher"
        assert kd["artifact"] == "ck/student" and kd["stage"] == "variant"
        (trained,) = store.run_points("oldfinished1")
        assert trained["family"] == "train" and trained["stage"] == "baseline" and trained["accuracy"] == 0.93


@pytest.mark.parametrize("table", ["runs", "sales"])
def test_a_duckdb_file_with_tables_of_its_own_is_refused_and_left_untouched(db_path, table, capsys):
    from engine.cli.main import main
    from store import Store, StoreError

    con = duckdb.connect(db_path)
    con.execute(f"CREATE TABLE {table} (id INTEGER, note VARCHAR)")
    con.execute(f"INSERT INTO {table} VALUES (1, 'mine')")
    con.close()
    before = Path(db_path).read_bytes()
    for read_only in (False, True):
        with pytest.raises(StoreError, match=rf"tables of its own \({table}\) and no run store in it; it was left"):
            Store(db_path, read_only=read_only)
    for argv in (["runs", "--db", db_path], ["train", "--dataset", "digits", "--epochs", "1", "--db", db_path]):
        assert main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: {db_path} is a DuckDB file with tables of its own")
    assert Path(db_path).read_bytes() == before and not Path(db_path + ".wal").exists()
    con = duckdb.connect(db_path, read_only=True)
    tables = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    rows = con.execute(f"SELECT * FROM {table}").fetchall()
    con.close()
    assert tables == [(table,)] and rows == [(1, "mine")]  # no stray schema_version table


def test_an_empty_duckdb_file_becomes_a_store(db_path):
    from store import SCHEMA_VERSION, Store

    duckdb.connect(db_path).close()
    with Store(db_path) as store:
        assert store.migrated_from == 0
        run_id = store.create_run("train", {})
        assert list(store.list_runs().run_id) == [run_id]
    with Store(db_path, read_only=True) as store:
        assert store.migrated_from is None and len(store.list_runs()) == 1
    assert SCHEMA_VERSION >= 2


def test_version_4_fills_dataset_model_and_runtime_of_older_points(db_path, tmp_path):
    from store import Store

    write_v1_file(db_path)
    con = duckdb.connect(db_path)
    for statement in V2_STEPS:
        con.execute(statement)
    con.close()
    student = tmp_path / "ck-student"
    student.mkdir()
    (student / "meta.json").write_text(json.dumps({"dataset": "digits", "arch": "cnn_s"}))
    con = duckdb.connect(db_path)
    con.execute("UPDATE points SET artifact = ? WHERE run_id = 'distilled001'", [str(student)])
    con.execute("""UPDATE runs SET config = '{"dataset": "mnist5k", "model": "cnn_l"}' WHERE run_id = 'oldfinished1'""")
    con.close()
    with Store(db_path) as store:
        (kd,) = store.run_points("distilled001")
        assert (kd["dataset"], kd["model"], kd["runtime"]) == ("digits", "cnn_s", "torch")  # from the meta.json
        (trained,) = store.run_points("oldfinished1")
        assert (trained["dataset"], trained["model"]) == ("mnist5k", "cnn_l")  # from the run's config
        fake = store.run_points("quantfake001")
        assert [p["dataset"] for p in fake] == ["", ""]  # nothing on disk or in the config tells: left empty


def test_version_5_fills_stage_sweep_and_key_of_recipe_units_from_their_old_names(db_path):
    from store import Store

    write_v1_file(db_path)
    con = duckdb.connect(db_path)
    con.execute("INSERT INTO runs (run_id, name, kind, status, config, created_at, parent_id) VALUES "
                "('recipe000001', 'recipe kd-prune', 'recipe', 'finished', '{}', 1700000300, NULL), "
                "('unitprune001', 'kd-prune/prune method=kd sparsities=0.5 key=0123456789abcdef', "
                "'prune.l1_unstructured', 'finished', '{}', 1700000301, 'recipe000001'), "
                "('unitmodel001', 'kd-prune/model key=fedcba9876543210', 'train', 'finished', '{}', 1700000302, "
                "'recipe000001'), "
                "('unitlist0001', 'r/qat bits=[4,8] train.lr=0.01 key=00000000000000aa', 'quantize.qat', 'failed', "
                "'{}', 1700000303, 'recipe000001'), "
                "('lookalike001', 'my/run key=nothex', 'train', 'finished', '{}', 1700000304, NULL)")
    con.close()
    with Store(db_path) as store:
        prune = store.get_run("unitprune001")
        assert (prune["stage"], prune["sweep"], prune["unit_key"]) == ("prune", {"method": "kd", "sparsities": 0.5},
                                                                       "0123456789abcdef")
        model = store.get_run("unitmodel001")
        assert (model["stage"], model["sweep"], model["unit_key"]) == ("model", {}, "fedcba9876543210")
        qat = store.get_run("unitlist0001")
        assert qat["sweep"] == {"bits": [4, 8], "train.lr": 0.01} and qat["status"] == "failed"
        for plain in ("recipe000001", "lookalike001", "oldfinished1"):
            run = store.get_run(plain)
            assert (run["stage"], run["sweep"], run["unit_key"], run["tags"], run["note"]) == (None, None, None, [], "")
        assert store.get_run("unitprune001")["name"] == "kd-prune/prune method=kd sparsities=0.5 key=0123456789abcdef"


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_store_written_by_the_code_before_version_5_opens_and_its_recipe_units_are_reused(tmp_path):
    """tests/fixtures/store_v4_recipe.duckdb.gz was written by commit d3c00a4 (schema 4): the recipe
    tests/fixtures/store_v4_recipe.yaml run with `python -m engine run ... --db`, then one plain
    `python -m engine train ... --db`. Its two units were named "tiny/seeds train.seed=N key=<16 hex>"."""
    import gzip
    import shutil

    import yaml

    from engine.run.jobs import run_sync
    from engine.run.recipes import RECIPE_TASK, Recipe, RecipeTask
    from store import SCHEMA_VERSION, Store

    db = tmp_path / "old.duckdb"
    with gzip.open(FIXTURES / "store_v4_recipe.duckdb.gz") as src, db.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    doc = yaml.safe_load((FIXTURES / "store_v4_recipe.yaml").read_text())
    doc["out"] = str(tmp_path / "ckpt")  # where checkpoints go is not part of a unit's key
    recipe = Recipe.from_dict(doc)
    with Store(str(db)) as store:
        assert store.migrated_from == 4 and SCHEMA_VERSION >= 5
        units = store.list_runs(kind="train").dropna(subset=["stage"])
        assert sorted(units["sweep"]) == ['{"train.seed": 0}', '{"train.seed": 1}']
        assert set(units["stage"]) == {"seeds"}
        assert set(units["unit_key"]) == {u.key[:16] for u in recipe.units}  # the keys this code computes
        assert len(store.list_runs(kind="train")) == 3  # and the plain train run, which is no unit
        before = set(store.list_runs().run_id)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    con.close()

    points = run_sync(RECIPE_TASK, RecipeTask(recipe=doc), str(db))
    assert len(points) == 2 and all(p.extra["reused"] for p in points)
    with Store(str(db)) as store:
        runs = store.list_runs()
        new = runs[~runs["run_id"].isin(before)]
        assert list(new["kind"]) == [RECIPE_TASK]  # the recipe's own run, and no unit ran again


def test_version_6_adds_the_machines_table_to_an_older_file(db_path):
    """Issue #23: a store from before version 6 gains the machines table and keeps its rows."""
    import duckdb

    from store import SCHEMA_VERSION, Store

    with Store(db_path) as store:
        run_id = store.create_run("train", {}, name="old")
    con = duckdb.connect(str(db_path))
    con.execute("DROP TABLE machines")
    con.execute("DROP TABLE timings")
    con.execute("DELETE FROM schema_version WHERE version >= 6")
    con.close()
    with Store(db_path) as store:
        assert store.migrated_from == 5 and SCHEMA_VERSION >= 6
        assert store.machines() == {} and store.get_run(run_id)["name"] == "old"
