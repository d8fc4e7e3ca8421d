"""What the two unstructured magnitude methods share (Han et al. 2015, "Learning both Weights and
Connections for Efficient Neural Networks"; seed 002's L1 unstructured pruning): their config and
their sweep. `l1_unstructured.py` prunes every layer to the same sparsity, `global_unstructured.py`
ranks all layers under one threshold; each is its own method file, this one registers nothing.

Weights are zeroed, not removed: the model keeps its dense shapes, so size shrinks only in a sparse
format (engine.deploy.measure's size_bytes) and latency on dense hardware stays about the same.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.point import Point
from engine.methods.prune.common import candidate_layers, claim, open_for_pruning
from engine.methods.prune.importance import weight_magnitudes
from engine.methods.prune.masks import apply_masks, mask_sparsity, rank
from engine.methods.prune.schedule import DEFAULT_LEVELS, check_levels
from engine.methods.prune.sweep import SweepConfig, Variant, run_sweep


@dataclass
class UnstructuredConfig(SweepConfig):
    sparsities: tuple[float, ...] = param(DEFAULT_LEVELS, "fractions of weights zeroed, one point each, e.g. "
                                                          "0,0.1,...,0.9", flag="sparsity")
    keep_first_last: bool = param(False, "leave the first conv and the classifier dense")

    def validate(self) -> None:
        super().validate()
        check_levels("sparsity", self.sparsities)


Score = Callable[[list[tuple[str, nn.Module]]], list[Tensor]]  # one score per weight of each layer


def unstructured_sweep(cfg: UnstructuredConfig, ctx: RunContext, scope: str, method: str,
                       score: Score = weight_magnitudes) -> list[Point]:
    """Ranks the weights by `score` once (per layer or globally), then sweeps cfg.sparsities: the
    lowest-scoring weights are zeroed."""
    with claim(cfg, method) as root:
        model, meta, data, classifier = open_for_pruning(cfg)
        layers = candidate_layers(model, classifier, cfg.keep_first_last)
        ranking = rank([n for n, _ in layers], score(layers), scope)  # sorted once for every level
        ctx.log_event(f"{method}: ranked {sum(m.weight.numel() for _, m in layers):,} weights in {len(layers)} "
                      f"layers once for {len(cfg.sparsities)} levels")

        def variant(level: float) -> Variant:
            m = copy.deepcopy(model)
            masks = ranking.masks(level)
            apply_masks(m, masks)
            extra = {"scope": scope, "pruned_layer_sparsity": mask_sparsity(masks),
                     "layer_sparsity": {n: float((~k).float().mean()) for n, k in masks.items()}}
            if scope == "global":
                t = ranking.thresholds(level)["*"]
                extra["threshold"] = t if t == t else None  # NaN (nothing pruned) is not JSON
            return Variant(m, masks, pruned=level > 0, extra=extra)

        return run_sweep(ctx, cfg, method=method, meta=meta, data=data, classifier=classifier, root=root,
                         levels=cfg.sparsities, level_name="sparsity", levels_field="sparsities",
                         make_variant=variant, same_runner=True, by_shape=False)
