"""Unstructured magnitude pruning, layer-wise L1 or global (Han et al. 2015, "Learning both Weights
and Connections for Efficient Neural Networks"; seed 002's L1 unstructured pruning).

`l1_unstructured` prunes every Conv and Linear to the same sparsity; `global_unstructured` ranks
all of them together under one magnitude threshold. The two are one method with a scope parameter.
Weights are zeroed, not removed: the model keeps its dense shapes, so size shrinks only in a sparse
format (engine.measure's size_bytes) and latency on dense hardware stays about the same.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from engine.config import check_range
from engine.context import RunContext
from engine.prune.common import PruneTask, candidate_layers, open_for_pruning
from engine.prune.finetune import FinetuneConfig
from engine.prune.importance import weight_magnitudes
from engine.prune.masks import apply_masks, mask_sparsity, rank
from engine.prune.schedule import DEFAULT_LEVELS, check_levels
from engine.prune.sweep import Variant, run_sweep
from engine.tasks import register_task


@dataclass
class UnstructuredConfig(PruneTask):
    sparsities: tuple[float, ...] = DEFAULT_LEVELS  # fractions of weights zeroed, one point each
    keep_first_last: bool = False  # leave the first conv and the classifier dense
    repeats: int = 1  # runs per level, seeds seed .. seed+repeats-1 (mean +- std)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def validate(self) -> None:
        super().validate()
        check_levels("sparsity", self.sparsities)
        check_range("repeats", self.repeats, 1, 1000)


def unstructured_sweep(cfg: UnstructuredConfig, ctx: RunContext, scope: str, method: str) -> list[dict]:
    model, meta, data, classifier = open_for_pruning(cfg)
    layers = candidate_layers(model, classifier, cfg.keep_first_last)
    ranking = rank([n for n, _ in layers], weight_magnitudes(layers), scope)  # sorted once for every level
    ctx.log_event(f"{method}: ranked {sum(m.weight.numel() for _, m in layers):,} weights in {len(layers)} layers "
                  f"once for {len(cfg.sparsities)} levels")

    def variant(level: float) -> Variant:
        m = copy.deepcopy(model)
        masks = ranking.masks(level)
        apply_masks(m, masks)
        extra = {"scope": scope, "target_sparsity": level, "pruned_layer_sparsity": mask_sparsity(masks),
                 "layer_sparsity": {n: float((~k).float().mean()) for n, k in masks.items()}}
        if scope == "global":
            t = ranking.thresholds(level)["*"]
            extra["threshold"] = t if t == t else None  # NaN (nothing pruned) is not JSON
        return m, masks, extra

    return run_sweep(ctx, cfg, method=method, model=model, meta=meta, data=data, classifier=classifier,
                     levels=cfg.sparsities, level_field="sparsities", level_key="sparsity",
                     make_variant=variant, same_runner=True, by_shape=False)


@register_task("prune.l1_unstructured", UnstructuredConfig,
               "zero the smallest weights of every layer to the same sparsity; a sweep with repeats")
def l1_unstructured(cfg: UnstructuredConfig, ctx: RunContext) -> list[dict]:
    return unstructured_sweep(cfg, ctx, "layer", "l1_unstructured")


@register_task("prune.global_unstructured", UnstructuredConfig,
               "zero the smallest weights under one threshold across all layers; a sweep with repeats")
def global_unstructured(cfg: UnstructuredConfig, ctx: RunContext) -> list[dict]:
    return unstructured_sweep(cfg, ctx, "global", "global_unstructured")
