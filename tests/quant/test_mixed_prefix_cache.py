"""The prefix activation cache's shortcuts: kept states reused across assignments, the greedy winner's
states kept for the next step, candidates abandoned part-way, chunks only where they are exact, a
faster exact max-pool. Every shortcut must give the scores a full forward gives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant.common import LayerWeights, evaluate_tensors
from engine.methods.quant.mixed import greedy_rank, validation_subset
from engine.methods.quant.prefix_cache import CandidateEvaluator, Race, max_pool_2x2
from engine.methods.tasks import open_checkpoint
from engine.model.zoo import build_model

QUANTIZER = {"symmetric": True, "per_channel": True, "observer": "minmax", "percentile": 99.99}


def evaluator_for(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs):
    folded = fold_batchnorm(model)
    weights = LayerWeights(folded, QUANTIZER)
    return CandidateEvaluator(folded, weights, x, y, **kwargs), weights


def plain_scores(weights: LayerWeights, bits: dict[str, int], x: torch.Tensor, y: torch.Tensor) -> dict:
    weights.apply(bits)
    return evaluate_tensors(weights.model, x, y)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = build_model("cnn_s", 10, 1, 8).eval()
    return model, torch.randn(90, 1, 8, 8), torch.randint(0, 10, (90,))


def test_the_2x2_max_pool_is_max_pool2d_bit_for_bit_odd_sizes_and_nan_included():
    torch.manual_seed(0)
    for shape in [(3, 4, 8, 8), (2, 3, 7, 9), (1, 1, 2, 3)]:
        x = torch.randn(shape)
        x.view(-1)[::7] = -math.inf
        x.view(-1)[5] = math.nan
        ours, theirs = max_pool_2x2(x), F.max_pool2d(x, 2)
        assert ours.shape == theirs.shape and ours.is_contiguous()
        assert torch.equal(ours.nan_to_num(7.0), theirs.nan_to_num(7.0))
        assert torch.equal(ours.isnan(), theirs.isnan())


def test_assignments_that_share_their_first_layers_run_from_the_kept_state_and_score_the_same(cnn):
    model, x, y = cnn
    evaluator, weights = evaluator_for(model, x, y, chunk=25)
    layers = list(weights.layers)
    first, last = {n: 8 for n in layers}, {**{n: 8 for n in layers}, layers[-1]: 2}
    middle = {**first, layers[2]: 4, layers[3]: 2}
    for bits in (first, last, middle, first, middle):
        assert evaluator.evaluate(bits) == plain_scores(weights, bits, x, y)
    assert evaluator.chunked  # chunks of 25 give the same logits as evaluate_tensors' one batch here
    assert evaluator.full_forwards == 1 and evaluator.evaluations == 5
    before = evaluator.segments
    evaluator.evaluate(last)  # every state before the last layer is kept: only its suffix runs
    assert evaluator.segments - before == 1


def test_the_winner_a_search_keeps_starts_the_next_step_without_running_its_base_again(cnn):
    model, x, y = cnn
    evaluator, weights = evaluator_for(model, x, y, chunk=30)
    base = {n: 8 for n in weights.layers}
    changes = [(n, 4) for n in weights.layers]
    tried = evaluator.evaluate_changes(base, changes, keep=lambda c, v: greedy_rank(base, weights.sizes, c, v))
    assert tried == [plain_scores(weights, {**base, n: b}, x, y) for n, b in changes]
    name, low = max(zip(changes, tried), key=lambda item: greedy_rank(base, weights.sizes, *item))[0]
    before = evaluator.segments
    assert evaluator.evaluate({**base, name: low}) == plain_scores(weights, {**base, name: low}, x, y)
    assert evaluator.segments - before == 1  # the winner's states were kept to its last cut


@pytest.mark.parametrize("lower", [(4, 2), (7, 6, 5)])  # far apart; close (ties on accuracy, loss decides)
def test_abandoned_candidates_are_only_ones_that_rank_below_the_best_and_the_rest_score_exactly(
        digits_checkpoint, lower):
    model, _, data = open_checkpoint(digits_checkpoint)  # trained: 2 bits costs some layers far more
    x, y = validation_subset(data, 120, seed=0)
    evaluator, weights = evaluator_for(model, x, y, chunk=20)
    base = {n: 8 for n in weights.layers}
    changes = [(n, b) for n in weights.layers for b in lower]
    tried = evaluator.evaluate_changes(base, changes, abandon=True)
    plain = [plain_scores(weights, {**base, n: b}, x, y) for n, b in changes]
    best = max((p["accuracy"], -p["loss"]) for p in plain)
    assert evaluator.abandoned == sum(t is None for t in tried) > 0
    assert evaluator.evaluations == len(changes)
    for t, p in zip(tried, plain):
        if t is None:
            assert (p["accuracy"], -p["loss"]) < best
        else:
            assert t == p
    assert any(t is not None and (t["accuracy"], -t["loss"]) == best for t in tried)


class KeepsAndChangesASkip(nn.Module):
    """The skip value `h` is live at two cuts, and the segment after the second changes it in place."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.a(x)
        g = self.b(h)
        h = self.relu(h)
        return self.c(g + h)


