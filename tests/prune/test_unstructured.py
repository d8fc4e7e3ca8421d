"""Unstructured sweeps: sparsity on target, a baseline and variants, repeats, fine-tuning with fixed masks."""

from __future__ import annotations

import copy

import pytest
import torch

from engine.core.context import RunContext
from engine.core.errors import Cancelled, ConfigError
from engine.core.point import METRIC_FIELDS
from engine.deploy.measure import prunable_weights
from engine.methods.prune import masks as masks_module
from engine.methods.prune.finetune import FinetuneConfig, finetune, finetune_training, head_inputs
from engine.methods.prune.importance import weight_magnitudes
from engine.methods.prune.masks import apply_masks, rank
from engine.methods.prune.unstructured import UnstructuredConfig
from engine.methods.tasks import open_checkpoint, run_task
from engine.model.checkpoint import load_checkpoint


@pytest.mark.parametrize("method", ["l1_unstructured", "global_unstructured"])
def test_achieved_sparsity_is_within_half_a_point_of_the_target(method, prune):
    levels = [0.0, 0.3, 0.7, 0.9]
    points = prune(method, sparsities=levels)
    assert [p["level"] for p in points] == levels
    assert [p["stage"] for p in points] == ["baseline", "variant", "variant", "variant"]
    for p, level in zip(points, levels):
        assert set(METRIC_FIELDS) <= set(p)
        assert (p["family"], p["method"], p["level_name"]) == ("prune", method, "sparsity")
        assert abs(p["sparsity"] - level) <= 0.005
        assert "sparsities" not in p["params"] and p["artifact"] == ""  # the level is the point's own field
    nonzero = [p["params_nonzero"] for p in points]
    size = [p["size_bytes"] for p in points]
    assert nonzero == sorted(nonzero, reverse=True) and size == sorted(size, reverse=True)
    assert points[-1]["size_bytes"] < 0.4 * points[0]["size_bytes"]
    assert points[-1]["macs"] == points[0]["macs"]  # zeros are still multiplied on dense hardware
    if method == "l1_unstructured":
        assert all(v == pytest.approx(0.9, abs=0.01) for v in points[-1]["layer_sparsity"].values())
    else:
        assert len({round(v, 2) for v in points[-1]["layer_sparsity"].values()}) > 1
        assert points[-1]["threshold"] > 0 and points[0]["threshold"] is None


def test_one_shot_sweep_sorts_the_weights_once_for_all_levels(prune, digits_checkpoint, monkeypatch):
    calls = []
    real = masks_module.sort_order
    monkeypatch.setattr(masks_module, "sort_order", lambda s: calls.append(s.numel()) or real(s))
    prune("l1_unstructured", sparsities=[0.3, 0.6])
    model, _, _ = open_checkpoint(digits_checkpoint)
    assert len(calls) == len(prunable_weights(model))  # one sort per layer, not per layer and level


def test_deterministic_repeats_have_zero_std(prune):
    (point,) = prune("global_unstructured", sparsities=[0.8], repeats=3)
    assert point["repeats"] == 3 and point["seeds"] == [0, 1, 2]
    assert len(point["accuracy_runs"]) == 3 and len(set(point["accuracy_runs"])) == 1
    assert point["accuracy_std"] == 0.0 and point["loss_std"] == 0.0
    assert point["deterministic"] and "deterministic" in point["note"]


def test_fine_tuned_repeats_differ_and_the_saved_model_is_repeat_0(prune, tmp_path):
    (point,) = prune("global_unstructured", sparsities=[0.85], repeats=3, out=str(tmp_path / "run"),
                     finetune={"mode": "last", "samples": 600, "train": {"lr": 0.05, "seed": 4}})
    assert not point["deterministic"] and point["seeds"] == [4, 5, 6]
    assert point["loss_std"] > 0 and point["accuracy_std"] > 0
    assert point["accuracy"] == pytest.approx(sum(point["accuracy_runs"]) / 3)
    assert abs(point["sparsity"] - 0.85) <= 0.005  # fine-tuning kept the masks
    assert point["artifact"] == str(tmp_path / "run" / "sparsity-0.850") and point["artifact_repeat"] == 0
    measured = run_task("measure", {"checkpoint": point["artifact"], "latency": False}, RunContext())[0]
    assert measured.accuracy == point["accuracy_runs"][0]


