"""What-if engine: a slider position is exactly the model that pruning with the masks module and fake
quantization with the quant maths make; memoised positions come back as the same object; the `whatif`
task measures the variant on the whole test split and saves a checkpoint that reloads to it."""

from __future__ import annotations

import copy
import time

import pandas as pd
import pytest
import torch

from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.deploy import qmaths as maths
from engine.deploy.formats import load_variant
from engine.deploy.measure import measure, prunable_weights, storage
from engine.deploy.quantized import fold_batchnorm
from engine.methods import whatif as W
from engine.methods.prune.channels import prune_channels
from engine.methods.prune.masks import apply_masks, rank
from engine.methods.tasks import run_task
from engine.model.checkpoint import load_checkpoint, read_meta
from engine.model.train import scores
from pages.figures.whatif import whatif_figure

SAMPLES = 200


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("whatif") / "cnn_s")
    run_task("train", {"dataset": "digits", "model": "cnn_s", "out": out, "latency": False,
                       "train": {"epochs": 2, "seed": 0}}, RunContext())
    return out


@pytest.fixture(scope="module")
def engine(checkpoint) -> W.WhatIf:
    return W.WhatIf(checkpoint, eval_samples=SAMPLES, seed=0, latency=False)


def subset(checkpoint: str) -> tuple[torch.Tensor, torch.Tensor]:
    from engine.model.checkpoint import dataset_of

    x, y = dataset_of(read_meta(checkpoint)).test.tensors()
    idx = W.eval_indices(len(y), SAMPLES, 0)
    return x[idx], y[idx]


def independent(checkpoint: str, sparsity: float, mode: str, bits: int, granularity: str) -> torch.nn.Module:
    """The same variant made step by step with the pruning and quantization modules, not the engine."""
    model, meta = load_checkpoint(checkpoint)
    if mode == "unstructured":
        layers = prunable_weights(model)
        ranking = rank([n for n, _ in layers], [m.weight.detach().abs() for _, m in layers], "global")
        apply_masks(model, ranking.masks(sparsity))
    elif sparsity > 0:
        from engine.model.checkpoint import dataset_of

        example = dataset_of(meta).test.tensors()[0][:1]
        model = prune_channels(model, example, ratio=sparsity, keep=("fc",), arch=meta.arch)
    if bits < maths.FLOAT_BITS:
        model = fold_batchnorm(model)
        with torch.no_grad():
            for _, m in prunable_weights(model):
                m.weight.copy_(maths.quantize_tensor(m.weight, bits, symmetric=True,
                                                     per_channel=granularity == "per_channel"))
    return model.eval()


@pytest.mark.parametrize("position", [(0.6, "unstructured", 4, "per_channel"), (0.3, "unstructured", 32, "per_channel"),
                                      (0.8, "unstructured", 3, "per_tensor"), (0.2, "channels", 32, "per_channel"),
                                      (0.2, "channels", 5, "per_tensor")])
def test_a_position_is_the_masks_module_then_the_quant_maths_on_the_same_subset(engine, checkpoint, position):
    sparsity, mode, bits, granularity = position
    result = engine.evaluate(*position)
    model = independent(checkpoint, *position)
    x, y = subset(checkpoint)
    with torch.inference_mode():
        expected = scores(model(x), y)
    assert result.accuracy == expected["accuracy"]
    assert result.loss == pytest.approx(expected["loss"], rel=1e-5)
    groups = {n: maths.scale_groups(m.weight, bits, granularity == "per_channel") for n, m in prunable_weights(model)}
    assert result.size_bytes == storage(model, bits, groups)["size_bytes"]
    assert result.simulated == (bits < 32) and result.eval_samples == SAMPLES
    # the very weights agree, layer by layer
    mine = engine.variant(*position).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(mine[key], value), key
    if mode == "unstructured":
        assert result.weight_sparsity >= sparsity - 0.01 and result.threshold > 0
    else:
        assert result.channels_kept < 0.85 and result.params_total < engine.baseline.params_total


def test_memoised_positions_come_back_as_the_same_object_at_once(engine):
    first = engine.evaluate(0.45, "unstructured", 6, "per_channel")
    hits = engine.hits
    started = time.perf_counter()
    again = engine.evaluate(0.45, "unstructured", 6, "per_channel")
    assert again is first and engine.last_hit and engine.hits == hits + 1
    assert (time.perf_counter() - started) < 0.005
    # at 32 bits the scale granularity changes nothing: one position
    assert engine.evaluate(0.45, "unstructured", 32, "per_tensor") is engine.evaluate(0.45, "unstructured", 32)