def test_a_segment_that_changes_a_kept_value_in_place_gets_a_copy():
    torch.manual_seed(0)
    model, x, y = KeepsAndChangesASkip(), torch.randn(40, 6), torch.randint(0, 3, (40,))
    evaluator, weights = evaluator_for(model, x, y, chunk=16)
    base = {n: 8 for n in weights.layers}
    for _ in range(2):
        changes = [(n, b) for n in weights.layers for b in (4, 2)]
        assert evaluator.evaluate_changes(base, changes) == [
            plain_scores(weights, {**base, n: b}, x, y) for n, b in changes]
        assert evaluator.evaluate({**base, "c": 2}) == plain_scores(weights, {**base, "c": 2}, x, y)
    assert evaluator.cached_layers == ["a", "b", "c"]


class MixesTheBatch(nn.Module):
    """Each image's logits depend on the others in its batch: chunks would change them."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 4)

    def forward(self, x):
        h = self.a(x)
        return self.b(h - h.mean(0, keepdim=True))


def test_where_chunks_would_change_the_logits_the_batches_of_evaluate_tensors_are_kept():
    torch.manual_seed(0)
    model, x, y = MixesTheBatch(), torch.randn(50, 5), torch.randint(0, 4, (50,))
    evaluator, weights = evaluator_for(model, x, y, chunk=10)
    base = {n: 8 for n in weights.layers}
    changes = [(n, 2) for n in weights.layers]
    assert evaluator.evaluate_changes(base, changes, abandon=True) == [
        plain_scores(weights, {**base, n: b}, x, y) for n, b in changes]
    assert evaluator.chunked is False and evaluator.abandoned == 0


def test_a_candidate_is_abandoned_only_when_it_cannot_reach_the_best_accuracy_or_tie_it_at_a_lower_loss():
    race = Race(keep=None, abandon=True, n=100)
    assert not race.loses(0, 99.0)  # nothing scored yet: nothing to lose to
    race.scored(0, ("a", 4), {"accuracy": 0.9, "loss": 0.5}, 90, [])
    assert race.loses(89, 0.0)  # cannot reach 90 right
    assert race.loses(90, 0.51)  # at best a tie on accuracy, and already more loss
    assert not race.loses(90, 0.5)  # could tie exactly
    assert not race.loses(90, 0.5 * (1 + 1e-6))  # within rounding of a tie
    assert not race.loses(91, 5.0)  # could still be more accurate
    race.scored(1, ("b", 4), {"accuracy": 0.91, "loss": 0.7}, 91, [])  # more accurate: the new best
    assert race.loses(90, 0.0) and not race.loses(91, 0.69)
