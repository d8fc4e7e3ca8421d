"""Cross-layer equalization and bias correction (Nagel et al. 2019): the float model's function is kept,
paired ranges become equal, bias correction brings each layer's mean output back to float, and the
options reach the methods, their points and a recipe."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.deploy import equalize as eq
from engine.deploy import qmaths as maths
from engine.deploy.formats import load_variant
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant import FakeQuantConfig, PTQInt8Config, quantize
from engine.methods.quant.equalize import EqualizeConfig
from engine.methods.tasks import open_checkpoint, run_task
from engine.model.checkpoint import load_checkpoint, read_meta
from engine.model.zoo import build_model


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics far from identity, so folding gives weights with very unequal channel ranges."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.exp(torch.randn(n, generator=g) * 2))
            m.weight.data.copy_(torch.exp(torch.randn(n, generator=g)))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


class ConvDepthwise(nn.Module):
    """conv -> ReLU -> depthwise conv -> ReLU -> conv -> ReLU -> max-pool -> conv, BatchNorm after each of the first
    three (as MobileNet's separable blocks), and a ReLU6 variant."""

    def __init__(self, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.c1, self.b1, self.a1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), act()
        self.dw, self.b2, self.a2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), act()
        self.pw, self.b3, self.a3 = nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(16, 4, 3)

    def forward(self, x):
        x = self.a1(self.b1(self.c1(x)))
        x = self.a2(self.b2(self.dw(x)))
        return self.head(self.pool(self.a3(self.b3(self.pw(x)))))


class Residual(nn.Module):
    def __init__(self, add: bool):
        super().__init__()
        self.add = add
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 1)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        z = torch.relu(self.c2(y))
        return self.c3(z + y if self.add else z)  # with add, c1's output also feeds the addition


def input_ranges(w: torch.Tensor, depthwise: bool) -> torch.Tensor:
    """max |w| of each input channel, written out per layout (independent of the module's own helper)."""
    return w.abs().amax(dim=(1, 2, 3)) if depthwise else w.abs().amax(dim=(0, 2, 3))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


