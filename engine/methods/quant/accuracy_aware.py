"""Accuracy-aware int8: layers are kept in float, the most sensitive first, until the int8 model is
within a given accuracy drop of the float one.

The accuracy criterion of Intel Neural Compressor (`AccuracyCriterion(tolerable_loss=...)`: its
post-training tuning falls layers back to fp32 until the loss is tolerable) and NNCF's
`quantize_with_accuracy_control` (openvinotoolkit/nncf, nncf/quantization/algorithms/accuracy_control/).
The ranking is NNCF's LogitsBasedRanker (accuracy_control/ranker.py): the validation items whose int8
logits are farthest from the float ones (normalised MSE ||ref - approx||^2 / ||ref||^2) form a ranking
subset; each quantized layer is scored by the mean normalised MSE on that subset of the model converted
with only that layer in float, and the lowest score is the most sensitive layer (keeping it float helps
most). Then layers are kept float one at a time in that order, the whole validation split re-measured
after each, until the drop is within the bound or every layer is float (NNCF re-ranks every few steps;
this does not).

`rank_layers` and `keep_float_until` are pure (a logits function, a drop function); `keep_layers_float`
runs them on a real model through a `convert(keep_float) -> Int8Model` callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from engine.deploy.int8 import Int8Model
from engine.model.data import Dataset

RANKING_SUBSET = 300  # NNCF's default ranking_subset_size


def normalized_mse(reference: Tensor, approx: Tensor) -> Tensor:
    """Per item: ||reference - approx||^2 / ||reference||^2 (NNCF's normalized_mse), over all but the first dim."""
    ref, app = reference.flatten(1).double(), approx.flatten(1).double()
    return ((ref - app) ** 2).sum(1) / (ref**2).sum(1).clamp_min(torch.finfo(torch.float64).tiny)


def ranking_subset(reference: Tensor, approx: Tensor, size: int = RANKING_SUBSET) -> Tensor:
    """Indices of the `size` items whose approximate logits are farthest from the reference, the farthest first."""
    errors = normalized_mse(reference, approx)
    return torch.argsort(errors, descending=True, stable=True)[: min(size, len(errors))]


def rank_layers(reference: Tensor, logits_with_float: Callable[[str], Tensor],
                layers: Sequence[str]) -> list[tuple[str, float]]:
    """(layer, score) for every layer, the most sensitive first: a layer's score is the mean normalised MSE
    between `reference` (float logits on the ranking subset) and `logits_with_float(layer)` (the logits on the
    same items of the int8 model with only that layer in float). Ties keep the order of `layers`."""
    scored = [(name, float(normalized_mse(reference, logits_with_float(name)).mean())) for name in layers]
    return sorted(scored, key=lambda item: item[1])


class Search(NamedTuple):
    kept: list[str]  # the layers kept float, in the order they were added
    drop: float  # the drop with them float
    tries: int  # calls of the drop function
    met: bool  # drop <= max_drop


def keep_float_until(drop_fn: Callable[[list[str]], float], ranked: Sequence[str], max_drop: float,
                     start_drop: float | None = None) -> Search:
    """Keeps layers float one at a time in `ranked` order until `drop_fn(kept)` is at most `max_drop` (or
    every layer is float). `start_drop` is the drop with none float, when already known."""
    kept: list[str] = []
    tries = 0
    if start_drop is None:
        start_drop, tries = drop_fn([]), 1
    drop = start_drop
    for name in ranked:
        if drop <= max_drop:
            break
        kept.append(name)
        drop = drop_fn(list(kept))
        tries += 1
    return Search(kept, drop, tries, drop <= max_drop)


# ---------------------------------------------------------------- on a real model


def logits_of(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])


def correct(logits: Tensor, y: Tensor) -> int:
    """Items whose top-1 class is the label, taken as engine.model.train.scores takes it."""
    return int((logits.topk(1, dim=1).indices[:, 0] == y).sum())


def drop_points(float_correct: int, int8_correct: int, n: int) -> float:
    """Points of accuracy lost, from counts, so a drop of exactly D items compares equal to D points."""
    return 100 * (float_correct - int8_correct) / n


@dataclass
class AccuracyAware:
    final: Int8Model  # the int8 model with `search.kept` in float
    all_int8: Int8Model  # every layer the backend can quantize in int8
    search: Search
    start_drop: float  # points of val accuracy the all-int8 model loses
    conversions: int  # int8 conversions made (all-int8, ranking, search)
    ranking: list[tuple[str, float]] = field(default_factory=list)  # empty when all-int8 was already within


def keep_layers_float(folded: nn.Module, data: Dataset, convert: Callable[[Sequence[str]], Int8Model],
                      max_drop: float, progress: Callable[[float, str], None] = lambda f, m: None,
                      subset_size: int = RANKING_SUBSET) -> AccuracyAware:
    """The int8 model within `max_drop` points of top-1 validation accuracy of `folded`, layers kept float
    most sensitive first (or every quantized layer float, `search.met` False, when that is not enough)."""
    x, y = data.val.tensors()
    reference = logits_of(folded, x)
    float_correct = correct(reference, y)

    def drop_of(model: Int8Model) -> float:
        return drop_points(float_correct, correct(logits_of(model.runner, x), y), len(y))

    all_int8 = convert(())
    approx = logits_of(all_int8.runner, x)
    start = drop_points(float_correct, correct(approx, y), len(y))
    if start <= max_drop:
        return AccuracyAware(all_int8, all_int8, Search([], start, 0, True), start, 1)
    layers = list(all_int8.layer_groups)
    subset = ranking_subset(reference, approx, subset_size)
    done = [0]

    def with_float(name: str) -> Tensor:
        progress(0.5 * done[0] / len(layers), f"ranking {name}")
        done[0] += 1
        return logits_of(convert((name,)).runner, x[subset])

    ranking = rank_layers(reference[subset], with_float, layers)
    latest = {(): all_int8}

    def drop_fn(kept: list[str]) -> float:
        progress(0.5 + 0.5 * len(kept) / len(layers), f"{len(kept)} layer(s) float")
        latest.clear()
        latest[tuple(kept)] = model = convert(kept)
        return drop_of(model)

    search = keep_float_until(drop_fn, [n for n, _ in ranking], max_drop, start_drop=start)
    (final,) = latest.values()
    return AccuracyAware(final, all_int8, search, start, 1 + len(layers) + search.tries, ranking)
