"""Unstructured sweeps on the trained teacher: sparsity on target, repeats, fine-tuning with fixed masks."""

from __future__ import annotations

import copy

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.context import RunContext
from engine.errors import Cancelled, ConfigError
from engine.measure import METRIC_FIELDS, prunable_weights
from engine.prune import masks as masks_module
from engine.prune.finetune import FinetuneConfig, finetune, head_inputs
from engine.prune.importance import weight_magnitudes
from engine.prune.masks import apply_masks, rank
from engine.prune.unstructured import UnstructuredConfig
from engine.tasks import open_checkpoint, run_task


@pytest.mark.parametrize("method", ["l1_unstructured", "global_unstructured"])
def test_achieved_sparsity_is_within_half_a_point_of_the_target(method, teacher_checkpoint):
    levels = [0.0, 0.3, 0.7, 0.9]
    points = run_task(f"prune.{method}", {"checkpoint": teacher_checkpoint, "sparsities": levels,
                                          "latency": False}, RunContext())
    assert [p["level"] for p in points] == levels
    for p, level in zip(points, levels):
        assert set(METRIC_FIELDS) <= set(p)
        assert abs(p["sparsity"] - level) <= 0.005
        assert p["method"] == method and p["params"]["sparsity"] == level
    nonzero = [p["params_nonzero"] for p in points]
    size = [p["size_bytes"] for p in points]
    assert nonzero == sorted(nonzero, reverse=True) and size == sorted(size, reverse=True)
    assert points[-1]["size_bytes"] < 0.4 * points[0]["size_bytes"]
    assert points[-1]["macs"] == points[0]["macs"]  # zeros are still multiplied on dense hardware
    if method == "l1_unstructured":
        assert all(v == pytest.approx(0.9, abs=0.005) for v in points[-1]["layer_sparsity"].values())
    else:
        assert len({round(v, 2) for v in points[-1]["layer_sparsity"].values()}) > 1
        assert points[-1]["threshold"] > 0 and points[0]["threshold"] is None


def test_one_shot_sweep_sorts_the_weights_once_for_all_levels(teacher_checkpoint, monkeypatch):
    calls = []
    real = masks_module.sort_order
    monkeypatch.setattr(masks_module, "sort_order", lambda s: calls.append(s.numel()) or real(s))
    run_task("prune.l1_unstructured", {"checkpoint": teacher_checkpoint, "sparsities": [0.3, 0.6],
                                       "latency": False}, RunContext())
    model, _, _ = open_checkpoint(teacher_checkpoint)
    assert len(calls) == len(prunable_weights(model))  # one sort per layer, not per layer and level


def test_deterministic_repeats_have_zero_std(teacher_checkpoint):
    (point,) = run_task("prune.global_unstructured", {"checkpoint": teacher_checkpoint, "sparsities": [0.8],
                                                      "repeats": 3, "latency": False}, RunContext())
    assert point["repeats"] == 3 and point["seeds"] == [0, 1, 2]
    assert len(point["accuracy_runs"]) == 3
    assert point["accuracy_std"] == 0.0 and point["loss_std"] == 0.0
    assert point["deterministic"] and "deterministic" in point["note"]


def test_repeats_that_fine_tune_with_different_seeds_have_nonzero_std(teacher_checkpoint):
    (point,) = run_task("prune.global_unstructured", {
        "checkpoint": teacher_checkpoint, "sparsities": [0.85], "repeats": 3, "latency": False,
        "finetune": {"mode": "last", "epochs": 1, "lr": 0.05, "samples": 600}}, RunContext())
    assert not point["deterministic"]
    assert point["loss_std"] > 0 and point["accuracy_std"] > 0
    assert point["accuracy"] == pytest.approx(sum(point["accuracy_runs"]) / 3)
    assert abs(point["sparsity"] - 0.85) <= 0.005  # fine-tuning kept the masks


