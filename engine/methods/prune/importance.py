"""What to score: one number per weight (unstructured) or per channel (structured).

Unstructured: a weight's magnitude |w| (Han et al. 2015, "Learning both Weights and Connections
for Efficient Neural Networks"). Structured, as Torch-Pruning importance callables over a
dependency group: the L1 or L2 norm of a channel's filters (Li et al. 2017, "Pruning Filters for
Efficient ConvNets") or its BatchNorm scale |gamma| (Liu et al. 2017, "Learning Efficient
Convolutional Networks through Network Slimming"). Variants are parameters (p=1, p=2), not classes.

Torch-Pruning is imported only when a channel importance is built: importing it loads timm (its op
counter does), seconds that every command touching the prune family would otherwise pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from engine.core.config import check_choice
from engine.core.errors import ConfigError

if TYPE_CHECKING:
    import torch_pruning as tp

CHANNEL_IMPORTANCE = ("l1", "l2", "bn")
PRUNED_SCORE = -1.0  # below every magnitude: a weight pruned earlier stays first in line


def weight_magnitudes(layers: list[tuple[str, nn.Module]], masks: dict[str, Tensor] | None = None) -> list[Tensor]:
    """|w| of each layer's weight; weights already masked out score PRUNED_SCORE."""
    scores = []
    for name, m in layers:
        s = m.weight.detach().abs().float().cpu()
        if masks is not None and name in masks:
            s = torch.where(masks[name], s, torch.full_like(s, PRUNED_SCORE))
        scores.append(s)
    return scores


class FilterNorm:
    """L_p norm of the filters that produce each channel, pooled over every Conv/Linear in the group.

    A plain conv's group has one producer, so this is its filter norm; in a residual group all the
    convs that add into the same channel count, because they are removed together. Torch-Pruning takes
    any callable over a group as importance, so this needs no base class from it (see the module note).
    """

    def __init__(self, p: int):
        self.p = p

    @torch.no_grad()
    def __call__(self, group) -> Tensor | None:
        score: Tensor | None = None
        for item in group:
            dep, idxs = item.dep, item.idxs
            layer = dep.layer
            if not isinstance(layer, (nn.Conv2d, nn.Linear)):
                continue
            if getattr(dep.pruning_fn, "__name__", "") != "prune_out_channels":
                continue  # a consumer's input slice is not the channel's filter
            root = item.root_idxs
            if any(r is None for r in root):
                continue
            w = layer.weight.detach()
            if len(idxs) != w.shape[0] or any(int(i) != k for k, i in enumerate(idxs)):
                w = w[[int(i) for i in idxs]]
            local = torch.linalg.vector_norm(w.flatten(1).float(), ord=self.p, dim=1).pow(self.p)
            if score is None:
                score = torch.zeros(len(group[0].idxs))
            score.scatter_add_(0, torch.tensor(root, dtype=torch.long), local.cpu())
        return None if score is None else score.pow(1.0 / self.p)


def channel_importance(name: str) -> tp.importance.Importance | FilterNorm:
    """The Torch-Pruning importance for `l1`, `l2` (filter norms) or `bn` (BatchNorm scale)."""
    check_choice("importance", name, CHANNEL_IMPORTANCE)
    if name == "bn":
        import torch_pruning as tp  # lazy: see the module docstring

        return tp.importance.BNScaleImportance(normalizer=None)
    return FilterNorm(p=1 if name == "l1" else 2)


def check_importance_fits(name: str, model: nn.Module, arch: str) -> None:
    """`bn` needs BatchNorm layers to score channels; say so instead of silently pruning nothing."""
    if name == "bn" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConfigError(f"importance 'bn' scores channels by their BatchNorm scale, but {arch} has no "
                          f"BatchNorm layers; choose importance l1 or l2")
