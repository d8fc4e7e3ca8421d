"""Re-measure (issue #23 item 3): stored points timed again as one job, beside their baselines; each point keeps
its latency history, and the newest clean timing is the one it shows."""

from __future__ import annotations

import pytest

import engine.methods.remeasure
from engine.cli.main import main
from engine.core.context import RunContext
from engine.core.errors import ConfigError, UserError
from engine.core.point import LATENCY_FIELDS
from engine.methods.tasks import make_point
from engine.run.jobs import run_sync
from engine.run.remeasure import remeasure_config
from store import Store
from tests.store.conftest import fake_measurement


def timed(ms: float, quality: str = "clean", machine: str = "m1") -> dict:
    return {"latency_ms_b1": ms, "latency_p10_ms_b1": ms * 0.9, "latency_p90_ms_b1": ms * 1.1,
            "latency_ms_b32": ms * 10, "latency_p10_ms_b32": ms * 9, "latency_p90_ms_b32": ms * 11,
            "speedup_b1": 2.0, "speedup_lo_b1": 1.8, "speedup_hi_b1": 2.2, "speedup_b32": 3.0,
            "speedup_lo_b32": 2.7, "speedup_hi_b32": 3.3, "threads": 2, "latency_quality": quality,
            "machine": machine}


@pytest.fixture
def store(tmp_path):
    with Store(str(tmp_path / "runs.duckdb")) as s:
        yield s


def stored_point(store: Store, **latency) -> int:
    run_id = store.create_run("measure", {}, name="m")
    point = make_point(fake_measurement(**latency), family="measure", method="measure", stage="variant")
    return store.add_point(run_id, point)


def shown(store: Store, point_id: int) -> dict:
    row = store.points(expand=False).set_index("point_id").loc[point_id]
    return {k: row[k] for k in LATENCY_FIELDS}


def test_the_newest_clean_timing_is_shown_and_every_timing_kept(store):
    first = timed(1.0, "noisy: 0 of 7 rounds clean")
    pid = stored_point(store, **{k: v for k, v in first.items()})
    assert len(store.latency_history(pid)) == 1  # its own run's timing, before any re-timing
    assert store.add_timing(pid, "r1", timed(0.5)) is True  # clean beats the noisy original
    assert shown(store, pid)["latency_ms_b1"] == 0.5
    assert store.add_timing(pid, "r2", timed(9.0, "noisy: other processes used 1.5 cores")) is False
    assert shown(store, pid)["latency_ms_b1"] == 0.5  # a noisy timing does not replace a clean one
    assert store.add_timing(pid, "r3", timed(0.6, machine="m2")) is True
    now = shown(store, pid)
    assert now["latency_ms_b1"] == 0.6 and now["machine"] == "m2" and now["speedup_lo_b32"] == 2.7
    history = store.latency_history(pid)
    assert list(history["latency_ms_b1"]) == [1.0, 0.5, 9.0, 0.6]
    assert list(history["run_id"])[1:] == ["r1", "r2", "r3"]
    assert list(history["shown"]) == [False, False, False, True]


def test_a_noisy_point_shows_the_newest_noisy_timing_until_a_clean_one_comes(store):
    pid = stored_point(store, **timed(1.0, "noisy: a"))
    store.add_timing(pid, "r1", timed(2.0, "noisy: b"))
    assert shown(store, pid)["latency_ms_b1"] == 2.0
    assert list(store.latency_history(pid)["shown"]) == [False, True]


def test_unknown_points_and_deleted_runs(store):
    with pytest.raises(Exception, match="point 999 is not in"):
        store.add_timing(999, "r", timed(1.0))
    pid = stored_point(store, **timed(1.0))
    store.add_timing(pid, "r1", timed(2.0))
    run_id = store.points(expand=False).set_index("point_id").loc[pid, "run_id"]
    store.end_run(run_id, "finished")
    store.delete_run(run_id)
    assert store.latency_history(pid).empty


def test_points_without_a_checkpoint_are_left_out_with_the_reason(store):
    pid = stored_point(store)  # artifact "" (the run did not save it)
    cfg, skipped = remeasure_config(store, [pid, 12345])
    assert cfg is None
    assert any("no saved checkpoint" in s for s in skipped) and any("12345 is not in the store" in s for s in skipped)
    with pytest.raises(UserError, match="at least one point"):
        remeasure_config(store, [])


def test_config_checks_its_lists():
    with pytest.raises(ConfigError, match="one entry per point"):
        engine.methods.remeasure.RemeasureTask(points=(1, 2), checkpoints=("a",), baselines=("", ""),
                                               families=("measure", "measure"), runtimes=("torch", "torch"))


def test_an_int8_run_is_re_timed_beside_its_baseline_as_one_job(tmp_path, digits_int8_run):
    db, baseline_id, int8_id = digits_int8_run
    with Store(db) as store:
        cfg, skipped = remeasure_config(store, [baseline_id, int8_id])
    assert not skipped and cfg.families == ("quantize", "quantize")
    assert cfg.baselines[0] == cfg.baselines[1] == cfg.checkpoints[0]  # the float checkpoint both started from
    run_sync("remeasure", cfg, db)
    with Store(db) as store:
        runs = store.list_runs(kind="remeasure")
        assert len(runs) == 1 and runs["status"].iloc[0] == "finished"
        for pid in (baseline_id, int8_id):
            h = store.latency_history(pid)
            # the run was not timed (latency off), so the re-timing is its first timing, and the one shown
            assert len(h) == 1 and h["run_id"].iloc[0] == runs["run_id"].iloc[0] and h["shown"].iloc[0]
            new = h.iloc[0]
            assert new["speedup_lo_b1"] <= new["speedup_b1"] <= new["speedup_hi_b1"]
            assert new["machine"] in store.machines()
        assert store.latency_history(baseline_id).iloc[0]["speedup_b1"] == 1.0  # the baseline beside itself
        points = store.points(expand=False).set_index("point_id")
        assert len(points) == 2  # no new point, and the points show the new timing
        assert points.loc[int8_id, "latency_ms_b1"] == store.latency_history(int8_id).iloc[0]["latency_ms_b1"]


@pytest.fixture(scope="module")
def digits_int8_run(tmp_path_factory):
    """A ptq_int8 run on a digits cnn_s, recorded in a store with its int8 variant saved."""
    from engine.methods.train import TrainTask
    from engine.model.train import TrainConfig

    root = tmp_path_factory.mktemp("remeasure")
    ckpt = str(root / "cnn_s")
    from engine.methods.tasks import run_task

    run_task("train", TrainTask(dataset="digits", model="cnn_s", out=ckpt, latency=False,
                                train=TrainConfig(epochs=1)), RunContext())
    db = str(root / "runs.duckdb")
    run_sync("quantize.ptq_int8", {"checkpoint": ckpt, "out": str(root / "int8"), "latency": False}, db)
    with Store(db) as store:
        ids = [int(i) for i in store.points(expand=False)["point_id"]]
    return db, ids[0], ids[1]


def test_the_cli_names_bad_point_ids(capsys, tmp_path):
    assert main(["remeasure", "1,x", "--db", str(tmp_path / "r.duckdb")]) == 2
    assert "POINT_IDS must be point ids" in capsys.readouterr().err
    assert main(["remeasure", "7", "--db", str(tmp_path / "r.duckdb")]) == 2
    assert "no run store at" in capsys.readouterr().err
    Store(str(tmp_path / "r.duckdb")).close()
    assert main(["remeasure", "7", "--db", str(tmp_path / "r.duckdb")]) == 2
    assert "point 7 is not in the store" in capsys.readouterr().err
