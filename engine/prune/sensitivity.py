"""Per-layer sensitivity: the accuracy when one layer at a time is pruned, at several ratios
(Li et al. 2017, "Pruning Filters for Efficient ConvNets", Fig. 2; Han et al. 2015, Fig. 5).

Unstructured by default: zero the smallest weights of that layer only (its magnitudes sorted once
for every ratio). With `structured`, remove that layer's channels with Torch-Pruning instead; a
layer coupled to others (a residual sum) loses those channels in the whole coupled group.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from engine.config import check_choice
from engine.context import RunContext
from engine.errors import ConfigError
from engine.measure import measure, prunable_weights
from engine.models import get_module
from engine.progress import Progress
from engine.prune.channels import prune_channels
from engine.prune.common import PruneTask, open_for_pruning, point_params
from engine.prune.importance import CHANNEL_IMPORTANCE, weight_magnitudes
from engine.prune.masks import apply_masks, rank
from engine.prune.schedule import check_levels
from engine.tasks import make_point, register_task


@dataclass
class SensitivityConfig(PruneTask):
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)  # sparsity (or channel ratio) tried on each layer
    layers: tuple[str, ...] = ()  # module paths to scan; empty = every Conv and Linear
    structured: bool = False  # remove the layer's channels instead of zeroing its smallest weights
    importance: str = "l1"  # structured only: l1 | l2 (filter norm) | bn (BatchNorm scale)
    latency: bool = False  # one point per layer and ratio: timing each is slow, so off by default

    def validate(self) -> None:
        super().validate()
        check_levels("ratio", self.ratios)
        check_choice("importance", self.importance, CHANNEL_IMPORTANCE)


@register_task("prune.sensitivity", SensitivityConfig,
               "prune one layer at a time at several ratios and report the accuracy of each")
def sensitivity(cfg: SensitivityConfig, ctx: RunContext) -> list[dict]:
    model, meta, data, classifier = open_for_pruning(cfg)
    layers = [(p, get_module(model, p)) for p in cfg.layers] if cfg.layers else prunable_weights(model)
    for path, m in layers:
        if not isinstance(m, nn.Conv2d | nn.Linear):
            raise ConfigError(f"layer '{path}' is a {type(m).__name__}; sensitivity scans Conv2d and Linear layers")
    if cfg.structured:  # the classifier's outputs are the classes: its channels cannot go
        layers = [(p, m) for p, m in layers if p != classifier]
    base = measure(model, data, latency=cfg.latency)
    points = [_log(ctx, make_point(base, method="sensitivity", params=point_params(cfg, drop=("ratios", "layers")),
                                   stage="dense", checkpoint=cfg.checkpoint, layer=None, ratio=0.0,
                                   accuracy_drop=0.0))]
    example = data.test.tensors()[0][:1]
    total = len(layers) * len(cfg.ratios)
    for i, (path, layer) in enumerate(layers):
        ranking = rank([path], weight_magnitudes([(path, layer)]), "layer")  # sorted once for every ratio
        original = layer.weight.detach().clone()
        for j, ratio in enumerate(cfg.ratios):
            ctx.cancel.raise_if_cancelled()
            if cfg.structured:
                variant = copy.deepcopy(model)
                try:
                    prune_channels(variant, example, importance=cfg.importance, layer_ratios={path: ratio},
                                   keep=(classifier,), arch=meta.arch)
                except ConfigError as e:  # e.g. this ratio would empty the layer: report it, scan the rest
                    ctx.log_event(f"skipped {path} at {ratio:g}: {e}", "warning")
                    continue
                m = measure(variant, data, latency=cfg.latency)
            else:
                apply_masks(model, ranking.masks(ratio))
                m = measure(model, data, latency=cfg.latency)
                with torch.no_grad():
                    layer.weight.copy_(original)
            params = point_params(cfg, drop=("ratios", "layers"), layer=path, ratio=ratio)
            points.append(_log(ctx, make_point(m, method="sensitivity", params=params, stage="sensitivity",
                                               checkpoint=cfg.checkpoint, layer=path, ratio=ratio,
                                               accuracy_drop=base.accuracy - m.accuracy)))
            ctx.progress(Progress((i * len(cfg.ratios) + j + 1) / total, f"{path} at {ratio:g}",
                                  metrics={"accuracy": m.accuracy}))
    return points


def _log(ctx: RunContext, point: dict) -> dict:
    ctx.log_point(point)
    return point
