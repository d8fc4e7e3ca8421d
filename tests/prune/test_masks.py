"""Masks, rankings and schedules: the pure pieces, on hand-built models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.core.errors import ConfigError
from engine.methods.prune import masks as masks_module
from engine.methods.prune.importance import weight_magnitudes
from engine.methods.prune.masks import apply_masks, mask_sparsity, rank
from engine.methods.prune.schedule import check_schedule, geometric


def two_layer_model() -> nn.Module:
    """A big-weight layer and a small-weight layer: global and layer-wise pruning must differ on it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(30, 20))  # |w| around 1
        model[2].weight.copy_(torch.randn(10, 30) * 0.05)  # |w| around 0.05
    return model


def layers_of(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def test_global_threshold_is_shared_across_layers():
    model = two_layer_model()
    layers = layers_of(model)
    ranking = rank([n for n, _ in layers], weight_magnitudes(layers), "global")
    masks = ranking.masks(0.3)
    pruned = torch.cat([m.weight.detach().abs()[~masks[n]] for n, m in layers])
    kept = torch.cat([m.weight.detach().abs()[masks[n]] for n, m in layers])
    assert pruned.max() <= kept.min()  # one threshold for every layer
    assert ranking.thresholds(0.3)["*"] == pytest.approx(float(pruned.max()))
    # the small-weight layer is pruned far harder than the big one; together they hit the target
    assert float((~masks["2"]).float().mean()) > 0.6
    assert float((~masks["0"]).float().mean()) < 0.15
    assert mask_sparsity(masks) == pytest.approx(0.3, abs=1e-3)


def test_layerwise_prunes_every_layer_to_the_same_sparsity():
    model = two_layer_model()
    layers = layers_of(model)
    masks = rank([n for n, _ in layers], weight_magnitudes(layers), "layer").masks(0.3)
    for name, m in layers:
        keep = masks[name]
        assert float((~keep).float().mean()) == pytest.approx(0.3, abs=1 / keep.numel())
        w = m.weight.detach().abs()
        assert w[~keep].max() <= w[keep].min()  # each layer has its own threshold


def test_every_level_comes_from_one_sort(monkeypatch):
    calls = []
    real = masks_module.sort_order
    monkeypatch.setattr(masks_module, "sort_order", lambda s: calls.append(1) or real(s))
    model = two_layer_model()
    layers = layers_of(model)
    for scope, sorts in (("layer", 2), ("global", 1)):
        calls.clear()
        ranking = rank([n for n, _ in layers], weight_magnitudes(layers), scope)
        levels = [ranking.masks(s / 10) for s in range(10)]
        assert len(calls) == sorts
        for lo, hi in zip(levels, levels[1:]):  # a higher level prunes a superset
            assert all(bool((hi[n] <= lo[n]).all()) for n in lo)


def test_apply_masks_zeroes_exactly_the_masked_weights():
    model = two_layer_model()
    layers = layers_of(model)
    masks = rank([n for n, _ in layers], weight_magnitudes(layers), "layer").masks(0.5)
    apply_masks(model, masks)
    for name, m in layers:
        assert torch.equal(m.weight.detach() != 0, masks[name])


def test_weights_pruned_earlier_rank_first():
    model = two_layer_model()
    layers = layers_of(model)
    first = rank(["0", "2"], weight_magnitudes(layers), "global").masks(0.2)
    apply_masks(model, first)
    with torch.no_grad():  # a survivor shrinks below the pruned ones' old magnitudes
        model[0].weight.mul_(0.001)
    second = rank(["0", "2"], weight_magnitudes(layers, first), "global").masks(0.4)
    assert all(bool((second[n] <= first[n]).all()) for n in first)


@pytest.mark.parametrize("bad", [1.2, 1.0, -0.1, float("nan")])
def test_sparsity_outside_zero_one_is_refused(bad):
    ranking = rank(["0"], [torch.rand(10)], "layer")
    with pytest.raises(ConfigError, match=r"sparsity must be in \[0, 1\)"):
        ranking.masks(bad)


def test_unknown_scope_lists_the_choices():
    with pytest.raises(ConfigError, match="scope must be one of layer, global"):
        rank(["0"], [torch.rand(4)], "per-block")


def test_geometric_schedule_prunes_a_fixed_share_of_what_remains():
    assert geometric(0.2, 4) == pytest.approx([0.2, 0.36, 0.488, 0.5904])
    with pytest.raises(ConfigError, match="rate"):
        geometric(1.0, 3)


def test_a_schedule_must_grow():
    check_schedule([0.2, 0.5, 0.8])
    with pytest.raises(ConfigError, match="strictly increase"):
        check_schedule([0.5, 0.3])
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\)"):
        check_schedule([0.5, 1.5])
