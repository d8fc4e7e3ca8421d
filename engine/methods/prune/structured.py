"""Structured pruning: remove whole channels and filters, so the model is really smaller and faster.

Channels are scored by filter norm (L1/L2, Li et al. 2017, "Pruning Filters for Efficient
ConvNets") or BatchNorm scale (Liu et al. 2017, "Network Slimming") and cut by Torch-Pruning over
its dependency graph (Fang et al. 2023, "DepGraph: Towards Any Structural Pruning"). One ratio for
every layer (swept like the unstructured levels: level_name `channel_ratio`), or a ratio per named
layer. The pruned model is saved with layer_shapes="shape" so it reloads from its tensor shapes,
without pickling.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from engine.core.config import check_range, param
from engine.core.context import RunContext
from engine.core.point import Point
from engine.methods.prune.channels import first_conv, plan_channels, prune_channels
from engine.methods.prune.common import claim, open_for_pruning, prune_method
from engine.methods.prune.importance import CHANNEL_IMPORTANCE
from engine.methods.prune.schedule import DEFAULT_LEVELS, check_levels
from engine.methods.prune.sweep import SweepConfig, Variant, run_sweep


@dataclass
class StructuredConfig(SweepConfig):
    ratios: tuple[float, ...] | None = param(
        None, "fractions of channels removed from every layer, one point each (default 0,0.1,...,0.9; only 0 "
              "when layer_ratios names layers)", flag="sparsity")
    layer_ratios: dict[str, float] = param(default_factory=dict, help="module path -> ratio for the named layers "
                                           "instead of the swept one, e.g. features.1.0.0=0.5")
    importance: str = param("l1", "channel score: l1, l2 (filter norm) or bn (BatchNorm scale)",
                            choices=CHANNEL_IMPORTANCE)
    keep_first_last: bool = param(False, "also keep the first conv's channels (the classifier's outputs always stay)")

    def validate(self) -> None:
        super().validate()
        check_levels("ratio", self.levels())
        for path, r in self.layer_ratios.items():
            check_range(f"ratio of layer '{path}'", r, 0, 1, hi_open=True)

    def levels(self) -> tuple[float, ...]:
        if self.ratios is not None:
            return self.ratios
        return (0.0,) if self.layer_ratios else DEFAULT_LEVELS


@prune_method("structured", StructuredConfig,
              "remove whole channels (Torch-Pruning, residual and concat aware); a sweep with repeats")
def structured(cfg: StructuredConfig, ctx: RunContext) -> list[Point]:
    with claim(cfg, "structured") as root:
        model, meta, data, classifier = open_for_pruning(cfg)
        example = data.test.tensors()[0][:1]
        keep = (classifier, first_conv(model)) if cfg.keep_first_last else (classifier,)
        options = {"importance": cfg.importance, "layer_ratios": cfg.layer_ratios, "keep": keep, "arch": meta.arch}
        # refuse a bad ratio before spending time on the levels below it
        plan_channels(copy.deepcopy(model), example, ratio=max(cfg.levels()), **options)
        channels_before = _channels(model, classifier)

        def variant(level: float) -> Variant:
            m = copy.deepcopy(model)
            pruned = level > 0 or bool(cfg.layer_ratios)
            if pruned:
                prune_channels(m, example, ratio=level, **options)
            return Variant(m, None, pruned, {"importance": cfg.importance,
                                             "channels_kept": _channels(m, classifier) / channels_before})

        return run_sweep(ctx, cfg, method="structured", meta=meta, data=data, classifier=classifier, root=root,
                         levels=cfg.levels(), level_name="channel_ratio", levels_field="ratios",
                         make_variant=variant, same_runner=False, by_shape=True)


def _channels(model: nn.Module, classifier: str) -> int:
    """Output channels of every Conv2d and hidden Linear (a transformer's MLP and attention layers), summed;
    the classifier's outputs are the classes and never change."""
    return sum(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for name, m in model.named_modules()
               if isinstance(m, nn.Conv2d | nn.Linear) and name != classifier)
