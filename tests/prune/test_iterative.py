"""Iterative pruning: one step point per iteration, sparsity on the geometric schedule, masks only grow."""

from __future__ import annotations

import pytest

from engine.core.errors import ConfigError
from engine.deploy.measure import prunable_weights
from engine.methods.prune.iterative import IterativeConfig
from engine.model.checkpoint import load_checkpoint


def test_each_iteration_is_a_step_on_the_geometric_schedule_and_masks_only_grow(prune, digits_checkpoint,
                                                                                 tmp_path):
    points = prune("iterative", rate=0.5, iterations=2, out=str(tmp_path / "run"),
                   finetune={"mode": "all", "samples": 300})
    assert [p["iteration"] for p in points] == [0, 1, 2]
    assert [p["stage"] for p in points] == ["step"] * 3
    for p, target in zip(points, [0.0, 0.5, 0.75]):
        assert abs(p["sparsity"] - target) <= 0.005  # fine-tuning all layers kept the masks
        assert p["target_sparsity"] == pytest.approx(target)
        assert p["level"] == p["sparsity"] and p["level_name"] == "sparsity"  # the global sparsity reached
    assert points[0]["artifact"] == digits_checkpoint  # iteration 0 is the input, untouched
    assert [p["artifact"] for p in points[1:]] == [str(tmp_path / "run" / f"iteration-{i}") for i in (1, 2)]
    first, _ = load_checkpoint(points[1]["artifact"])
    second, meta = load_checkpoint(points[2]["artifact"])
    assert meta.lineage[-1]["method"] == "iterative" and meta.lineage[-1]["level"] == points[2]["level"]
    for (name, a), (_, b) in zip(prunable_weights(first), prunable_weights(second)):
        assert bool(((a.weight == 0) <= (b.weight == 0)).all()), name  # pruned once, pruned for good
    assert points[2]["accuracy"] > 0.5  # fine-tuning kept a 75%-sparse model useful


def test_an_explicit_schedule_replaces_the_geometric_one_and_latency_is_timed_once(prune):
    points = prune("iterative", schedule=[0.3, 0.6], scope="layer", latency=True, finetune={"mode": "none"})
    assert [round(p["sparsity"], 2) for p in points] == [0.0, 0.3, 0.6]
    assert points[0]["latency_ms_b1"] is not None  # timed on the unpruned model, shared by every iteration
    assert all(p["latency_ms_b1"] == points[0]["latency_ms_b1"] for p in points)
    assert "unpruned" in points[2]["latency_note"]


def test_bad_iterative_settings_are_refused():
    with pytest.raises(ConfigError, match="strictly increase"):
        IterativeConfig(checkpoint="x", schedule=(0.5, 0.4))
    with pytest.raises(ConfigError, match=r"rate must be in \(0, 1\)"):
        IterativeConfig(checkpoint="x", rate=1.0)
    with pytest.raises(ConfigError, match="scope must be one of layer, global"):
        IterativeConfig(checkpoint="x", scope="block")
