"""The planner's calibration (engine/run/planner.py): what fine-tuning recovers, learned from confirmed runs."""

from __future__ import annotations

import pytest

from engine.run.planner import Calibration, calibration_of, estimate_rows


def test_fine_tuning_recovers_a_share_of_the_estimated_drop_once_a_run_with_a_real_drop_confirms_it():
    cal = Calibration()
    cal.add(1, gap_points=0.5, drop_points=0.6)  # a mild candidate: too small a drop to learn a share from
    assert cal.share(1) is None and cal.shift(1, 40.0) == pytest.approx(0.5)  # the constant gap, as before
    cal.add(1, gap_points=45.0, drop_points=50.0)  # 50 points estimated lost, 45 recovered: 90 %
    cal.add(1, gap_points=16.0, drop_points=20.0)  # 80 %
    assert cal.share(1) == pytest.approx(0.85)
    assert cal.shift(1, 80.0) == pytest.approx(68.0)  # a channel cut the proxy sees 80 points down
    assert cal.shift(1, -1.0) == 0.0
    cal.add(0, gap_points=30.0, drop_points=40.0)  # without fine-tuning nothing is recovered: a constant gap only
    assert cal.share(0) is None and cal.shift(0, 40.0) == pytest.approx(30.0)
    cal.add(2, gap_points=60.0, drop_points=50.0)  # more than the drop (the subset's bias): clipped to all of it
    assert cal.share(2) == 1.0
    assert Calibration().shift(3, 10.0) == 0.0


def test_estimates_are_raised_by_what_the_confirmed_runs_recovered():
    base = {"accuracy": 95.0, "proxy_accuracy": 0.96, "size_bytes": 1000.0}
    trial = lambda n, c, s, e, acc: {"number": n, "candidate": {"channel_ratio": c, "sparsity": s,  # noqa: E731
                                                                 "finetune_epochs": e, "bits": 32},
                                      "estimate": {"accuracy": acc, "size_bytes": 500.0}}
    confirmed = {"c0-s0.9-e1-b32": {"status": "finished", "accuracy": 92.0, "estimate_accuracy": 55.0,
                                    "candidate": {"channel_ratio": 0.0, "sparsity": 0.9, "finetune_epochs": 1,
                                                  "bits": 32}}}
    state = {"baseline": base, "confirmed": confirmed,
             "trials": [trial(0, 0.0, 0.9, 1, 0.56), trial(1, 0.5, 0.0, 1, 0.10), trial(2, 0.5, 0.0, 0, 0.10)]}
    share = (92.0 - 55.0) / (95.0 - 55.0)
    assert calibration_of(confirmed, base).share(1) == pytest.approx(share)
    rows = {(r["channel_ratio"], r["finetune_epochs"]): r for r in estimate_rows(state)}
    cut_drop = 96.0 - 10.0
    assert rows[(0.5, 1)]["accuracy"] == pytest.approx(95.0 - cut_drop + share * cut_drop)
    assert rows[(0.5, 0)]["accuracy"] == pytest.approx(95.0 - cut_drop)  # no fine-tuning run confirmed at 0 epochs
    assert all(r["label"] == "estimate" for r in rows.values())
