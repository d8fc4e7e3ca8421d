"""Layer-wise L1 unstructured pruning (Han et al. 2015, "Learning both Weights and Connections for
Efficient Neural Networks"; seed 002): every Conv and Linear loses the same fraction of its
smallest-magnitude weights. A sweep over sparsities with repeats (engine/methods/prune/unstructured.py)."""

from __future__ import annotations

from engine.core.context import RunContext
from engine.core.point import Point
from engine.methods.prune.common import prune_method
from engine.methods.prune.unstructured import UnstructuredConfig, unstructured_sweep


@prune_method("l1_unstructured", UnstructuredConfig,
              "zero the smallest weights of every layer to the same sparsity; a sweep with repeats")
def l1_unstructured(cfg: UnstructuredConfig, ctx: RunContext) -> list[Point]:
    return unstructured_sweep(cfg, ctx, "layer", "l1_unstructured")
