"""Per-layer sensitivity: one layer pruned at a time, the rest left exactly as they were."""

from __future__ import annotations

import pytest

from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.deploy.measure import prunable_weights
from engine.methods.tasks import open_checkpoint, run_task


def test_each_layer_is_pruned_alone_at_each_ratio(prune, digits_checkpoint):
    model, _, _ = open_checkpoint(digits_checkpoint)
    sizes = {n: m.weight.numel() for n, m in prunable_weights(model)}
    total = sum(sizes.values())
    points = prune("sensitivity", ratios=[0.5, 0.95])
    base, scan = points[0], points[1:]
    assert (base["stage"], base["level"], base["layer"]) == ("baseline", 0.0, None)
    assert [(p["layer"], p["level"]) for p in scan] == [(n, r) for n in sizes for r in (0.5, 0.95)]
    for p in scan:  # only this layer is sparse: the previous layer's weights were restored
        assert (p["stage"], p["level_name"], p["artifact"]) == ("variant", "sparsity", "")
        assert p["sparsity"] == pytest.approx(p["level"] * sizes[p["layer"]] / total, abs=1e-3)
        assert p["accuracy_drop"] == pytest.approx(base["accuracy"] - p["accuracy"])
        assert p["latency_ms_b1"] is None
    assert max(p["accuracy_drop"] for p in scan) > 0.05  # some layer matters at 95%


def test_structured_sensitivity_removes_channels_of_one_layer_and_saves_when_asked(prune, tmp_path):
    points = prune("sensitivity", ratios=[0.5], layers=["features.1.0.0"], structured=True, save=True,
                   out=str(tmp_path / "run"))
    base, (p,) = points[0], points[1:]
    assert p["level_name"] == "channel_ratio" and p["layer"] == "features.1.0.0"
    assert p["macs"] < base["macs"] and p["params_total"] < base["params_total"]
    assert p["sparsity"] == 0.0
    assert p["artifact"] == str(tmp_path / "run" / "features.1.0.0" / "channel_ratio-0.500")
    assert run_task("measure", {"checkpoint": p["artifact"], "latency": False},
                    RunContext())[0].accuracy == p["accuracy"]


def test_sensitivity_saves_nothing_by_default():
    from engine.methods.prune.sensitivity import SensitivityConfig

    assert SensitivityConfig(checkpoint="x").save is False


def test_sensitivity_refuses_a_layer_that_is_not_conv_or_linear(prune):
    with pytest.raises(ConfigError, match="is a BatchNorm2d"):
        prune("sensitivity", layers=["features.0.0.1"])