X = torch.randn(16, 3, 12, 12, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- equalization


def test_equalization_keeps_the_outputs_of_a_conv_relu_depthwise_model():
    folded = fold_batchnorm(randomise_batchnorm(ConvDepthwise()))
    with torch.inference_mode():
        before = folded(X)
    result = eq.equalize(folded)
    assert [(p.first, p.second) for p in result.pairs] == [("c1", "dw"), ("dw", "pw"), ("pw", "head")]
    assert result.converged
    with torch.inference_mode():
        assert relative_error(folded(X), before) < 1e-5


def test_paired_ranges_are_equal_after_equalization_and_were_not_before():
    folded = fold_batchnorm(randomise_batchnorm(ConvDepthwise()))

    def mismatch(model):
        c1, dw, pw, head = (model.get_submodule(n).weight.detach() for n in ("c1", "dw", "pw", "head"))
        pairs = [(c1.abs().amax(dim=(1, 2, 3)), input_ranges(dw, True)),
                 (dw.abs().amax(dim=(1, 2, 3)), input_ranges(pw, False)),
                 (pw.abs().amax(dim=(1, 2, 3)), input_ranges(head, False))]
        return max(float((r1 / r2).log().abs().max()) for r1, r2 in pairs)

    assert mismatch(folded) > 1.0  # some channel's ranges differ by more than e times
    eq.equalize(folded)
    assert mismatch(folded) < 1e-4


def test_a_layer_whose_output_also_feeds_a_residual_addition_is_not_paired():
    assert eq.equalization_pairs(Residual(add=True).eval()) == []
    assert [(p.first, p.second) for p in eq.equalization_pairs(Residual(add=False).eval())] == [("c1", "c2"),
                                                                                              ("c2", "c3")]


def test_relu6_ends_a_chain_unless_replaced_by_relu_as_in_the_paper():
    model = fold_batchnorm(randomise_batchnorm(ConvDepthwise(act=nn.ReLU6)))
    assert [(p.first, p.second) for p in eq.equalization_pairs(model, "keep")] == [("pw", "head")]
    # the reference: the same model with its ReLU6 made ReLU by hand
    as_relu = copy.deepcopy(model)
    as_relu.a1, as_relu.a2 = nn.ReLU(), nn.ReLU()
    with torch.inference_mode():
        expected = as_relu(X)
    result = eq.equalize(model, relu6="replace")
    assert result.replaced_relu6 == ["a1", "a2"] and isinstance(model.a1, nn.ReLU)
    assert len(result.pairs) == 3
    with torch.inference_mode():
        assert relative_error(model(X), expected) < 1e-5
    with pytest.raises(ConfigError, match="relu6 must be one of keep, replace"):
        eq.equalization_pairs(model, "clip")


@pytest.mark.parametrize("relu6", ["keep", "replace"])
def test_mobilenet_v2_at_a_small_width_computes_the_same_after_equalization(relu6):
    model = fold_batchnorm(randomise_batchnorm(build_model("mobilenet_v2", 10, 1, 28, 0.25)))
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    reference = copy.deepcopy(model)
    result = eq.equalize(model, relu6=relu6)
    for path in result.replaced_relu6:  # the reference gets the same ReLUs, by hand
        parent, _, leaf = path.rpartition(".")
        setattr(reference.get_submodule(parent), leaf, nn.ReLU())
    with torch.inference_mode():
        assert relative_error(model(x), reference(x)) < 1e-4
    if relu6 == "replace":  # every separable block's chain: expand -> depthwise -> project
        assert len(result.pairs) > 30 and len(result.replaced_relu6) > 30
        depthwise = [p for p in result.pairs if model.get_submodule(p.second).groups > 1]
        assert depthwise
        for p in depthwise:
            r1 = model.get_submodule(p.first).weight.detach().abs().amax(dim=(1, 2, 3))
            r2 = input_ranges(model.get_submodule(p.second).weight.detach(), True)
            assert torch.allclose(r1, r2, rtol=1e-3)
    else:
        assert result.replaced_relu6 == [] and all(p.relu6 == () for p in result.pairs)


# ---------------------------------------------------------------- bias correction


def layer_means(model, names, batches):
    """Mean output per channel of each named layer (written out here, not through the module under test)."""
    sums, counts = {}, {}

    def hook(name):
        def keep(_m, _a, out):
            sums[name] = sums.get(name, 0) + out.detach().double().sum(dim=(0, 2, 3))
            counts[name] = counts.get(name, 0) + out.shape[0] * out.shape[2] * out.shape[3]
        return keep

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    with torch.inference_mode():
        for x in batches:
            model(x)
    for h in handles:
        h.remove()
    return {n: sums[n] / counts[n] for n in names}


def test_bias_correction_brings_each_quantized_layers_mean_output_back_to_float():
    model = fold_batchnorm(randomise_batchnorm(ConvDepthwise()))
    batches = [torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(i)) + 0.5 for i in range(3)]
    names = ["c1", "dw", "pw", "head"]
    float_means = layer_means(model, names, batches)
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for n in names:
            w = quantized.get_submodule(n).weight
            w.copy_(maths.quantize_tensor(w, 3, per_channel=False))
    before = layer_means(quantized, names, batches)
    shifts = eq.correct_biases(quantized, eq.output_means(model, names, batches), batches)
    after = layer_means(quantized, names, batches)
    assert set(shifts) == set(names)
    for n in names:
        error_before = float((before[n] - float_means[n]).abs().max())
        error_after = float((after[n] - float_means[n]).abs().max())
        assert error_before > 1e-3, n  # 3-bit weights do shift the mean
        assert error_after < 1e-4 * max(1.0, float(float_means[n].abs().max())), n
        assert error_after < error_before / 100, n


# ---------------------------------------------------------------- the options on the methods


def test_the_options_round_trip_and_are_settings_not_roles():
    for cls in (FakeQuantConfig, PTQInt8Config):
        cfg = cls(checkpoint="x", equalize=True, bias_correction=True, relu6="replace")
        again = cls.from_dict(cfg.to_dict())
        assert (again.equalize, again.bias_correction, again.relu6) == (True, True, "replace")
        params = cfg.method_params()
        assert (params["equalize"], params["bias_correction"], params["relu6"]) == (True, True, "replace")
        assert cls().equalize is False and cls().bias_correction is False
    with pytest.raises(ConfigError, match="relu6"):
        FakeQuantConfig(relu6="clip")
    assert EqualizeConfig.from_dict(EqualizeConfig(relu6="replace").to_dict()).relu6 == "replace"


