"""Accuracy-aware int8 (`ptq_int8 --max-drop`, INC's accuracy criterion, NNCF's quantize_with_accuracy_control):
the pure search, and a real run on digits with one layer sabotaged for int8, whose saved checkpoint reloads."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from engine.core.errors import ConfigError
from engine.deploy.formats import load_variant
from engine.deploy.int8 import INT8_BACKENDS, unfused
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant import PTQInt8Config, quantize
from engine.methods.quant.accuracy_aware import (
    drop_points,
    keep_float_until,
    normalized_mse,
    rank_layers,
    ranking_subset,
)
from engine.methods.quant.common import Output
from engine.methods.tasks import open_checkpoint
from engine.model.data import calibration_batches
from engine.model.train import scores

SABOTAGED = "features.1.0.0"  # cnn_s's second conv: its int8 weights are made useless below

# ---------------------------------------------------------------- the pure search


def test_keep_float_until_stops_as_soon_as_within():
    drops = {(): 5.0, ("a",): 3.0, ("a", "b"): 0.4, ("a", "b", "c"): 0.0}
    calls = []

    def drop_fn(kept):
        calls.append(tuple(kept))
        return drops[tuple(kept)]

    s = keep_float_until(drop_fn, ["a", "b", "c"], max_drop=0.5)
    assert (s.kept, s.drop, s.tries, s.met) == (["a", "b"], 0.4, 3, True)
    assert calls == [(), ("a",), ("a", "b")]  # c is never tried
    s = keep_float_until(drop_fn, ["a", "b", "c"], max_drop=0.5, start_drop=5.0)
    assert s.tries == 2 and s.kept == ["a", "b"]
    s = keep_float_until(drop_fn, ["a", "b", "c"], max_drop=5.0)
    assert (s.kept, s.tries, s.met) == ([], 1, True)


def test_keep_float_until_all_float_when_impossible():
    s = keep_float_until(lambda kept: 2.0 - 0.1 * len(kept), ["a", "b", "c"], max_drop=0.0)
    assert s.kept == ["a", "b", "c"] and not s.met and s.drop == pytest.approx(1.7) and s.tries == 4


def test_a_drop_of_exactly_max_drop_is_within():
    # one item of 500 is 0.2 points; from accuracies in float it came out 0.20000000000000018 and failed 0.2
    assert drop_points(485, 484, 500) <= 0.2 and drop_points(485, 483, 500) > 0.2
    assert 100 * (485 / 500 - 484 / 500) > 0.2


def test_ranking_is_logits_based():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(50, 10, generator=g)
    approx = ref.clone()
    approx[7] += 3  # the farthest item
    approx[3] += 1
    assert ranking_subset(ref, approx, size=2).tolist() == [7, 3]
    assert normalized_mse(ref, approx)[7] == pytest.approx(float(90 / (ref[7].double() ** 2).sum()))
    noise = {"a": 0.5, "b": 0.01, "c": 0.2}  # how far each layer-float model stays from the reference
    ranked = rank_layers(ref, lambda n: ref + noise[n], ["a", "b", "c"])
    assert [n for n, _ in ranked] == ["b", "c", "a"]  # lowest error first: keeping b float helps most
    assert ranked[0][1] == pytest.approx(float(normalized_mse(ref, ref + 0.01).mean()))


# ---------------------------------------------------------------- a real model


@pytest.fixture(scope="module")
def sabotaged(digits_checkpoint):
    """The digits cnn_s with its first conv's channel 0 switched off (ReLU of a very negative bias) and a huge
    weight on that dead input in every filter of the second conv: the float model does not see it, but per
    channel int8 weights get a scale so large that every other weight of that conv rounds to 0."""
    model, meta, data = open_checkpoint(digits_checkpoint)
    with torch.no_grad():
        model.features[0][0][1].bias[0] = -1e4
        model.features[1][0][0].weight[:, 0] = 1e3
    return model.eval(), meta, data


def _config(ckpt: str, **kw) -> PTQInt8Config:
    return PTQInt8Config(checkpoint=ckpt, calib_batches=2, latency=False, **kw)


def test_max_drop_keeps_the_sabotaged_layer_float_and_reloads(sabotaged, digits_checkpoint, ctx, tmp_path):
    model, meta, data = sabotaged
    out = tmp_path / "run"
    base, point = quantize(model, data, _config(digits_checkpoint, max_drop=0.01), ctx,
                           Output(out, meta, digits_checkpoint))
    kept = point.extra["keep_float"]
    assert kept[0] == SABOTAGED  # ranked most sensitive
    assert set(kept) <= set(point.extra["float_layers"])
    assert point.extra["val_drop_all_int8"] > 20  # the sabotage works: all-int8 is far off
    # the converted model really holds those layers in float: rebuild it as the method did and check the types
    folded = fold_batchnorm(model)
    batches = calibration_batches(data, 2, 32, 0)
    int8 = INT8_BACKENDS.get("fx").static(folded, batches, "x86", keep_float=kept)
    import torch.ao.nn.quantized as nnq

    for name in kept:
        layer = int8.runner.module.get_submodule(name)
        assert not isinstance(layer, (nnq.Conv2d, nnq.Linear))
        assert type(unfused(layer)) in (nn.Conv2d, nn.Linear)
    assert set(int8.layer_groups).isdisjoint(kept)
    # the recorded val drop is the drop of that model, computed here independently
    x, y = data.val.tensors()
    with torch.inference_mode():
        drop = 100 * (scores(folded(x), y)["accuracy"] - scores(int8.runner(x), y)["accuracy"])
    assert point.extra["val_drop"] == pytest.approx(drop, abs=1e-4)  # one item is 100 / len(y) points
    assert drop <= 1.0 or not point.extra["max_drop_met"]
    messages = " ".join(m for _, m in ctx.events)
    assert SABOTAGED in messages and "conversions" in messages
    # the checkpoint reloads with the same float layers and the same test accuracy
    reloaded, form, saved = load_variant(out)
    assert saved.quant["keep_float"] == kept
    assert set(form.quant_groups).isdisjoint(kept)
    xt, yt = data.test.tensors()
    with torch.inference_mode():
        assert scores(form.runner(xt), yt)["accuracy"] == pytest.approx(point.measurement.accuracy)
    assert torch.equal(reloaded.get_submodule(SABOTAGED).weight, folded.get_submodule(SABOTAGED).weight)


def test_zero_drop_is_met_or_every_layer_float(sabotaged, digits_checkpoint, ctx):
    model, _, data = sabotaged
    point = quantize(model, data, _config(digits_checkpoint, max_drop=0.0), ctx)[1]
    e = point.extra
    if e["max_drop_met"]:
        assert e["val_drop"] <= 0.0
    else:
        assert set(e["keep_float"]) == {"features.0.0.0", "features.1.0.0", "features.1.1.0", "features.2.0.0", "fc"}
        assert any(level == "warning" and "not reached" in m for level, m in ctx.events)
    assert e["conversions"] >= 1 + 5 + len(e["keep_float"]) - 1


def test_max_drop_none_changes_nothing(sabotaged, digits_checkpoint, ctx):
    model, _, data = sabotaged
    plain = quantize(model, data, _config(digits_checkpoint), ctx)[1]
    loose = quantize(model, data, _config(digits_checkpoint, max_drop=1.0), ctx)[1]
    assert "keep_float" not in plain.extra and plain.extra["float_layers"] == []
    assert loose.extra["keep_float"] == [] and loose.extra["conversions"] == 1
    assert loose.measurement.accuracy == plain.measurement.accuracy


def test_latency_against_all_int8(sabotaged, digits_checkpoint, ctx, latency_spy):
    model, _, data = sabotaged
    point = PTQInt8Config(checkpoint=digits_checkpoint, calib_batches=2, max_drop=0.01)
    p = quantize(model, data, point, ctx)[1]
    assert p.measurement.latency_ms_b1 > 0
    assert p.extra["speedup_vs_all_int8_b1"] > 0 and p.extra["speedup_vs_all_int8_b32"] > 0
    assert len(latency_spy) == 3  # fp32, the final model, the final model beside the all-int8 one


def test_unknown_keep_float_is_refused(sabotaged):
    model, _, data = sabotaged
    folded = fold_batchnorm(copy.deepcopy(model))
    with pytest.raises(ConfigError, match="nope.*features.0.0.0"):
        INT8_BACKENDS.get("fx").static(folded, calibration_batches(data, 1, 8, 0), "x86", keep_float=["nope"])


def test_max_drop_refuses_the_dynamic_fallback(digits_checkpoint):
    with pytest.raises(ConfigError, match="max_drop"):
        PTQInt8Config(checkpoint=digits_checkpoint, max_drop=0.005, fallback="dynamic_int8")
    with pytest.raises(ConfigError):
        PTQInt8Config(checkpoint=digits_checkpoint, max_drop=-1)


def test_a_search_runs_its_trials_in_the_backends_cheaper_form_and_converts_the_final_once(sabotaged,
                                                                                             digits_checkpoint, ctx):
    """PT2E compiles each conversion (~10 s): the search's trials run uncompiled (its search_form) and only the
    final model is converted in the chosen form; its drop is measured again on that form."""
    from engine.methods.quant.ptq_int8 import within_max_drop

    fx = INT8_BACKENDS.get("fx")

    class Costly(type(fx)):  # stands for a compiling backend: counts its own conversions
        name = "costly"
        calls: list = []

        def static(self, model, calibration, engine, cancel=None, keep_float=()):
            self.calls.append(tuple(keep_float))
            return fx.static(model, calibration, engine, cancel, keep_float)

        def search_form(self):
            return fx

    model, _, data = sabotaged
    folded = fold_batchnorm(copy.deepcopy(model))
    batches = calibration_batches(data, 2, 32, 0)
    costly = Costly()
    final, extra = within_max_drop(folded, data, batches, costly, _config(digits_checkpoint, max_drop=0.01), ctx)
    assert costly.calls == [tuple(extra["keep_float"])]  # one conversion in the chosen form: the final model
    assert extra["keep_float"][0] == SABOTAGED and extra["conversions"] >= 3
    x, y = data.val.tensors()
    with torch.inference_mode():
        drop = 100 * (scores(folded(x), y)["accuracy"] - scores(final.runner(x), y)["accuracy"])
    assert extra["val_drop"] == pytest.approx(drop, abs=1e-4) and extra["max_drop_met"] == (drop <= 1.0 + 1e-9)
    assert any("trial conversions ran as fx" in m for _, m in ctx.events)
    pt2e = INT8_BACKENDS.get("pt2e").search_form()
    assert pt2e.name == "pt2e_eager" and not pt2e.compile and fx.search_form() is fx
