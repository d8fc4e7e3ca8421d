"""How to cut single weights: masks from a magnitude ranking that is sorted once.

A mask is a bool tensor per layer (True = kept), keyed by module path. `rank` sorts every score
once; the mask for any sparsity then takes the k lowest positions, so a ten-level sweep sorts
once rather than ten times (torch.nn.utils.prune re-sorts on every call). Two scopes:
`layer` prunes every layer to the same sparsity; `global` ranks all layers together, so one
magnitude threshold is shared and layers end at different sparsities.

Masks are applied by zeroing the weights in place, so they are permanent in what is saved
(no weight_orig/weight_mask reparametrisation to strip); during fine-tuning `mask_keeper`
re-zeroes the pruned positions after every optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.core.config import check_choice, check_range
from engine.model.zoo import get_module

SCOPES = ("layer", "global")


def sort_order(scores: Tensor) -> Tensor:
    """Positions in ascending score order; stable, so ties break by position (deterministic)."""
    return torch.argsort(scores, stable=True)


def pruned_count(n: int, sparsity: float) -> int:
    """How many of n weights a sparsity removes (rounded half up)."""
    return min(n, int(math.floor(sparsity * n + 0.5)))


@dataclass(frozen=True, eq=False)
class Ranking:
    """Scores sorted once; every sparsity's masks and thresholds derive from it."""

    scope: str
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    orders: tuple[Tensor, ...]  # ascending positions: one per layer, or one over all layers (global)
    sorted_scores: tuple[Tensor, ...]

    def masks(self, sparsity: float) -> dict[str, Tensor]:
        check_range("sparsity", sparsity, 0, 1, hi_open=True)
        if self.scope == "layer":
            flat = [_keep_mask(order, pruned_count(len(order), sparsity)) for order in self.orders]
        else:
            order = self.orders[0]
            flat = list(torch.split(_keep_mask(order, pruned_count(len(order), sparsity)),
                                    [s.numel() for s in self.shapes]))
        return {n: f.view(s) for n, f, s in zip(self.names, flat, self.shapes)}

    def thresholds(self, sparsity: float) -> dict[str, float]:
        """The largest pruned score per layer (layer scope) or once for all (global, key '*')."""
        out = {}
        keys = self.names if self.scope == "layer" else ("*",)
        for key, s in zip(keys, self.sorted_scores):
            k = pruned_count(len(s), sparsity)
            out[key] = float(s[k - 1]) if k > 0 else float("nan")
        return out


def _keep_mask(order: Tensor, k: int) -> Tensor:
    keep = torch.ones(len(order), dtype=torch.bool)
    keep[order[:k]] = False
    return keep


def rank(names: list[str], scores: list[Tensor], scope: str) -> Ranking:
    """Sorts the scores once: each layer on its own (`layer`) or all together (`global`)."""
    check_choice("scope", scope, SCOPES)
    shapes = tuple(s.shape for s in scores)
    flat = [s.reshape(-1) for s in scores]
    if scope == "global":
        flat = [torch.cat(flat)] if flat else [torch.empty(0)]
    orders = tuple(sort_order(f) for f in flat)
    return Ranking(scope, tuple(names), shapes, orders, tuple(f[o] for f, o in zip(flat, orders)))


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Zeroes the pruned weights in place: the mask becomes permanent in the weights."""
    for name, mask in masks.items():
        w = get_module(model, name).weight
        w.mul_(mask.to(w.device, w.dtype))


def mask_keeper(model: nn.Module, masks: dict[str, Tensor]) -> Callable[[], None]:
    """An `after_step` for engine.model.train.fit that keeps pruned weights at zero while fine-tuning."""
    pairs = [(get_module(model, name).weight, mask) for name, mask in masks.items()]

    @torch.no_grad()
    def keep() -> None:
        for w, mask in pairs:
            w.mul_(mask.to(w.device, w.dtype))

    return keep


def mask_sparsity(masks: dict[str, Tensor]) -> float:
    """The fraction of masked-out weights over all masked layers."""
    total = sum(m.numel() for m in masks.values())
    return sum(int((~m).sum()) for m in masks.values()) / total if total else 0.0