def test_keep_first_last_leaves_them_dense_and_the_saved_masks_are_permanent(prune, digits_checkpoint, tmp_path):
    (point,) = prune("l1_unstructured", sparsities=[0.6], keep_first_last=True, out=str(tmp_path / "run"))
    model, meta = load_checkpoint(point["artifact"])
    zeros = {n: float((m.weight == 0).float().mean()) for n, m in prunable_weights(model)}
    assert zeros.pop("features.0.0.0") == 0.0 and zeros.pop("fc") == 0.0
    assert all(v == pytest.approx(0.6, abs=0.005) for v in zeros.values())
    assert meta.layer_shapes == "arch"
    step = meta.lineage[-1]
    assert (step["family"], step["method"], step["level"], step["level_name"]) == \
        ("prune", "l1_unstructured", 0.6, "sparsity")
    assert step["input_checkpoint"] == digits_checkpoint and step["params"]["keep_first_last"]


def test_an_untouched_level_0_points_at_the_input_instead_of_copying_it(prune, digits_checkpoint, tmp_path):
    base, half = prune("l1_unstructured", sparsities=[0.0, 0.5], out=str(tmp_path / "run"))
    assert base["stage"] == "baseline" and base["artifact"] == digits_checkpoint
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == ["sparsity-0.500"]
    assert half["artifact"] == str(tmp_path / "run" / "sparsity-0.500")


def test_unstructured_latency_is_measured_once_and_labelled(prune):
    points = prune("l1_unstructured", sparsities=[0.0, 0.5], latency=True)
    assert points[0]["latency_ms_b1"] is not None
    assert points[0]["latency_ms_b1"] == points[1]["latency_ms_b1"]
    assert "does not make it faster" in points[1]["latency_note"]


def masked_model(checkpoint, sparsity=0.5):
    model, meta, data = open_checkpoint(checkpoint)
    layers = prunable_weights(model)
    masks = rank([n for n, _ in layers], weight_magnitudes(layers), "layer").masks(sparsity)
    apply_masks(model, masks)
    return model, data, masks


def test_masks_stay_fixed_while_all_layers_fine_tune_with_l1(digits_checkpoint):
    model, data, masks = masked_model(digits_checkpoint)
    before = copy.deepcopy(model)
    history = finetune(model, data, FinetuneConfig(mode="all", samples=256, l1=1e-5), classifier="fc", masks=masks)
    assert "loss_l1" in history[0]
    for name, m in prunable_weights(model):
        w = m.weight.detach()
        assert torch.equal(w != 0, masks[name])  # pruned stay zero, survivors did not die
        assert not torch.equal(w, before.get_submodule(name).weight.detach())


def test_last_layer_fine_tuning_changes_only_the_classifier(digits_checkpoint):
    model, data, masks = masked_model(digits_checkpoint)
    twin = copy.deepcopy(model)
    cfg = FinetuneConfig(mode="last", samples=256)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finetune(model, data, cfg, classifier="fc", masks=masks)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BatchNorm statistics included: nothing else moved
    assert torch.equal(model.fc.weight != 0, masks["fc"])
    assert all(p.requires_grad for p in model.parameters())
    # repeats of a sweep level share the frozen body's outputs: same result as computing them anew
    finetune(twin, data, cfg, classifier="fc", masks=masks, features=head_inputs(twin, data, cfg, "fc"))
    assert torch.equal(twin.fc.weight, model.fc.weight)


def test_fine_tuning_keeps_its_defaults_in_one_nested_train_config():
    cfg = FinetuneConfig()
    assert (cfg.mode, cfg.train.epochs, cfg.train.lr, cfg.train.weight_decay) == ("none", 1, 0.01, 0.0)
    partial = UnstructuredConfig.from_dict({"checkpoint": "x", "finetune": {"mode": "all", "train": {"epochs": 3}}})
    assert partial.finetune.train == finetune_training(epochs=3)  # the rest of fine-tuning's defaults stay


@pytest.mark.parametrize("bad", [[1.2], [-0.1], [], [0.5, 1.0]])
def test_sparsity_levels_outside_zero_one_are_refused(bad):
    with pytest.raises(ConfigError, match=r"sparsity"):
        UnstructuredConfig(checkpoint="x", sparsities=tuple(bad))


def test_bad_finetune_choice_names_the_allowed_values():
    with pytest.raises(ConfigError, match="mode must be one of none, last, all; got 'some'"):
        UnstructuredConfig.from_dict({"checkpoint": "x", "finetune": {"mode": "some"}})


def test_a_cancelled_sweep_stops_and_leaves_no_output_directory(prune, tmp_path):
    ctx = RunContext()
    ctx.cancel.cancel()
    with pytest.raises(Cancelled):
        prune("l1_unstructured", ctx, out=str(tmp_path / "run"))
    assert ctx.points == [] and not (tmp_path / "run").exists()
