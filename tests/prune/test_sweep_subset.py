"""Sweeps that scale: levels scored on a seeded test subset with a Wilson interval, the reported levels (first,
unpruned, last) on the whole split, on the device asked for (engine/methods/prune/sweep.py)."""

from __future__ import annotations

import pytest
import torch

from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.intervals import wilson
from engine.methods.prune import sweep as sweep_module
from engine.methods.tasks import open_checkpoint, run_task
from engine.model import evaluation
from engine.model.evaluation import choose_device, eval_indices
from engine.model.train import scores

LEVELS = [0.0, 0.5, 0.8, 0.95]
SUBSET = 100


def sweep(checkpoint: str, **settings) -> list[dict]:
    cfg = {"checkpoint": checkpoint, "latency": False, "save": "out" in settings, "sparsities": LEVELS, **settings}
    return [p.to_dict() for p in run_task("prune.global_unstructured", cfg, RunContext())]


@pytest.fixture(scope="module")
def both(digits_checkpoint, tmp_path_factory) -> tuple[list[dict], list[dict]]:
    """The same one-shot sweep on the whole split and on a 100-image subset (saved, to re-evaluate by hand), with a
    breakpoint finder that finds none, so only the first, unpruned and last levels are measured on the whole split
    (breakpoints: test_subset_breakpoint.py)."""
    out = str(tmp_path_factory.mktemp("sweep-subset") / "run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_module, "_BREAKPOINT_FINDERS", [lambda points: []])
        return sweep(digits_checkpoint), sweep(digits_checkpoint, eval_samples=SUBSET, out=out)


def test_a_subset_level_scores_exactly_the_seeded_indices(both, digits_checkpoint):
    _, subset = both
    point = subset[1]
    assert point["eval_subset"] is True and point["eval_samples"] == SUBSET
    model, _, data = open_checkpoint(point["artifact"])
    x, y = data.test.tensors()
    idx = eval_indices(len(y), SUBSET, 0)  # the sweep's seed is the fine-tuning seed, 0 by default
    with torch.inference_mode():
        manual = scores(model.eval()(x[idx]), y[idx])["accuracy"]
    assert point["accuracy"] == pytest.approx(manual, abs=1e-9)
    lo, hi = wilson(round(manual * SUBSET), SUBSET)
    assert (point["accuracy_lo"], point["accuracy_hi"]) == pytest.approx((lo, hi))
    assert point["accuracy_lo"] < point["accuracy"] < point["accuracy_hi"]
    assert "subset" in point["eval_note"] and point["test_samples"] == len(y) > SUBSET


def test_reported_levels_are_measured_on_the_whole_split(both):
    whole, subset = both
    reported = [0, len(LEVELS) - 1]  # the unpruned first level and the last level asked for
    for i, (w, s) in enumerate(zip(whole, subset)):
        if i in reported:
            assert s["eval_subset"] is False and s["eval_samples"] == s["test_samples"]
            assert s["accuracy"] == w["accuracy"] and s["top5"] == w["top5"]  # the whole split's numbers
            assert 0 <= s["subset_accuracy"] <= 1
        else:
            assert s["eval_subset"] is True and "subset_accuracy" not in s
            assert s["accuracy_lo"] <= w["accuracy"] + 0.15 and w["accuracy"] - 0.15 <= s["accuracy_hi"]
        assert s["sparsity"] == w["sparsity"]  # the same model at every level, only the images differ
    assert all("eval_samples" not in w and w["eval_device"] == s["eval_device"] for w, s in zip(whole, subset))


def test_a_subset_as_large_as_the_split_is_the_whole_split_and_says_so(both, digits_checkpoint):
    whole, _ = both
    points = sweep(digits_checkpoint, eval_samples=100_000, sparsities=[0.5])
    (p,) = points
    assert p["eval_subset"] is False and p["eval_samples"] == p["test_samples"]
    assert "whole split" in p["eval_note"] and "100000" in p["eval_note"]
    assert p["accuracy"] == whole[1]["accuracy"]


@pytest.mark.parametrize(("settings", "words"), [
    ({"eval_samples": -5}, "eval_samples"),
    ({"eval_samples": 2.5}, "eval_samples"),
    ({"device": "gpu"}, "device"),
])
def test_bad_evaluation_settings_are_refused_by_name(digits_checkpoint, settings, words):
    with pytest.raises(ConfigError, match=words):
        sweep(digits_checkpoint, **settings)


def test_auto_device_is_the_cpu_without_a_gpu_and_cuda_is_refused_there(monkeypatch):
    monkeypatch.setattr(evaluation.torch.cuda, "is_available", lambda: False)
    assert choose_device("auto").type == "cpu" and choose_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="cuda"):
        choose_device("cuda")
    monkeypatch.setattr(evaluation.torch.cuda, "is_available", lambda: True)
    assert choose_device("auto").type == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: auto picks it")
def test_a_sweep_without_a_gpu_says_it_ran_on_the_cpu(both):
    _, subset = both
    assert {p["eval_device"] for p in subset} == {"cpu"}


def test_a_mixed_precision_step_states_its_search_subset_and_interval(digits_checkpoint):
    cfg = {"checkpoint": digits_checkpoint, "latency": False, "save": False, "bits": [8, 4], "val_samples": 60,
           "measure_every": 100}
    points = [p.to_dict() for p in run_task("quantize.mixed", cfg, RunContext())]
    for p in points:
        assert p["val_samples"] == 60
        assert (p["val_accuracy_lo"], p["val_accuracy_hi"]) == pytest.approx(wilson(round(p["val_accuracy"] * 60), 60))
        assert p["val_accuracy_lo"] < p["val_accuracy"] <= p["val_accuracy_hi"]  # a perfect score: hi is 1