def test_no_pruning_and_float_weights_is_the_checkpoint_itself_on_the_subset(engine, checkpoint):
    model, _ = load_checkpoint(checkpoint)
    x, y = subset(checkpoint)
    with torch.inference_mode():
        own = scores(model(x), y)["accuracy"]
    for r in (engine.baseline, engine.evaluate(0.0, "unstructured", 32), engine.evaluate(0.0, "channels", 32)):
        assert r.accuracy == own
        assert r.size_bytes == r.reference_bytes == storage(model)["size_bytes"] and r.compression == 1.0
    assert "of 360 test images" in engine.subset_caption()


def test_latency_is_estimated_for_zeros_and_simulated_bits_and_measured_for_a_channel_cut(checkpoint):
    timed = W.WhatIf(checkpoint, eval_samples=50, latency=True)
    r = timed.evaluate(0.7, "unstructured", 4)
    assert r.latency_estimated and r.latency_ms_b1 == timed.dense_latency_ms > 0 and "estimated" in r.latency_note
    cut = timed.evaluate(0.5, "channels", 32)
    assert not cut.latency_estimated and cut.latency_ms_b1 > 0 and cut.latency_note.startswith("measured")


def test_positions_outside_the_sliders_are_messages(engine):
    with pytest.raises(ConfigError, match="sparsity"):
        engine.evaluate(1.0)
    with pytest.raises(ConfigError, match="bits"):
        engine.evaluate(0.5, "unstructured", 33)
    with pytest.raises(ConfigError, match="mode"):
        engine.evaluate(0.5, "random")
    with pytest.raises(ConfigError, match="would remove every channel"):
        engine.evaluate(0.99, "channels")


@pytest.mark.parametrize("position", [(0.5, "unstructured", 4, "per_channel"), (0.3, "channels", 32, "per_channel")])
def test_the_whatif_task_measures_on_the_whole_test_split_and_saves_a_checkpoint_that_reloads(
        checkpoint, tmp_path, position):
    from engine.run.jobs import run_sync
    from store import open_store

    sparsity, mode, bits, granularity = position
    db = str(tmp_path / "runs.duckdb")
    out = str(tmp_path / "variant")
    [point] = run_sync("whatif", {"checkpoint": checkpoint, "sparsity": sparsity, "mode": mode, "bits": bits,
                                  "granularity": granularity, "out": out, "latency": False}, db)
    _, meta = load_checkpoint(checkpoint)
    from engine.model.checkpoint import dataset_of

    data = dataset_of(meta)
    expected = measure(independent(checkpoint, *position), data, latency=False)  # the whole test split
    assert point.accuracy == expected.accuracy and len(data.test) == 360
    assert point.method == "whatif" and point.family == ("quantize" if bits < 32 else "prune")
    assert point.simulated == (bits < 32) and point.input_checkpoint == checkpoint and point.artifact == out
    assert point.params == {"sparsity": sparsity, "mode": mode, "bits": bits, "granularity": granularity}
    assert "+" in point.extra["combined"]
    store = open_store(db)
    run = store.list_runs().iloc[0]
    assert run["kind"] == "whatif" and run["status"] == "finished" and run["n_points"] == 1
    assert store.run_points(run["run_id"])[0]["accuracy"] == point.accuracy
    model, form, saved = load_variant(out)
    assert saved.weights_format == ("packed" if bits < 32 else "float")
    assert saved.lineage[-1]["method"] == "whatif"
    again = measure(model, data, form, latency=False)
    assert again.accuracy == point.accuracy and again.size_bytes == point.measurement.size_bytes


def test_checkpoint_listing_and_curves_follow_the_store_rows(checkpoint, tmp_path):
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "name": ["train", "sweep", "broken"],
                         "status": ["finished", "finished", "failed"]})
    arts = pd.DataFrame({"run_id": ["a", "b", "c", "b"], "kind": ["checkpoint"] * 4,
                         "path": [checkpoint, str(tmp_path / "gone"), checkpoint + "-x", checkpoint],
                         "created_at": pd.to_datetime([1, 2, 3, 4], unit="s")})
    [choice] = W.float_checkpoints(arts, runs)  # one directory once; a missing one and a failed run's left out
    assert choice.path == checkpoint and choice.arch == "cnn_s" and "train" in choice.lineage
    points = pd.DataFrame({"run_id": ["a", "b", "b", "z"], "run_name": ["train", "sweep", "sweep", "other"],
                           "family": ["train", "prune", "prune", "prune"], "method": ["train", "g", "g", "g"],
                           "stage": ["baseline", "baseline", "variant", "variant"], "level": [None, 0, 0.5, 0.5],
                           "level_name": ["", "sparsity", "sparsity", "sparsity"], "accuracy": [0.9, 0.9, 0.8, 0.1],
                           "size_bytes": [100, 100, 60, 10], "simulated": [False] * 4,
                           "input_checkpoint": ["", checkpoint, checkpoint, "/elsewhere"],
                           "artifact": [checkpoint, checkpoint, "", ""]})
    curves = W.checkpoint_points(points, checkpoint + "/")
    assert list(curves["series"]) == ["sweep (g)", "sweep (g)", "train (train)"]
    assert list(curves["size_bytes"]) == [60, 100, 100]
    fig = whatif_figure(curves, {"size_bytes": 2048, "accuracy": 0.7, "sparsity": 0.5, "mode": "unstructured",
                                 "bits": 4, "granularity": "per_channel"}, point_name="what-if (200 test images)",
                        baseline={"size_bytes": 4096, "accuracy": 0.9})
    assert [t.name for t in fig.data] == ["sweep (g)", "train (train)", "checkpoint (same subset)",
                                          "what-if (200 test images)"]
    star = fig.data[-1]
    assert list(star.x) == [2.0] and list(star.y) == [0.7] and star.marker.symbol == "star"
    assert "4-bit per-channel (simulated)" in star.text[0] and fig.layout.xaxis.type == "log"


