"""Structured pruning: channels really go, across the whole zoo, and pruned checkpoints reload."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.core.context import RunContext
from engine.core.errors import ConfigError, UserError
from engine.deploy.measure import count_macs, storage
from engine.methods.prune.channels import prune_channels
from engine.methods.prune.importance import FilterNorm, channel_importance
from engine.methods.tasks import run_task
from engine.model.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from engine.model.zoo import MODELS, build_model


def meta_for(arch: str, in_channels: int, size: int) -> CheckpointMeta:
    return CheckpointMeta(arch=arch, num_classes=10, in_channels=in_channels, image_size=size, dataset="none",
                          class_names=[str(i) for i in range(10)], layer_shapes="shape")


@pytest.mark.parametrize("arch", MODELS.names())
def test_every_zoo_architecture_prunes_30_percent_and_reloads_from_shapes(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(arch, 10, 1, 16).eval()
    x = torch.randn(2, 1, 16, 16)
    macs, params = count_macs(model, x[:1]), storage(model)["params_total"]
    prune_channels(model, x[:1], ratio=0.3, keep=(MODELS.get(arch).classifier,), arch=arch)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 10)
    assert count_macs(model, x[:1]) < 0.8 * macs
    assert storage(model)["params_total"] < 0.8 * params
    save_checkpoint(tmp_path, model, meta_for(arch, 1, 16))
    reloaded, _ = load_checkpoint(tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(x), out)


def test_ratio_that_would_remove_every_channel_is_refused():
    model = build_model("cnn_s", 10, 1, 28)
    with pytest.raises(ConfigError, match=r"would remove every channel of layer 'features.0.0.0' \(24 channels\)"):
        prune_channels(model, torch.randn(1, 1, 28, 28), layer_ratios={"features.0.0.0": 0.99}, keep=("fc",))
    with pytest.raises(ConfigError, match=r"ratio must be in \[0, 1\), got 1.0"):
        prune_channels(model, torch.randn(1, 1, 28, 28), ratio=1.0, keep=("fc",))


class DictOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return {"logits": "not a tensor"}


class HardCodedReshape(nn.Module):
    """Torch-Pruning cannot see that `8` in the reshape is a channel count."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 2)

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return self.fc(y.reshape(y.shape[0], 8, -1).mean(-1))


def test_a_model_torch_pruning_cannot_trace_gets_a_clear_error():
    x = torch.randn(1, 1, 12, 12)
    with pytest.raises(UserError, match="Torch-Pruning cannot trace"):
        prune_channels(DictOutput(), x, ratio=0.5, keep=("fc",))
    with pytest.raises(UserError, match="no longer runs.*could not trace"):
        prune_channels(HardCodedReshape(), x, ratio=0.5, keep=("fc",))


def test_bn_importance_needs_batchnorm_layers():
    model = build_model("squeezenet1_1", 10, 1, 16)
    with pytest.raises(ConfigError, match="no BatchNorm layers; choose importance l1 or l2"):
        prune_channels(model, torch.randn(1, 1, 16, 16), importance="bn", ratio=0.3, keep=("classifier.1",),
                       arch="squeezenet1_1")


def small_net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        for i in range(4):  # filter i has norm growing with i; BN scale shrinking with i
            net[0].weight[i].fill_(0.1 * (i + 1))
            net[1].weight[i] = 1.0 / (i + 1)
    return net.eval()


@pytest.mark.parametrize("importance,kept_filters", [("l1", (2, 3)), ("l2", (2, 3)), ("bn", (0, 1))])
def test_importance_decides_which_channels_stay(importance, kept_filters):
    net = small_net()
    expected = torch.stack([net[0].weight.detach()[i] for i in kept_filters])
    prune_channels(net, torch.randn(1, 1, 8, 8), importance=importance, layer_ratios={"0": 0.5}, keep=("6",))
    assert net[0].out_channels == 2
    assert torch.equal(net[0].weight.detach(), expected)


def test_filter_norm_is_the_lp_norm_of_each_filter():
    import torch_pruning as tp

    net = small_net()
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, 1, 8, 8))
    group = dg.get_pruning_group(net[0], tp.prune_conv_out_channels, idxs=list(range(4)))
    l1 = FilterNorm(p=1)(group)
    assert torch.allclose(l1, torch.tensor([0.1, 0.2, 0.3, 0.4]) * 9)
    assert isinstance(channel_importance("bn"), tp.importance.BNScaleImportance)


def test_a_per_layer_ratio_prunes_only_that_layer():
    model = build_model("cnn_l", 10, 1, 28).eval()
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    prune_channels(model, torch.randn(1, 1, 28, 28), layer_ratios={"features.1.0.0": 0.5}, keep=("fc",))
    after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert after["features.1.0.0"] == before["features.1.0.0"] // 2
    assert {n: c for n, c in after.items() if n != "features.1.0.0"} == \
        {n: c for n, c in before.items() if n != "features.1.0.0"}


def test_structured_sweep_makes_the_model_smaller_and_saves_checkpoints_that_reload_from_shapes(
        prune, digits_checkpoint, tmp_path):
    dense, half = prune("structured", ratios=[0.0, 0.5], latency=True, out=str(tmp_path / "run"))
    assert (dense["level"], half["level"]) == (0.0, 0.5) and dense["level_name"] == "channel_ratio"
    assert (dense["stage"], half["stage"]) == ("baseline", "variant")
    assert half["macs"] < 0.35 * dense["macs"]  # about (1 - 0.5)^2 of the conv MACs
    assert half["params_total"] < 0.35 * dense["params_total"]
    assert half["size_bytes"] < dense["size_bytes"] and half["channels_kept"] == pytest.approx(0.5, abs=0.02)
    assert half["latency_ms_b32"] is not None and dense["latency_ms_b32"] is not None
    assert "different, smaller model" in half["latency_note"]
    assert half["accuracy_std"] == 0.0 and half["deterministic"]
    assert dense["artifact"] == digits_checkpoint  # nothing removed, nothing copied
    assert half["artifact"] == str(tmp_path / "run" / "channel_ratio-0.500")
    model, meta = load_checkpoint(half["artifact"])
    assert meta.layer_shapes == "shape"
    assert (meta.lineage[-1]["method"], meta.lineage[-1]["level"]) == ("structured", 0.5)
    assert run_task("measure", {"checkpoint": half["artifact"], "latency": False},
                    RunContext())[0].accuracy == half["accuracy"]


def test_layer_ratios_alone_make_one_pruned_variant(prune):
    (point,) = prune("structured", layer_ratios={"features.1.0.0": 0.5})
    assert (point["stage"], point["level"]) == ("variant", 0.0)  # level 0 elsewhere, but that layer lost channels
    assert point["channels_kept"] < 1.0


def test_structured_sweep_refuses_a_bad_ratio_before_running_any_level(prune):
    ctx = RunContext()
    with pytest.raises(ConfigError, match="would remove every channel"):
        prune("structured", ctx, ratios=[0.1, 0.99])
    assert ctx.points == []
