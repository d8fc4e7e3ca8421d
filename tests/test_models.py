"""Every architecture builds and runs at its dataset's shapes; stage and classifier paths exist."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.core.errors import ConfigError
from engine.model.zoo import MODELS, build_model, count_params, get_module


@pytest.mark.parametrize("arch", MODELS.names())
@pytest.mark.parametrize("in_channels, size", [(1, 28), (3, 32)])
def test_architecture_runs_forward_at_dataset_shape(arch, in_channels, size):
    model = build_model(arch, 10, in_channels, size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 10)
    spec = MODELS.get(arch)
    for stage in spec.stages:
        get_module(model, stage)
    assert isinstance(get_module(model, spec.classifier), nn.Linear | nn.Conv2d)


def test_small_cnns_have_teacher_and_student_sizes():
    assert 350_000 < count_params(build_model("cnn_l", 10, 1, 28)) < 450_000
    assert 80_000 < count_params(build_model("cnn_s", 10, 1, 28)) < 120_000


def test_small_inputs_keep_resolution_in_the_stem():
    m = build_model("resnet18", 10, 3, 32)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and isinstance(m.maxpool, nn.Identity)


def test_width_multiplier_scales_channels():
    assert count_params(build_model("cnn_s", 10, 1, 28, width=2.0)) > 3 * count_params(build_model("cnn_s", 10, 1, 28))


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="unknown architecture 'resnet9'"):
        build_model("resnet9", 10, 1, 28)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("cnn_s", 1, 1, 28)
    with pytest.raises(ConfigError, match="layer 'features.9' does not exist"):
        get_module(build_model("cnn_s", 10, 1, 28), "features.9")