def test_the_task_config_is_validated_before_anything_runs():
    with pytest.raises(ConfigError, match="sparsity"):
        W.WhatIfConfig(checkpoint="x", sparsity=1.5)
    with pytest.raises(ConfigError, match="bits"):
        W.WhatIfConfig.from_dict({"checkpoint": "x", "bits": 1})
    with pytest.raises(ConfigError, match="checkpoint"):
        W.WhatIfConfig()
    assert copy.deepcopy(W.WhatIfConfig(checkpoint="x")).position()["bits"] == 32


# ---------------------------------------------------------------- instant estimates and progressive measurement

from engine.methods import whatif_estimate as E  # noqa: E402
from engine.methods import whatif_live as L  # noqa: E402


def fact(sparsity, bits, accuracy, granularity="per_channel", half=0.01):
    return E.Known(sparsity, "unstructured", bits, granularity, accuracy, half, 250)


def test_interpolation_is_exact_at_measured_positions_and_its_error_bar_widens_away_from_them():
    known = [fact(0.0, 32, 0.90), fact(0.5, 32, 0.86), fact(0.8, 32, 0.40), fact(0.0, 4, 0.88)]
    at = E.estimate(0.5, "unstructured", 32, "per_channel", known)
    assert at.measured and at.accuracy == 0.86 and at.label == "measured" and at.half_width == pytest.approx(0.01)
    near, mid = (E.estimate(s, "unstructured", 32, "per_channel", known) for s in (0.53, 0.65))
    assert not near.measured and near.label == "estimate" and mid.label == "estimate"
    assert mid.accuracy == pytest.approx(0.86 + 0.5 * (0.40 - 0.86))  # on the chord, half-way
    assert 0.01 < near.half_width < mid.half_width  # wider away from the measured ends
    assert mid.low < mid.accuracy < mid.high
    # an unseen combination: the drops add (pruning at 32 bits, plus 4-bit quantization of the checkpoint)
    both = E.estimate(0.5, "unstructured", 4, "per_channel", known)
    assert both.accuracy == pytest.approx(0.86 + (0.88 - 0.90)) and "additive" in both.basis
    assert both.half_width > 0.01
    # per-tensor scales are another curve: no 4-bit per-tensor fact, so the estimate is not the per-channel one
    assert E.estimate(0.0, "unstructured", 4, "per_tensor", known).label == "estimate"


def test_the_profile_measures_next_where_measured_neighbours_differ_most():
    known = [fact(0.0, 32, 0.90), fact(0.5, 32, 0.89), fact(0.9, 32, 0.10)]
    assert E.next_to_measure(known, modes=("unstructured",)) == (0.7, "unstructured", 32, "per_channel")
    flat = [fact(0.0, 32, 0.90), fact(0.5, 32, 0.89)]
    assert E.next_to_measure(flat, modes=("unstructured",)) is None  # every gap within 2 points


def test_the_profile_measures_a_pruned_and_quantized_position_where_only_the_additive_model_answers():
    # both sliders measured finely alone (no gap wider than 5 points); pruning to 80 % and 4-bit per-tensor
    # quantization each cost a lot: where both apply only the additive model answers, and its error bar is widest
    known = [fact(s, 32, a) for s, a in ((0.0, 0.90), (0.3, 0.85), (0.5, 0.80), (0.65, 0.75), (0.8, 0.70))]
    known += [fact(0.0, b, a, "per_tensor") for b, a in ((4, 0.50), (5, 0.75), (6, 0.85), (8, 0.89))]
    assert E.next_to_measure(known, modes=("unstructured",)) == (0.8, "unstructured", 4, "per_tensor")
    both = E.estimate(0.8, "unstructured", 4, "per_tensor", known)
    assert "additive" in both.basis and both.half_width > 0.05
    known.append(fact(0.8, 4, 0.55, "per_tensor"))  # measured: it is never proposed again
    assert E.next_to_measure(known, modes=("unstructured",)) != (0.8, "unstructured", 4, "per_tensor")