def test_keep_first_last_leaves_them_dense_and_the_saved_masks_are_permanent(teacher_checkpoint, tmp_path):
    (point,) = run_task("prune.l1_unstructured", {"checkpoint": teacher_checkpoint, "sparsities": [0.6],
                                                  "keep_first_last": True, "latency": False,
                                                  "out": str(tmp_path)}, RunContext())
    model, meta = load_checkpoint(point["artifact"])
    zeros = {n: float((m.weight == 0).float().mean()) for n, m in prunable_weights(model)}
    assert zeros.pop("features.0.0.0") == 0.0 and zeros.pop("fc") == 0.0
    assert all(v == pytest.approx(0.6, abs=0.005) for v in zeros.values())
    assert meta.layer_shapes == "arch" and meta.history[-1]["method"] == "l1_unstructured"
    assert run_task("measure", {"checkpoint": point["artifact"], "latency": False},
                    RunContext())[0]["accuracy"] == point["accuracy"]


def test_unstructured_latency_is_measured_once_and_labelled(teacher_checkpoint):
    points = run_task("prune.l1_unstructured", {"checkpoint": teacher_checkpoint, "sparsities": [0.0, 0.5]},
                      RunContext())
    assert points[0]["latency_ms_b1"] is not None
    assert points[0]["latency_ms_b1"] == points[1]["latency_ms_b1"]
    assert "does not make it faster" in points[1]["latency_note"]


def masked_teacher(teacher_checkpoint, sparsity=0.5):
    model, meta, data = open_checkpoint(teacher_checkpoint)
    layers = prunable_weights(model)
    masks = rank([n for n, _ in layers], weight_magnitudes(layers), "layer").masks(sparsity)
    apply_masks(model, masks)
    return model, data, masks


def test_masks_stay_fixed_while_all_layers_fine_tune_with_l1(teacher_checkpoint):
    model, data, masks = masked_teacher(teacher_checkpoint)
    before = copy.deepcopy(model)
    history = finetune(model, data, FinetuneConfig(mode="all", epochs=1, samples=256, l1=1e-5), classifier="fc",
                       masks=masks)
    assert "loss_l1" in history[0]
    for name, m in prunable_weights(model):
        w = m.weight.detach()
        assert torch.equal(w != 0, masks[name])  # pruned stay zero, survivors did not die
        assert not torch.equal(w, before.get_submodule(name).weight.detach())


def test_last_layer_fine_tuning_changes_only_the_classifier(teacher_checkpoint):
    model, data, masks = masked_teacher(teacher_checkpoint)
    twin = copy.deepcopy(model)
    cfg = FinetuneConfig(mode="last", epochs=1, samples=256)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finetune(model, data, cfg, classifier="fc", masks=masks)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BatchNorm statistics included: nothing else moved
    assert torch.equal(model.fc.weight != 0, masks["fc"])
    assert all(p.requires_grad for p in model.parameters())
    # repeats of a sweep level share the frozen body's outputs: same result as computing them anew
    finetune(twin, data, cfg, classifier="fc", masks=masks, features=head_inputs(twin, data, cfg, "fc"))
    assert torch.equal(twin.fc.weight, model.fc.weight)


@pytest.mark.parametrize("bad", [[1.2], [-0.1], [], [0.5, 1.0]])
def test_sparsity_levels_outside_zero_one_are_refused(bad):
    with pytest.raises(ConfigError, match=r"sparsity"):
        UnstructuredConfig(checkpoint="x", sparsities=tuple(bad))


def test_bad_finetune_choice_names_the_allowed_values():
    with pytest.raises(ConfigError, match="finetune must be one of none, last, all; got 'some'"):
        UnstructuredConfig(checkpoint="x", finetune=FinetuneConfig(mode="some"))


def test_a_cancelled_sweep_stops(teacher_checkpoint):
    ctx = RunContext()
    ctx.cancel.cancel()
    with pytest.raises(Cancelled):
        run_task("prune.l1_unstructured", {"checkpoint": teacher_checkpoint, "latency": False}, ctx)
    assert ctx.points == []
