"""Per-layer sensitivity: the accuracy when one layer at a time is pruned, at several ratios
(Li et al. 2017, "Pruning Filters for Efficient ConvNets", Fig. 2; Han et al. 2015, Fig. 5).

Unstructured by default: zero the smallest weights of that layer only (its magnitudes sorted once
for every ratio). With `structured`, remove that layer's channels with Torch-Pruning instead; a
layer coupled to others (a residual sum) loses those channels in the whole coupled group.

Points: the dense model is the `baseline` (level 0, layer null); every layer and ratio is a
`variant` with level = the ratio (level_name `sparsity`, or `channel_ratio` with structured) and
`layer` and `accuracy_drop` beside it. Models are saved only with --save (root/<layer>/<level>):
a scan makes one per layer and ratio, so saving, like timing, is off by default.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Point
from engine.core.progress import Progress
from engine.deploy.measure import measure, prunable_weights
from engine.methods.prune.channels import prune_channels
from engine.methods.prune.common import (
    PruneTask,
    claim,
    open_for_pruning,
    point_params,
    prune_method,
    pruning_point,
    save_pruned,
)
from engine.methods.prune.importance import CHANNEL_IMPORTANCE, weight_magnitudes
from engine.methods.prune.masks import apply_masks, rank
from engine.methods.prune.schedule import check_levels
from engine.model.outputs import level_dir, safe_name
from engine.model.zoo import get_module


@dataclass
class SensitivityConfig(PruneTask):
    ratios: tuple[float, ...] = param((0.25, 0.5, 0.75, 0.9), "sparsity (or channel ratio with structured) tried on "
                                                              "each layer", flag="sparsity")
    layers: tuple[str, ...] = param((), "module paths to scan (default every Conv and Linear)")
    structured: bool = param(False, "remove the layer's channels instead of zeroing its smallest weights")
    importance: str = param("l1", "structured only: channel score l1, l2 (filter norm) or bn (BatchNorm scale)",
                            choices=CHANNEL_IMPORTANCE)
    latency: bool = param(False, "time every point (one per layer and ratio: slow, so off by default)", role="runner")
    save: bool = param(False, "save every layer-and-ratio model as a checkpoint (many directories, so off by "
                              "default)", role="runner")

    def validate(self) -> None:
        super().validate()
        check_levels("ratio", self.ratios)


@prune_method("sensitivity", SensitivityConfig,
              "prune one layer at a time at several ratios and report the accuracy of each")
def sensitivity(cfg: SensitivityConfig, ctx: RunContext) -> list[Point]:
    with claim(cfg, "sensitivity") as root:
        return _scan(cfg, ctx, root)


def _scan(cfg: SensitivityConfig, ctx: RunContext, root: Path | None) -> list[Point]:
    model, meta, data, classifier = open_for_pruning(cfg)
    layers = [(p, get_module(model, p)) for p in cfg.layers] if cfg.layers else prunable_weights(model)
    for path, m in layers:
        if not isinstance(m, nn.Conv2d | nn.Linear):
            raise ConfigError(f"layer '{path}' is a {type(m).__name__}; sensitivity scans Conv2d and Linear layers")
    if cfg.structured:  # the classifier's outputs are the classes: its channels cannot go
        layers = [(p, m) for p, m in layers if p != classifier]
    level_name = "channel_ratio" if cfg.structured else "sparsity"
    params = point_params(cfg, drop=("ratios", "layers"))
    base = measure(model, data, latency=cfg.latency)
    points = [pruning_point(ctx, base, cfg, method="sensitivity", stage="baseline", params=params, level=0.0,
                            level_name=level_name, artifact=cfg.checkpoint if root else "", layer=None,
                            accuracy_drop=0.0)]
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
            else:
                variant = model
                apply_masks(model, ranking.masks(ratio))
            m = measure(variant, data, latency=cfg.latency)
            artifact = save_pruned(ctx, root, f"{safe_name(path)}/{level_dir(level_name, ratio)}", variant, meta, cfg,
                                   method="sensitivity", params={**params, "layer": path}, level=ratio,
                                   level_name=level_name, by_shape=cfg.structured)
            if not cfg.structured:
                with torch.no_grad():
                    layer.weight.copy_(original)
            points.append(pruning_point(ctx, m, cfg, method="sensitivity", stage="variant", params=params,
                                        level=ratio, level_name=level_name, artifact=artifact, layer=path,
                                        accuracy_drop=base.accuracy - m.accuracy))
            ctx.progress(Progress((i * len(cfg.ratios) + j + 1) / total, f"{path} at {ratio:g}",
                                  metrics={"accuracy": m.accuracy}))
    return points