def test_wilson_interval_is_sound_at_the_edges():
    lo, hi = E.wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert E.wilson(0, 10)[0] == 0.0 and E.wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert E.wilson(0, 0) == (0.0, 1.0)


@pytest.fixture
def live(checkpoint):
    made = []

    def make(**kwargs) -> L.LiveWhatIf:
        engine = W.WhatIf(checkpoint, eval_samples=SAMPLES, seed=0, latency=False, warm=False)
        kwargs = {"profile": False, "sensitivity": False, "adaptive": 0, **kwargs}
        made.append(L.LiveWhatIf(engine, **kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_progressive_measurement_grows_with_its_interval_and_ends_at_the_full_subset_accuracy(live, engine):
    lw = live(start=False, first_step=25, chunk=25)
    steps = []
    record = lw._set

    def spy(key, state, message="", asked=None):
        record(key, state, message, asked)
        steps.append(lw.refinement(key))

    lw._set = spy
    answer = lw.move(0.6, "unstructured", 4, "per_channel")
    assert answer.result is None and answer.estimate.label == "estimate"  # nothing measured: an estimate, labelled
    assert answer.answered_ms < 300
    lw._thread.start()
    done = lw.wait(answer.key, 60)
    assert done.state == "done" and done.n == SAMPLES
    ns = [s.n for s in steps if s.key == answer.key and s.state == "running"]
    assert ns == [25, 50, 100]  # each step doubles what is counted, until the subset's 200
    running = [s for s in steps if s.key == answer.key and s.state == "running"]
    assert all(s.low <= s.accuracy <= s.high for s in running)
    assert running[-1].high - running[-1].low < running[0].high - running[0].low  # the interval narrows
    expected = engine.evaluate(0.6, "unstructured", 4, "per_channel")  # one forward over the same 200 images
    measured = lw.answer(answer.key)
    assert measured.result.accuracy == expected.accuracy and done.accuracy == pytest.approx(expected.accuracy)
    assert measured.result.loss == pytest.approx(expected.loss, rel=1e-5)
    assert measured.estimate.measured and measured.estimate.label == "measured"
    assert measured.result.size_bytes == expected.size_bytes and measured.size_note == "measured"


def test_a_new_move_cancels_the_stale_measurement_which_resumes_when_moved_back(live, engine, monkeypatch):
    lw = live(first_step=5, chunk=5)
    slow = lw.engine.score_range

    def score_slowly(model, start, stop):
        time.sleep(0.01)
        return slow(model, start, stop)

    monkeypatch.setattr(lw.engine, "score_range", score_slowly)
    first = lw.move(0.3, "unstructured", 32)
    deadline = time.monotonic() + 30
    while (lw.refinement(first.key) is None or lw.refinement(first.key).n == 0) and time.monotonic() < deadline:
        time.sleep(0.005)
    second = lw.move(0.7, "unstructured", 6, "per_tensor")
    assert lw.wait(second.key, 60).state == "done"
    stale = lw.refinement(first.key)
    assert stale.state == "cancelled" and 0 < stale.n < SAMPLES
    assert lw.engine.lookup(first.key) is None  # never remembered as if measured
    back = lw.move(0.3, "unstructured", 32)  # resumes from the images already counted
    assert lw.wait(back.key, 60).state == "done"
    assert lw.engine.lookup(first.key).accuracy == engine.evaluate(0.3, "unstructured", 32).accuracy
    assert lw.engine.lookup(second.key).accuracy == engine.evaluate(0.7, "unstructured", 6, "per_tensor").accuracy


def test_per_layer_sensitivities_run_through_the_prefix_cache_and_match_one_layer_quantized_alone(live, checkpoint):
    lw = live(sensitivity=True, sensitivity_samples=100)
    assert lw.wait_idle(60)
    table = lw.sensitivity()
    assert len(table) == len(lw.engine.folded_layers) and not lw.errors
    model, _ = load_checkpoint(checkpoint)
    folded = fold_batchnorm(model).eval()
    x, y = lw.engine.x[:100], lw.engine.y[:100]
    layer = next(iter(lw.engine.folded_layers))
    with torch.inference_mode():
        base = scores(folded(x), y)["accuracy"]
        weight = dict(prunable_weights(folded))[layer].weight
        weight.copy_(maths.quantize_codes(weight, 2, symmetric=True, per_channel=True).dequantize())
        alone = scores(folded(x), y)["accuracy"]
    assert lw.drops[layer][2] == pytest.approx(base - alone, abs=1e-9)
