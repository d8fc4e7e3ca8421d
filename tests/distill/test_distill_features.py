"""Feature hooks by module path, stage pairing, adapters and the frozen teacher's cache."""

from __future__ import annotations

import pytest
import torch

from engine.core.errors import ConfigError
from engine.methods.distill.adapters import FeatureAdapter
from engine.methods.distill.base import FrozenTeacher
from engine.methods.distill.features import FeatureHooks, feature_shapes, pair_layers
from engine.model.train import Batch
from engine.model.zoo import MODELS, build_model


def test_hooks_capture_a_stage_output_and_a_classifier_input():
    torch.manual_seed(0)
    model = build_model("cnn_s", 10, 1, 28).eval()
    x = torch.randn(3, 1, 28, 28)
    outs = FeatureHooks(model, ["features.1"])
    ins = FeatureHooks(model, ["fc"], of="input")
    with torch.no_grad():
        model(x)
        stage = model.features[1](model.features[0](x))
        pooled = torch.flatten(model.pool(model.features(x)), 1)
    (got_stage,) = outs.take()
    (got_pooled,) = ins.take()
    torch.testing.assert_close(got_stage, stage)
    torch.testing.assert_close(got_pooled, pooled)
    outs.remove()
    with torch.no_grad():
        model(x)
    with pytest.raises(Exception, match="did not run"):
        outs.take()


def test_a_layer_that_does_not_exist_is_named_in_the_error():
    model = build_model("cnn_s", 10, 1, 28)
    with pytest.raises(ConfigError, match="layer 'features.7' does not exist"):
        FeatureHooks(model, ["features.7"])


def test_shapes_of_the_default_pair_match_the_zoo():
    s = build_model("cnn_s", 10, 1, 28)
    t = build_model("cnn_l", 10, 1, 28)
    pairs = pair_layers(MODELS.get("cnn_s"), MODELS.get("cnn_l"))
    assert pairs == [("features.0", "features.0"), ("features.1", "features.1"), ("features.2", "features.2")]
    x = torch.zeros(2, 1, 28, 28)
    assert feature_shapes(s, [p for p, _ in pairs], x) == [(24, 14, 14), (64, 7, 7), (96, 7, 7)]
    assert feature_shapes(t, [p for _, p in pairs], x) == [(32, 14, 14), (128, 7, 7), (160, 7, 7)]
    assert s.training  # probing leaves the mode as it was


def test_stages_of_different_depth_pair_from_the_deepest_end():
    r18, r20 = MODELS.get("resnet18"), MODELS.get("resnet20")
    assert pair_layers(r20, r18) == [("layer1", "layer2"), ("layer2", "layer3"), ("layer3", "layer4")]
    assert pair_layers(r20, r18, default="last") == [("layer3", "layer4")]
    assert pair_layers(r20, r18, default="middle") == [("layer2", "layer3")]
    assert pair_layers(r20, r18, ("layer1",), ("layer4",), default="last") == [("layer1", "layer4")]
    with pytest.raises(ConfigError, match="names 2 layers but teacher_layers names 1"):
        pair_layers(r20, r18, ("layer1", "layer2"), ("layer4",))
    with pytest.raises(ConfigError, match="other model has only 3 stages"):
        pair_layers(r18, r20, ("layer1", "layer2", "layer3", "layer4"))


def test_adapters_map_student_shapes_onto_teacher_shapes():
    conv = FeatureAdapter((24, 14, 14), (160, 7, 7))
    assert conv(torch.randn(2, 24, 14, 14)).shape == (2, 160, 7, 7)
    up = FeatureAdapter((8, 4, 4), (16, 8, 8))
    assert up(torch.randn(2, 8, 4, 4)).shape == (2, 16, 8, 8)
    vec = FeatureAdapter((96,), (160,))
    assert vec(torch.randn(4, 96)).shape == (4, 160)
    with pytest.raises(ConfigError, match="both give maps"):
        FeatureAdapter((96,), (160, 7, 7), "fc", "features.2")


def test_cached_teacher_outputs_equal_a_fresh_forward(mnist5k):
    torch.manual_seed(0)
    teacher = build_model("cnn_l", 10, 1, 28)
    train = mnist5k.train.subset(torch.arange(300))
    cached = FrozenTeacher(teacher, train, torch.device("cpu"), paths=["features.1"], cache=True)
    assert cached.cached and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    idx = torch.tensor([5, 0, 299, 17])
    batch = Batch(train.tensors()[0][idx], train.y[idx], idx, 0)
    logits, (feat,) = cached.batch(batch)
    fresh_logits, (fresh_feat,) = cached(batch.x)
    torch.testing.assert_close(logits, fresh_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feat, fresh_feat, rtol=1e-4, atol=1e-5)
    uncached = FrozenTeacher(teacher, train, torch.device("cpu"), cache=False)
    assert not uncached.cached
