"""N:M sparsity: n non-zeros in every group of m input-channel weights (counted here with `unfold`, not with the
engine's grouping), the pruned layers at 1 - n/m, the pattern kept through fine-tuning, the N:M storage against a
hand count, clear refusals, the CLI, and a CPU point that says it ran dense."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from engine.cli.main import main
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.deploy.measure import nm_tensor_bytes, storage
from engine.methods.prune import nm as nm_module
from engine.methods.prune.nm import NMConfig, nm_mask, sparse_kernel_timing, split_layers
from engine.methods.tasks import run_task
from engine.model.checkpoint import load_checkpoint
from engine.model.zoo import get_module


def windows(w: torch.Tensor, m: int) -> torch.Tensor:
    """Every group of m consecutive input channels as the last dim: (out, in/m, [kh, kw,] m)."""
    return w.unfold(1, m, m)


def nonzeros_per_group(w: torch.Tensor, m: int) -> torch.Tensor:
    return (windows(w, m) != 0).sum(-1)


@pytest.fixture(scope="module")
def runs(digits_checkpoint, tmp_path_factory) -> dict:
    """The 2:4 method run twice on the digits checkpoint, saved: fine-tuned 1 epoch (all layers), and one-shot."""
    out = {}
    for mode in ("all", "none"):
        where = tmp_path_factory.mktemp(f"nm-{mode}") / "run"
        points = run_task("prune.nm", {"checkpoint": digits_checkpoint, "latency": False, "out": str(where),
                                       "finetune": {"mode": mode, "train": {"epochs": 1}}}, RunContext())
        out[mode] = [p.to_dict() for p in points]
    return out


@pytest.mark.parametrize(("n", "m", "shape"), [(2, 4, (6, 8, 3, 3)), (1, 4, (5, 12)), (3, 8, (4, 16, 1, 1)),
                                               (5, 16, (3, 32, 2, 2))])
def test_a_mask_keeps_the_n_largest_of_every_m_input_channel_weights(n, m, shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(n * m))
    keep = nm_mask(w, n, m)
    assert keep.shape == w.shape and keep.dtype == torch.bool
    assert (windows(keep, m).sum(-1) == n).all()
    mags, kept = windows(w.abs(), m), windows(keep, m)
    lowest_kept = torch.where(kept, mags, torch.inf).amin(-1)
    highest_dropped = torch.where(kept, -torch.inf, mags).amax(-1)
    assert (lowest_kept >= highest_dropped).all()
    assert float((~keep).float().mean()) == pytest.approx(1 - n / m)


def test_a_conv_is_grouped_along_its_input_channels_not_its_kernel_positions():
    w = torch.zeros(1, 4, 2, 2)
    w[0, :, 0, 0] = torch.tensor([1.0, 4.0, 3.0, 2.0])  # one group: channels 1 and 2 are the largest
    w[0, :, 1, 1] = torch.tensor([5.0, 0.5, 0.25, 6.0])
    keep = nm_mask(w, 2, 4)
    assert keep[0, :, 0, 0].tolist() == [False, True, True, False]
    assert keep[0, :, 1, 1].tolist() == [True, False, False, True]
    assert keep[0, :, 0, 1].tolist() == [True, True, False, False]  # all zero: ties keep the lower positions


def test_the_variant_has_exactly_n_nonzeros_per_group_in_every_pruned_layer_after_fine_tuning(runs):
    base, variant = runs["all"]
    assert (base["stage"], base["level"], variant["stage"], variant["level"]) == ("baseline", 0.0, "variant", 0.5)
    assert variant["nm_pattern"] == "2:4" and variant["params"]["n"] == 2 and variant["params"]["m"] == 4
    model = load_checkpoint(variant["artifact"])[0]
    pruned = variant["nm_layers"]
    assert pruned == ["features.1.0.0", "features.1.1.0", "features.2.0.0", "fc"]
    total = zeros = 0
    for name in pruned:
        w = get_module(model, name).weight.detach()
        assert (nonzeros_per_group(w, 4) == 2).all(), name  # fine-tuning moved no weight into a pruned place
        total, zeros = total + w.numel(), zeros + int((w == 0).sum())
    assert zeros / total == pytest.approx(0.5) and variant["pruned_layer_sparsity"] == pytest.approx(0.5)
    assert all(s == pytest.approx(0.5) for s in variant["layer_sparsity"].values())
    # the first conv (one grey input channel) cannot hold 2:4: dense, and the point says why
    assert variant["nm_skipped"] == {"features.0.0.0": "1 input channel, not a multiple of m=4"}
    assert int((get_module(model, "features.0.0.0").weight == 0).sum()) == 0
    assert 0.4 < variant["sparsity"] < 0.5  # over every prunable weight, the dense first conv included


def test_fine_tuning_changes_the_kept_weights_but_not_the_pattern(runs):
    tuned = load_checkpoint(runs["all"][1]["artifact"])[0]
    one_shot = load_checkpoint(runs["none"][1]["artifact"])[0]
    for name in runs["all"][1]["nm_layers"]:
        a, b = get_module(tuned, name).weight.detach(), get_module(one_shot, name).weight.detach()
        assert torch.equal(a == 0, b == 0), name
    assert not torch.equal(get_module(tuned, "fc").weight, get_module(one_shot, "fc").weight)


def test_nm_storage_matches_a_hand_count():
    # 2:4 in fp32: per group of 4, two 4-byte values and two 2-bit positions = 8.5 bytes
    assert nm_tensor_bytes(4 * 1152, 2, 4, 32) == 1152 * 8 + 1152 * 4 // 8
    # 1:4 at 8 bits: per group one byte + one 2-bit position = 10 bits; plus one scale and zero point (8 bytes)
    assert nm_tensor_bytes(4 * 1152, 1, 4, 8) == 1152 * 10 // 8 + 8
    # 2:8 at 16 bits, per-channel (16 groups): 2 x (16 + 3) bits per group of 8
    assert nm_tensor_bytes(8 * 100, 2, 8, 16, groups=16) == 3800 // 8 + 16 * 8
    assert nm_tensor_bytes(12, 1, 4, 3) == 2 + 8  # 3 groups x (3 + 2) bits = 15 bits: rounded up to 2 bytes
    with pytest.raises(ValueError, match="multiple of m"):
        nm_tensor_bytes(10, 2, 4, 32)


def test_storage_sizes_a_layer_the_form_stores_as_nm_and_refuses_one_that_is_not():
    layer = nn.Linear(8, 4)
    with torch.no_grad():
        layer.weight.mul_(nm_mask(layer.weight, 2, 4))
    model = nn.Sequential(layer)
    sized = storage(model, nm={"0": (2, 4)})
    assert sized["size_bytes"] == 8 * (2 * 4) + 8 * 4 // 8 + 4 * 4  # 8 groups of 8.5 bytes, then the 4 biases
    assert sized["sparsity"] == 0.5
    with pytest.raises(ValueError, match="layer 0 is not 1:4 sparse: a group of 4 holds 2 non-zeros"):
        storage(model, nm={"0": (1, 4)})


def test_the_variant_point_is_sized_as_nm_storage(runs, digits_checkpoint):
    variant = runs["none"][1]
    model = load_checkpoint(variant["artifact"])[0]
    expected = storage(model, nm={name: (2, 4) for name in variant["nm_layers"]})["size_bytes"]
    assert variant["size_bytes"] == expected < runs["none"][0]["size_bytes"]
    by_hand = sum(get_module(model, n).weight.numel() // 4 * (2 * 4 * 8 + 2 * 2) // 8 for n in variant["nm_layers"])
    dense = sum(p.numel() for p in model.parameters()) - sum(get_module(model, n).weight.numel()
                                                              for n in variant["nm_layers"])
    assert variant["size_bytes"] == by_hand + 4 * dense


def test_on_cpu_the_point_says_the_model_ran_dense(runs):
    base, variant = runs["all"]
    assert variant["backend"] == "fp32 dense (2:4 mask, no sparse kernel on CPU) cpu"
    assert variant["sparse_kernel"].startswith("none: no sparse kernel on CPU")
    assert "cuda_sparse_ms_b32" not in variant and variant["macs"] == base["macs"]  # zeros are still multiplied


def test_the_sparse_kernel_branch_is_taken_only_for_2_4_on_cuda(monkeypatch):
    model = nn.Sequential(nn.Linear(64, 64))
    masks = {"0": nm_mask(model[0].weight, 2, 4)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sparse_kernel_timing(model, masks, 2, 4, torch.randn(32, 64))["sparse_kernel"].startswith(
        "none: no sparse kernel on CPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # even with a GPU, torch runs 2:4 only
    assert "2:4 only, not 1:4" in sparse_kernel_timing(model, masks, 1, 4, torch.randn(32, 64))["sparse_kernel"]


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="n must be below m .* got n=4, m=4"):
        NMConfig(checkpoint="x", n=4, m=4)
    with pytest.raises(ConfigError, match="m must be one of 4, 8, 16; got 6"):
        NMConfig(checkpoint="x", m=6)
    with pytest.raises(ConfigError, match=r"n must be in \[1, 15\], got 0"):
        NMConfig(checkpoint="x", n=0)
    cfg = NMConfig(checkpoint="x", n=1, m=8)
    assert NMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg and cfg.finetune.mode == "all"


def test_layers_that_cannot_hold_the_pattern_are_named_and_a_model_with_none_is_refused(digits_checkpoint,
                                                                                           monkeypatch):
    layers = [("first", nn.Conv2d(3, 8, 3)), ("dw", nn.Conv2d(8, 8, 3, groups=8)), ("pw", nn.Conv2d(8, 16, 1)),
              ("fc", nn.Linear(12, 10))]
    fit, skipped = split_layers(layers, 8)
    assert [n for n, _ in fit] == ["pw"]
    assert skipped == {"first": "3 input channels, not a multiple of m=8",
                       "dw": "a depthwise conv: 1 input channel per group, not a multiple of m=8",
                       "fc": "12 input channels, not a multiple of m=8"}
    monkeypatch.setattr(nm_module, "why_not_nm", lambda module, m: "does not fit")
    with pytest.raises(ConfigError, match="no layer can hold 2:4 sparsity"):
        run_task("prune.nm", {"checkpoint": digits_checkpoint, "latency": False, "save": False}, RunContext())


def test_keep_first_last_leaves_the_classifier_dense(digits_checkpoint):
    _, variant = [p.to_dict() for p in run_task(
        "prune.nm", {"checkpoint": digits_checkpoint, "latency": False, "save": False, "keep_first_last": True,
                     "finetune": {"mode": "none"}}, RunContext())]
    assert variant["nm_layers"] == ["features.1.0.0", "features.1.1.0", "features.2.0.0"]
    assert variant["nm_skipped"] == {} and "fc" not in variant["layer_sparsity"]


def test_the_cli_runs_nm_and_saves_a_checkpoint_that_holds_the_pattern(digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "nm"
    code = main(["prune", "--checkpoint", digits_checkpoint, "--method", "nm", "--n", "1", "--m", "4",
                 "--epochs", "1", "--out", str(out), "--no-latency", "--json"])
    assert code == 0
    base, variant = json.loads(capsys.readouterr().out)
    assert (variant["method"], variant["level"], variant["nm_pattern"]) == ("nm", 0.75, "1:4")
    assert variant["artifact"] == str(out / "nm-1-4") and variant["params"]["finetune"]["mode"] == "all"
    model = load_checkpoint(variant["artifact"])[0]
    for name in variant["nm_layers"]:
        assert (nonzeros_per_group(get_module(model, name).weight.detach(), 4) == 1).all(), name
    assert main(["prune", "--checkpoint", digits_checkpoint, "--method", "nm", "--n", "4", "--no-save"]) == 2
    assert capsys.readouterr().err.strip() == "error: n must be below m (n of every m weights are kept), got n=4, m=4"
