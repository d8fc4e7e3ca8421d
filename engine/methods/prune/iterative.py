"""Iterative magnitude pruning: prune, fine-tune, repeat (Han et al. 2015, "Learning both Weights and
Connections for Efficient Neural Networks"), as in seed 000's Table III (iteration, global
sparsity, accuracy). The sparsity grows geometrically, 1 - (1 - rate)^i, or follows a schedule.

Each step ranks the current weights (those pruned earlier rank first, so masks only grow), zeroes
the smallest, and fine-tunes with the masks held fixed. Every iteration is a `step` point whose
level is the global sparsity reached; iteration 0 is the unpruned input (its artifact is the input
checkpoint), iteration i is saved as root/iteration-i. Iteration i fine-tunes with seed seed + i.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.point import Point
from engine.core.progress import Progress, scaled
from engine.deploy.measure import measure, measure_latency
from engine.methods.prune.common import (
    PruneTask,
    candidate_layers,
    claim,
    open_for_pruning,
    point_params,
    prune_method,
    pruning_point,
    save_pruned,
)
from engine.methods.prune.finetune import FinetuneConfig, finetune
from engine.methods.prune.importance import weight_magnitudes
from engine.methods.prune.masks import SCOPES, apply_masks, rank
from engine.methods.prune.schedule import check_schedule, geometric
from engine.methods.prune.sweep import shared_latency_note
from engine.model.outputs import level_dir
from engine.model.zoo import get_module


@dataclass
class IterativeConfig(PruneTask):
    scope: str = param("global", "rank all layers under one threshold (global) or each layer alone (layer)",
                       choices=SCOPES)
    rate: float = param(0.2, "fraction of the remaining weights removed at each iteration", lo=0, hi=1,
                        lo_open=True, hi_open=True)
    iterations: int = param(4, "how many prune + fine-tune steps", lo=1, hi=1000)
    schedule: tuple[float, ...] = param((), "sparsity after each iteration, strictly increasing; when given it "
                                            "replaces rate and iterations (default none)", flag="sparsity")
    keep_first_last: bool = param(False, "leave the first conv and the classifier dense")
    finetune: FinetuneConfig = param(default_factory=lambda: FinetuneConfig(mode="all"))

    def validate(self) -> None:
        super().validate()
        if self.schedule:
            check_schedule(self.schedule)

    def targets(self) -> list[float]:
        return list(self.schedule) or geometric(self.rate, self.iterations)


@prune_method("iterative", IterativeConfig,
              "prune a fraction of the remaining weights, fine-tune, repeat; one point per iteration")
def iterative(cfg: IterativeConfig, ctx: RunContext) -> list[Point]:
    with claim(cfg, "iterative") as root:
        model, meta, data, classifier = open_for_pruning(cfg)
        names = [n for n, _ in candidate_layers(model, classifier, cfg.keep_first_last)]
        targets = cfg.targets()
        latency = measure_latency(model, data.test.tensors()[0][:32]) if cfg.latency else False
        params = point_params(cfg)
        masks = None
        points = []
        for i, target in enumerate([0.0, *targets]):
            ctx.cancel.raise_if_cancelled()
            if i > 0:
                layers = [(n, get_module(model, n)) for n in names]
                masks = rank(names, weight_magnitudes(layers, masks), cfg.scope).masks(target)
                apply_masks(model, masks)
                finetune(model, data, cfg.finetune, classifier=classifier, masks=masks,
                         seed=cfg.finetune.train.seed + i,
                         progress=scaled(ctx.progress, (i - 1) / len(targets), i / len(targets)), cancel=ctx.cancel)
            m = measure(model, data, latency=latency)
            if root is None:
                artifact = ""
            elif i == 0:
                artifact = cfg.checkpoint  # the input model untouched: nothing to copy
            else:
                artifact = save_pruned(ctx, root, level_dir("iteration", i), model, meta, cfg, method="iterative",
                                       params=params, level=m.sparsity, level_name="sparsity")
            points.append(pruning_point(
                ctx, m, cfg, method="iterative", stage="step", params=params, level=m.sparsity,
                level_name="sparsity", artifact=artifact, iteration=i, target_sparsity=target, scope=cfg.scope,
                latency_note=shared_latency_note("unpruned") if cfg.latency else "not timed"))
            ctx.progress(Progress(i / len(targets), f"iteration {i}/{len(targets)}: sparsity {m.sparsity:.3f}",
                                  metrics={"accuracy": m.accuracy, "sparsity": m.sparsity}))
        return points
