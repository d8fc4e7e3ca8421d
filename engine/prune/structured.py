"""Structured pruning: remove whole channels and filters, so the model is really smaller and faster.

Channels are scored by filter norm (L1/L2, Li et al. 2017, "Pruning Filters for Efficient
ConvNets") or BatchNorm scale (Liu et al. 2017, "Network Slimming") and cut by Torch-Pruning over
its dependency graph (Fang et al. 2023, "DepGraph: Towards Any Structural Pruning"). One ratio for
every layer (swept like the unstructured levels), or a ratio per named layer. The pruned model is
saved with layer_shapes="shape" so it reloads from its tensor shapes, without pickling.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from engine.config import check_choice, check_range
from engine.context import RunContext
from engine.prune.channels import first_conv, plan_channels, prune_channels
from engine.prune.common import PruneTask, open_for_pruning
from engine.prune.finetune import FinetuneConfig
from engine.prune.importance import CHANNEL_IMPORTANCE
from engine.prune.schedule import DEFAULT_LEVELS, check_levels
from engine.prune.sweep import Variant, run_sweep
from engine.tasks import register_task


@dataclass
class StructuredConfig(PruneTask):
    ratios: tuple[float, ...] = DEFAULT_LEVELS  # fraction of channels removed from every layer, one point each
    layer_ratios: dict[str, float] = field(default_factory=dict)  # module path -> ratio, instead of `ratios` there
    importance: str = "l1"  # l1 | l2 (filter norm) | bn (BatchNorm scale)
    keep_first_last: bool = False  # also keep the first conv's channels (the classifier's outputs always stay)
    repeats: int = 1  # runs per level, seeds seed .. seed+repeats-1 (mean +- std)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def validate(self) -> None:
        super().validate()
        check_levels("ratio", self.ratios)
        for path, r in self.layer_ratios.items():
            check_range(f"ratio of layer '{path}'", r, 0, 1, hi_open=True)
        check_choice("importance", self.importance, CHANNEL_IMPORTANCE)
        check_range("repeats", self.repeats, 1, 1000)


@register_task("prune.structured", StructuredConfig,
               "remove whole channels (Torch-Pruning, residual and concat aware); a sweep with repeats")
def structured(cfg: StructuredConfig, ctx: RunContext) -> list[dict]:
    model, meta, data, classifier = open_for_pruning(cfg)
    example = data.test.tensors()[0][:1]
    keep = (classifier, first_conv(model)) if cfg.keep_first_last else (classifier,)
    options = {"importance": cfg.importance, "layer_ratios": cfg.layer_ratios, "keep": keep, "arch": meta.arch}
    # refuse a bad ratio before spending time on the levels below it
    plan_channels(copy.deepcopy(model), example, ratio=max(cfg.ratios), **options)
    channels_before = _channels(model)

    def variant(level: float) -> Variant:
        m = copy.deepcopy(model)
        if level > 0 or cfg.layer_ratios:
            prune_channels(m, example, ratio=level, **options)
        return m, None, {"channel_ratio": level, "importance": cfg.importance,
                         "channels_kept": _channels(m) / channels_before}

    return run_sweep(ctx, cfg, method="structured", model=model, meta=meta, data=data, classifier=classifier,
                     levels=cfg.ratios, level_field="ratios", level_key="ratio", make_variant=variant,
                     same_runner=False, by_shape=True)


def _channels(model: nn.Module) -> int:
    """Output channels of every Conv2d, summed."""
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
