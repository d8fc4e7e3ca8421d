"""Per-layer sensitivity: one layer pruned at a time, the rest left exactly as they were."""

from __future__ import annotations

import pytest

from engine.context import RunContext
from engine.errors import ConfigError
from engine.measure import prunable_weights
from engine.tasks import open_checkpoint, run_task


def test_each_layer_is_pruned_alone_at_each_ratio(digits_checkpoint):
    model, _, _ = open_checkpoint(digits_checkpoint)
    sizes = {n: m.weight.numel() for n, m in prunable_weights(model)}
    total = sum(sizes.values())
    points = run_task("prune.sensitivity", {"checkpoint": digits_checkpoint, "ratios": [0.5, 0.95]}, RunContext())
    base, scan = points[0], points[1:]
    assert base["stage"] == "dense" and base["layer"] is None
    assert [(p["layer"], p["ratio"]) for p in scan] == [(n, r) for n in sizes for r in (0.5, 0.95)]
    for p in scan:  # only this layer is sparse: the previous layer's weights were restored
        assert p["sparsity"] == pytest.approx(p["ratio"] * sizes[p["layer"]] / total, abs=1e-3)
        assert p["accuracy_drop"] == pytest.approx(base["accuracy"] - p["accuracy"])
        assert p["latency_ms_b1"] is None
    assert max(p["accuracy_drop"] for p in scan) > 0.05  # some layer matters at 95%


def test_structured_sensitivity_removes_channels_of_one_layer(digits_checkpoint):
    points = run_task("prune.sensitivity", {"checkpoint": digits_checkpoint, "ratios": [0.5],
                                            "layers": ["features.1.0.0"], "structured": True}, RunContext())
    base, (p,) = points[0], points[1:]
    assert p["macs"] < base["macs"] and p["params_total"] < base["params_total"]
    assert p["sparsity"] == 0.0


def test_sensitivity_refuses_a_layer_that_is_not_conv_or_linear(digits_checkpoint):
    with pytest.raises(ConfigError, match="is a BatchNorm2d"):
        run_task("prune.sensitivity", {"checkpoint": digits_checkpoint, "layers": ["features.0.0.1"]}, RunContext())