def skewed(model: nn.Module, seed: int = 0) -> nn.Module:
    """The folded model with each channel of every equalizable pair scaled by a factor in [1/50, 50] and the
    next layer scaled back: the same function, badly mismatched channel ranges."""
    model = fold_batchnorm(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in eq.equalization_pairs(model):
            first, second = model.get_submodule(p.first), model.get_submodule(p.second)
            s = torch.exp((torch.rand(first.out_channels, generator=g) * 2 - 1) * math.log(50))
            first.weight.mul_(s.view(-1, 1, 1, 1))
            first.bias.mul_(s)
            second.weight.div_(s.view(1, -1, 1, 1))
    return model


def test_per_tensor_4_bit_weights_are_more_accurate_with_equalization(digits_checkpoint):
    model, _, data = open_checkpoint(digits_checkpoint)
    model = skewed(model)
    settings = {"bits": (4,), "granularity": "per_tensor", "latency": False, "save": False}
    plain = quantize(model, data, FakeQuantConfig(**settings))[0]
    equalized = quantize(model, data, FakeQuantConfig(**settings, equalize=True))[0]
    float_acc = quantize(model, data, FakeQuantConfig(bits=(32,), latency=False, save=False))[0].measurement.accuracy
    assert equalized.params["equalize"] is True and plain.params["equalize"] is False
    assert plain.measurement.accuracy < float_acc - 0.05  # the skew really hurts per-tensor 4 bits
    assert equalized.measurement.accuracy > plain.measurement.accuracy + 0.05


def test_fake_with_bias_correction_saves_corrected_biases_that_reload_exactly(digits_checkpoint, tmp_path):
    out = str(tmp_path / "fake")
    points = run_task("quantize.fake", {"checkpoint": digits_checkpoint, "bits": [3, 32], "latency": False,
                                        "out": out, "equalize": True, "bias_correction": True,
                                        "calib_batches": 2}, RunContext())
    three = points[0]
    assert three.params["equalize"] is True and three.params["bias_correction"] is True
    model, form, _ = load_variant(three.artifact)
    folded, _, data = open_checkpoint(digits_checkpoint)
    folded = fold_batchnorm(folded)
    # the saved biases are not the float ones: they were corrected for the 3-bit weights
    changed = [n for n in eq.biased_layers(model)
               if not torch.equal(model.get_submodule(n).bias, folded.get_submodule(n).bias)]
    assert changed
    again = run_task("measure", {"checkpoint": three.artifact, "latency": False}, RunContext())[0]
    assert again.measurement.accuracy == three.measurement.accuracy


def test_ptq_int8_with_equalization_and_bias_correction_records_them_and_reloads(digits_checkpoint, tmp_path):
    from tests.quant.conftest import RecordingContext

    ctx = RecordingContext()
    out = str(tmp_path / "int8")
    fp32, int8 = run_task("quantize.ptq_int8", {"checkpoint": digits_checkpoint, "calib_batches": 2, "latency": False,
                                                "out": out, "equalize": True, "bias_correction": True}, ctx)
    assert int8.params["equalize"] is True and int8.params["bias_correction"] is True
    messages = " ".join(m for _, m in ctx.events)
    assert "cross-layer equalization" in messages and "bias correction" in messages
    assert not [m for level, m in ctx.events if level == "warning" and "other int8 weights" in m]
    assert abs(int8.measurement.accuracy - fp32.measurement.accuracy) < 0.05
    again = run_task("measure", {"checkpoint": out, "latency": False}, RunContext())[0]
    assert abs(again.measurement.accuracy - int8.measurement.accuracy) <= 1 / 360


def test_replacing_relu6_in_a_run_that_saves_is_refused(tmp_path):
    from engine.methods.quant.equalize import equalize_folded

    model = fold_batchnorm(randomise_batchnorm(ConvDepthwise(act=nn.ReLU6)))
    with pytest.raises(ConfigError, match="--no-save"):
        equalize_folded(model, "replace", RunContext(), saving=True)
    assert isinstance(model.a1, nn.ReLU6)  # refused before anything changed


# ---------------------------------------------------------------- the equalize method and a recipe


def test_the_equalize_method_saves_a_float_checkpoint_computing_the_same(digits_checkpoint, tmp_path):
    out = str(tmp_path / "eq")
    base, variant = run_task("quantize.equalize", {"checkpoint": digits_checkpoint, "latency": False, "out": out},
                             RunContext())
    assert (base.stage, variant.stage, variant.artifact) == ("baseline", "variant", out)
    assert variant.extra["equalized_pairs"] > 0
    assert abs(variant.measurement.accuracy - base.measurement.accuracy) <= 1 / 360
    meta = read_meta(out)
    assert meta.weights_format == "float" and [s["method"] for s in meta.lineage] == ["train", "equalize"]
    original, _ = load_checkpoint(digits_checkpoint)
    equalized, _ = load_checkpoint(out)
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert relative_error(equalized(x), original(x)) < 1e-4
    # the weights did change: the folded paired layers now have equal ranges
    folded = fold_batchnorm(equalized)
    for p in eq.equalization_pairs(folded):
        r1, r2 = eq.pair_ranges(folded, p)
        assert torch.allclose(r1, r2, rtol=1e-3)


def test_ptq_int8_starts_from_the_checkpoint_equalize_saved(digits_checkpoint, tmp_path):
    out = str(tmp_path / "eq")
    _, equalized = run_task("quantize.equalize", {"checkpoint": digits_checkpoint, "latency": False, "out": out},
                            RunContext())
    _, int8 = run_task("quantize.ptq_int8", {"checkpoint": out, "calib_batches": 2, "latency": False,
                                             "out": str(tmp_path / "int8"), "bias_correction": True}, RunContext())
    assert int8.input_checkpoint == equalized.artifact == out
    assert [s["method"] for s in read_meta(int8.artifact).lineage] == ["train", "equalize", "ptq_int8"]
    assert abs(int8.measurement.accuracy - equalized.measurement.accuracy) < 0.05


def test_a_recipe_runs_equalize_then_ptq_int8_on_the_equalized_checkpoint(digits_checkpoint, tmp_path):
    from engine.run.jobs import run_sync
    from engine.run.recipes import RECIPE_TASK, RecipeTask

    recipe = {"name": "cle-int8", "dataset": "digits", "out": str(tmp_path / "ckpt"),
              "model": {"checkpoint": digits_checkpoint},
              "stages": [{"name": "cle", "task": "quantize.equalize", "config": {"latency": False}},
                         {"name": "int8", "task": "quantize.ptq_int8",
                          "config": {"latency": False, "calib_batches": 2, "bias_correction": True}}]}
    points = run_sync(RECIPE_TASK, RecipeTask(recipe=recipe), str(tmp_path / "runs.duckdb"))
    equalized = next(p for p in points if p.extra["recipe_stage"] == "cle" and p.stage == "variant")
    int8 = next(p for p in points if p.extra["recipe_stage"] == "int8" and p.stage == "variant")
    assert int8.input_checkpoint == equalized.artifact
    assert read_meta(int8.artifact).weights_format == "int8"
    assert [s["method"] for s in read_meta(int8.artifact).lineage] == ["train", "equalize", "ptq_int8"]
    assert abs(int8.measurement.accuracy - equalized.measurement.accuracy) < 0.05


def test_bias_correction_in_one_pass_and_layer_by_layer_agree(monkeypatch):
    model = fold_batchnorm(randomise_batchnorm(ConvDepthwise()))
    batches = [torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(i)) + 0.5 for i in range(3)]
    reference = eq.output_means(model, eq.biased_layers(model), batches)
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for n in eq.biased_layers(quantized):
            w = quantized.get_submodule(n).weight
            w.copy_(maths.quantize_tensor(w, 3, per_channel=False))
    by_layer = copy.deepcopy(quantized)
    one_pass = eq.correct_biases(quantized, reference, batches)
    monkeypatch.setattr(eq, "SINGLE_PASS_IMAGES", 0)
    layered = eq.correct_biases(by_layer, reference, batches)
    assert list(one_pass) == list(layered) == ["c1", "dw", "pw", "head"]
    for n in one_pass:
        assert torch.allclose(one_pass[n], layered[n], atol=1e-5), n
