"""The timing protocol (engine/deploy/timing.py) and the machine fingerprint (engine/core/machine.py)."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
import torch

from engine.core.errors import ConfigError
from engine.core.machine import ISA_FEATURES, describe, fingerprint, machine_id, usable_cpus
from engine.deploy import timing
from engine.deploy.measure import measure, measure_latency
from engine.deploy.timing import Disturbance, Policy, Snapshot, bootstrap_median, disturbance, time_forms
from engine.model.zoo import build_model

QUICK = Policy(rounds=3, block_seconds=0.01, budget_s=3.0, wait_s=0.05, bootstrap=200)


def spin(ms: float):
    """A form that keeps the CPU busy for `ms` (a sleep would look like a descheduled thread)."""
    def run(x):
        end = time.perf_counter() + ms / 1000
        while time.perf_counter() < end:
            pass
        return x
    return run


def test_the_fingerprint_names_the_cpu_its_int8_features_and_versions_and_the_id_follows_them():
    fp = fingerprint()
    assert fp["logical_cpus"] == usable_cpus() >= 1 and 1 <= fp["physical_cores"] <= fp["logical_cpus"]
    assert set(fp["isa"]) <= set(ISA_FEATURES) and fp["torch"] == torch.__version__.split("+")[0]
    assert fp["id"] == machine_id(fp) and len(fp["id"]) == 12
    assert machine_id({**fp, "isa": [*fp["isa"], "amx_int8"] if "amx_int8" not in fp["isa"] else []}) != fp["id"]
    assert machine_id({**fp, "os": "another kernel"}) == fp["id"]  # the id is about speed, not the host
    assert fp["cpu"] in describe(fp)


def test_a_round_is_disturbed_when_others_use_the_cpu_or_it_is_stolen():
    a = Snapshot(wall=0.0, process_cpu=0.0, thread_cpu=0.0, busy=10.0, steal=1.0)
    quiet = disturbance(a, Snapshot(wall=1.0, process_cpu=2.0, thread_cpu=1.0, busy=12.1, steal=1.0))
    assert quiet.other_cores == pytest.approx(0.1) and quiet.reason(Policy(), use_proc=True) == ""
    busy = disturbance(a, Snapshot(wall=1.0, process_cpu=1.0, thread_cpu=0.5, busy=12.0, steal=1.0))
    assert busy.reason(Policy(), use_proc=True) == "other processes used 1.00 cores"
    stolen = disturbance(a, Snapshot(wall=1.0, process_cpu=1.5, thread_cpu=1.0, busy=11.5, steal=1.5))
    assert "stole 25 %" in stolen.reason(Policy(), use_proc=True)
    # where /proc/stat is the host's, this thread's share of the wall time decides
    assert Disturbance(None, None, 0.4).reason(Policy(), use_proc=False) == "this thread ran 40 % of the wall time"
    assert Disturbance(5.0, 0.0, 0.95).reason(Policy(), use_proc=False) == ""


def test_the_bootstrap_interval_holds_the_median_and_is_reproducible():
    values = [1.9, 2.0, 2.1, 2.05, 1.95, 2.2, 1.8]
    lo, hi = bootstrap_median(values, 500, random.Random(0))
    assert lo <= 2.0 <= hi and (lo, hi) == bootstrap_median(values, 500, random.Random(0))
    assert bootstrap_median([3.0], 10, random.Random(0)) == (3.0, 3.0)


def test_a_form_twice_as_slow_as_its_reference_is_timed_at_half_its_speed_with_an_interval():
    t = time_forms({"ref": spin(2.0), "variant": spin(4.0)}, torch.zeros(1), reference="ref", policy=QUICK)
    s = t.speedups["variant"]
    assert s.lo <= s.median <= s.hi
    assert t.forms["variant"].p10_ms <= t.forms["variant"].median_ms <= t.forms["variant"].p90_ms
    if t.clean:  # a busy machine (a spinning form descheduled mid-wait runs long) must say so instead
        assert 0.4 < s.median < 0.6 and t.forms["variant"].median_ms == pytest.approx(4.0, rel=0.5)
    else:
        assert t.quality.startswith("noisy: ")
    assert t.rounds >= 3 and t.machine == fingerprint()["id"] and t.threads >= 1
    assert torch.get_num_threads() == torch.get_num_threads()  # restored (no error)


def test_the_widest_interval_decides_when_rounds_agree():
    steady = [{"ref": [2.0, 2.0], "v": [1.0, 1.01]} for _ in range(7)]
    spread, what = timing.widest(steady, ["ref", "v"], "ref", random.Random(0), 200)
    assert spread == pytest.approx(1.0, abs=0.02) and "v's speed-up" in what
    flipping = [{"ref": [2.0], "v": [1.0 if r % 2 else 3.0]} for r in range(9)]
    spread, what = timing.widest(flipping, ["ref", "v"], "ref", random.Random(0), 200)
    assert spread > Policy().max_spread and "0.67x to 2.00x" in what
    alone = [{"v": [1.0 if r % 2 else 3.0]} for r in range(9)]  # without a reference: the form's own medians
    assert timing.widest(alone, ["v"], None, random.Random(0), 200)[0] == pytest.approx(3.0)


def test_rounds_that_disagree_are_extended_then_marked_noisy(monkeypatch):
    snapshots = [0]  # the protocol reads the machine's counters once before and once after each round
    real = timing.snapshot

    def counting():
        snapshots[0] += 1
        return real()

    monkeypatch.setattr(timing, "snapshot", counting)

    def flipping(x):  # 1 ms in odd rounds, 3 ms in even ones: a speed that drifts with nothing in the counters
        return spin(1.0 if (snapshots[0] // 2) % 2 else 3.0)(x)
    policy = Policy(rounds=3, max_rounds=9, block_seconds=0.01, budget_s=2.0, wait_s=0.02, bootstrap=200)
    t = time_forms({"ref": spin(2.0), "v": flipping}, torch.zeros(1), reference="ref", policy=policy)
    assert t.quality.startswith("noisy: ")  # never clean: the rounds disagree, or others used the CPU
    if t.disturbed == 0:  # every round clean by the CPU counters: only the interval can have caught it
        assert "the rounds disagree" in t.quality and t.rounds > 3


def test_bad_requests_are_refused_naming_what_is_wrong():
    with pytest.raises(ConfigError, match="rounds must be at least 3"):
        Policy(rounds=2)
    with pytest.raises(ConfigError, match="max_rounds"):
        Policy(rounds=7, max_rounds=5)
    with pytest.raises(ConfigError, match="target_spread"):
        Policy(target_spread=2.0, max_spread=1.5)
    with pytest.raises(ConfigError, match="reference 'x' is not among the forms timed: a"):
        time_forms({"a": spin(0.1)}, torch.zeros(1), reference="x", policy=QUICK)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the contention check reads /proc")
def test_a_timing_disturbed_by_a_cpu_burner_is_retried_or_marked_noisy():
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(usable_cpus())]
    try:
        time.sleep(0.3)  # let them take the CPUs
        t = time_forms({"ref": spin(1.0), "variant": spin(1.0)}, torch.zeros(1), reference="ref",
                       policy=Policy(rounds=3, block_seconds=0.02, budget_s=1.5, wait_s=0.05, bootstrap=100))
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert t.disturbed > 0 and t.reasons  # rounds were thrown away and run again
    assert t.clean or t.quality.startswith("noisy: ")  # and what is kept says which it is
    assert not t.clean or t.rounds == 3


def test_measure_pairs_a_variant_with_its_reference_and_records_quality_and_machine(digits):
    torch.manual_seed(0)
    big = build_model("cnn_l", 10, 1, 8).eval()
    small = build_model("cnn_s", 10, 1, 8).eval()
    m = measure(small, digits, reference=big, latency=True)
    assert m.speedup_lo_b1 <= m.speedup_b1 <= m.speedup_hi_b1 and m.speedup_b32 is not None
    assert m.latency_p10_ms_b1 <= m.latency_ms_b1 <= m.latency_p90_ms_b1
    assert m.latency_quality == "clean" or m.latency_quality.startswith(("noisy", "batch"))
    assert m.machine == fingerprint()["id"]
    alone = measure(small, digits, latency=True)
    assert alone.speedup_b1 is None and alone.machine == m.machine
    assert measure(small, digits, latency=False).machine == ""  # not timed: no machine claimed


def test_measure_latency_of_a_runner_against_itself_is_exactly_one(digits):
    model = build_model("cnn_s", 10, 1, 8).eval()
    x = digits.test.tensors()[0][:32]
    lat = measure_latency(model, x, batch_sizes=(1,), reference=model, policy=timing.QUICK)
    assert lat["speedup_b1"] == lat["speedup_lo_b1"] == lat["speedup_hi_b1"] == 1.0


def test_the_store_keeps_each_machines_fingerprint_once_and_points_name_it(tmp_path, digits):
    from engine.methods.tasks import make_point
    from store import Store

    model = build_model("cnn_s", 10, 1, 8).eval()
    timed = make_point(measure(model, digits, latency=True, reference=None), family="measure", method="measure",
                       stage="baseline")
    untimed = make_point(measure(model, digits, latency=False), family="measure", method="measure", stage="baseline")
    with Store(tmp_path / "s.duckdb") as store:
        run_id = store.create_run("measure", {}, status="running")
        for p in (timed, timed, untimed):
            store.add_point(run_id, p)
        machines = store.machines()
        points = store.points(expand=False)
    assert list(machines) == [fingerprint()["id"]] and machines[fingerprint()["id"]]["cpu"] == fingerprint()["cpu"]
    assert sorted(points["machine"].fillna("")) == ["", fingerprint()["id"], fingerprint()["id"]]
    assert set(points["latency_quality"].fillna("")) <= {"", "clean"} or any(
        q.startswith(("noisy", "batch")) for q in points["latency_quality"].dropna())


def test_the_environment_names_the_default_policy_and_a_wrong_name_is_refused(monkeypatch):
    monkeypatch.setenv("COMPRESSION_LAB_TIMING", "default")
    assert timing.default_policy() == Policy()
    monkeypatch.setenv("COMPRESSION_LAB_TIMING", "smoke")
    assert timing.default_policy() is timing.SMOKE and timing.SMOKE.budget_s == 1.0
    monkeypatch.setenv("COMPRESSION_LAB_TIMING", "fast")
    with pytest.raises(ConfigError, match="COMPRESSION_LAB_TIMING='fast' is not a timing policy; use one of default"):
        timing.default_policy()
