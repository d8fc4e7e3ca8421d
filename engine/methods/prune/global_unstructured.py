"""Global magnitude pruning (Han et al. 2015, "Learning both Weights and Connections for Efficient
Neural Networks"): all Conv and Linear weights are ranked together under one threshold, so layers
end at different sparsities. A sweep over sparsities with repeats (engine/methods/prune/unstructured.py)."""

from __future__ import annotations

from engine.core.context import RunContext
from engine.core.point import Point
from engine.methods.prune.common import prune_method
from engine.methods.prune.unstructured import UnstructuredConfig, unstructured_sweep


@prune_method("global_unstructured", UnstructuredConfig,
              "zero the smallest weights under one threshold across all layers; a sweep with repeats")
def global_unstructured(cfg: UnstructuredConfig, ctx: RunContext) -> list[Point]:
    return unstructured_sweep(cfg, ctx, "global", "global_unstructured")
