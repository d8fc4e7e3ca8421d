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


def test_a_share_is_learned_per_way_of_pruning_and_an_unknown_recovery_still_counts_when_choosing_runs():
    from engine.analysis.recommend import Budget
    from engine.run.planner import expected_gain, pick

    cal = Calibration()
    cal.add(1, gap_points=25.0, drop_points=86.0, kind="channels")  # a deep channel cut recovers little
    assert cal.share(1, "channels") == pytest.approx(25 / 86) and cal.measured(1, "channels")
    assert not cal.measured(1, "sparsity") and cal.share(1, "sparsity") == pytest.approx(25 / 86)  # borrowed
    cal.add(1, gap_points=27.0, drop_points=28.0, kind="sparsity")
    assert cal.share(1, "sparsity") == pytest.approx(27 / 28) and cal.share(1, "channels") == pytest.approx(25 / 86)

    base = {"accuracy": 95.0, "size_bytes": 1000.0, "proxy_accuracy": 0.95}
    budget = Budget(max_drop=1.0, min_smaller=4.0)
    row = lambda c, s, e, b, acc, size, **kw: {"key": f"c{c}-s{s}-e{e}-b{b}", "channel_ratio": c,  # noqa: E731
                                               "sparsity": s, "finetune_epochs": e, "bits": b, "accuracy": acc,
                                               "size_bytes": size, "confirmed": False, **kw}
    sparse = row(0.0, 0.7, 1, 4, 67.0, 70.0, proxy_drop=28.0, recovery_unknown=True)  # fine-tuning not yet measured
    cut = row(0.5, 0.0, 1, 4, 34.0, 30.0, proxy_drop=86.0, recovery_unknown=False)  # its share was measured: low
    wide = row(0.0, 0.0, 0, 8, 94.7, 250.0)
    done = {"c0-s0-e0-b4": {"status": "finished", "accuracy": 94.2, "size_bytes": 130.0,
                            "candidate": {"channel_ratio": 0.0, "sparsity": 0.0, "finetune_epochs": 0, "bits": 4}}}
    front = [(94.2, 130.0)]
    assert expected_gain(cut, front, base, budget) == 0.0  # far under the front's floor
    assert expected_gain({**sparse, "recovery_unknown": False}, front, base, budget) == 0.0  # 67 % as it stands
    assert expected_gain(sparse, front, base, budget) > 0.0  # but fine-tuning may well recover most of it
    # the budget already met, an odd turn spreads along the front: the 8-bit model adds the most (0.75 x 0.5)
    choice, why = pick([sparse, cut, wide], done, budget, base, margin=2.0, turn=1)
    assert choice["key"] == wide["key"] and "front" in why
    assert expected_gain(wide, front, base, budget) == pytest.approx(0.75 * 0.5)
