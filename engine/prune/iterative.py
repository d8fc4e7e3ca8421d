"""Iterative magnitude pruning: prune, fine-tune, repeat (Han et al. 2015, "Learning both Weights and
Connections for Efficient Neural Networks"), as in seed 000's Table III (iteration, global
sparsity, accuracy). The sparsity grows geometrically, 1 - (1 - rate)^i, or follows a schedule.

Each step ranks the current weights (those pruned earlier rank first, so masks only grow), zeroes
the smallest, and fine-tunes with the masks held fixed. Iteration 0 is the unpruned model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.config import check_choice
from engine.context import RunContext
from engine.measure import measure, measure_latency
from engine.models import get_module
from engine.progress import Progress, scaled
from engine.prune.common import PruneTask, candidate_layers, open_for_pruning, point_params, save_variant
from engine.prune.finetune import FinetuneConfig, finetune
from engine.prune.importance import weight_magnitudes
from engine.prune.masks import SCOPES, apply_masks, rank
from engine.prune.schedule import check_schedule, geometric
from engine.prune.sweep import shared_latency_note
from engine.tasks import make_point, register_task


@dataclass
class IterativeConfig(PruneTask):
    scope: str = "global"  # global (one threshold across layers) | layer (same sparsity in every layer)
    rate: float = 0.2  # fraction of the remaining weights removed at each iteration
    iterations: int = 4  # how many prune + fine-tune steps
    schedule: tuple[float, ...] = ()  # sparsity after each iteration; when given, replaces rate/iterations
    keep_first_last: bool = False  # leave the first conv and the classifier dense
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(mode="all"))

    def validate(self) -> None:
        super().validate()
        check_choice("scope", self.scope, SCOPES)
        if self.schedule:
            check_schedule(self.schedule)
        else:
            geometric(self.rate, self.iterations)  # validates rate and iterations

    def targets(self) -> list[float]:
        return list(self.schedule) or geometric(self.rate, self.iterations)


@register_task("prune.iterative", IterativeConfig,
               "prune a fraction of the remaining weights, fine-tune, repeat; one point per iteration")
def iterative(cfg: IterativeConfig, ctx: RunContext) -> list[dict]:
    model, meta, data, classifier = open_for_pruning(cfg)
    names = [n for n, _ in candidate_layers(model, classifier, cfg.keep_first_last)]
    targets = cfg.targets()
    latency = measure_latency(model, data.test.tensors()[0][:32]) if cfg.latency else False
    masks = None
    points = []
    for i, target in enumerate([0.0, *targets]):
        ctx.cancel.raise_if_cancelled()
        if i > 0:
            layers = [(n, get_module(model, n)) for n in names]
            masks = rank(names, weight_magnitudes(layers, masks), cfg.scope).masks(target)
            apply_masks(model, masks)
            finetune(model, data, cfg.finetune, classifier=classifier, masks=masks, seed=cfg.seed + i,
                     progress=scaled(ctx.progress, (i - 1) / len(targets), i / len(targets)), cancel=ctx.cancel)
        m = measure(model, data, latency=latency)
        params = point_params(cfg, iteration=i, target_sparsity=target)
        artifact = save_variant(model, meta, cfg, f"iterative-{i}", method="iterative", params=params,
                                by_shape=False) if i > 0 else None
        point = make_point(m, method="iterative", params=params, stage="iteration", artifact=artifact,
                           checkpoint=cfg.checkpoint, iteration=i, target_sparsity=target, scope=cfg.scope,
                           latency_note=shared_latency_note("unpruned")
                           if cfg.latency else "not timed")
        ctx.log_point(point)
        points.append(point)
        ctx.progress(Progress(i / len(targets), f"iteration {i}/{len(targets)}: sparsity {m.sparsity:.3f}",
                              metrics={"accuracy": m.accuracy, "sparsity": m.sparsity}))
    return points
