"""Sparsity sweeps as in seed 002 (Malihi & Heidemann 2023, "Efficient and Controllable Model
Compression through Sequential Knowledge Distillation and Pruning"): every level is pruned once,
then fine-tuned and measured R times with seeds seed .. seed+R-1, and reported as mean +- std.

What is deterministic is done once per level (the ranking, the masks, the channel cut); what a
seed changes (the fine-tuning order) and the measurement are repeated. Latency is timed once per
distinct deployed model: a structured cut changes the model, so each level is timed; unstructured
masks only write zeros into the same dense layers, so one timing serves the whole sweep.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from collections.abc import Callable

from torch import Tensor, nn

from engine.checkpoint import CheckpointMeta
from engine.context import RunContext
from engine.data import Dataset
from engine.measure import Measurement, measure, measure_latency
from engine.progress import Progress, scaled
from engine.prune.common import DETERMINISTIC_NOTE, PruneTask, point_params, save_variant
from engine.prune.finetune import finetune, head_inputs
from engine.tasks import make_point

# a level's pruned model, its masks (None after a structural cut) and extra keys for its point
Variant = tuple[nn.Module, dict[str, Tensor] | None, dict]



def shared_latency_note(timed_on: str) -> str:
    return (f"timed once, on the {timed_on} model: unstructured zeros run through the same dense kernels, "
            f"so sparsity does not make it faster and every point shares that one timing")


STRUCTURED_LATENCY_NOTE = "timed on this level's model: channels were removed, so it is a different, smaller model"


def std(values: list[float]) -> float:
    """Sample standard deviation; 0 for a single run."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_of_runs(runs: list[Measurement]) -> Measurement:
    """Accuracy, top-5 and loss averaged; the rest (same masks, same structure) from the first run."""
    return dataclasses.replace(runs[0], **{k: statistics.fmean(getattr(r, k) for r in runs)
                                           for k in ("accuracy", "top5", "loss")})


def spread_of_runs(runs: list[Measurement]) -> dict:
    acc = [r.accuracy for r in runs]
    return {"accuracy_std": std(acc), "top5_std": std([r.top5 for r in runs]),
            "loss_std": std([r.loss for r in runs]), "accuracy_runs": acc}


def run_sweep(ctx: RunContext, cfg: PruneTask, *, method: str, model: nn.Module, meta: CheckpointMeta,
              data: Dataset, classifier: str, levels: tuple[float, ...], level_field: str, level_key: str,
              make_variant: Callable[[float], Variant], same_runner: bool, by_shape: bool) -> list[dict]:
    """Prunes, fine-tunes (cfg.finetune) and measures every level cfg.repeats times; one point per level."""
    repeats = cfg.repeats
    total = len(levels) * repeats
    deterministic = cfg.finetune.mode == "none"
    example = data.test.tensors()[0][:32]
    shared_latency: dict | None = None
    points = []
    for i, level in enumerate(levels):
        ctx.cancel.raise_if_cancelled()
        ctx.progress(Progress(i * repeats / total, f"{level_key} {level:g}: pruning"))
        variant, masks, extra = make_variant(level)
        latency: bool | dict = False
        if cfg.latency:
            if same_runner and shared_latency is not None:
                latency = shared_latency
            else:
                latency = measure_latency(variant, example)
                shared_latency = latency
        features = head_inputs(variant, data, cfg.finetune, classifier)  # the same frozen body for every repeat
        runs, first = [], variant
        for r in range(repeats):
            ctx.cancel.raise_if_cancelled()
            done = i * repeats + r
            m = variant if deterministic else copy.deepcopy(variant)  # measuring does not change a model
            finetune(m, data, cfg.finetune, classifier=classifier, masks=masks, seed=cfg.seed + r,
                     progress=scaled(ctx.progress, done / total, (done + 1) / total), cancel=ctx.cancel,
                     features=features)
            runs.append(measure(m, data, latency=latency))
            first = m if r == 0 else first
            ctx.progress(Progress((done + 1) / total, f"{level_key} {level:g}: repeat {r + 1}/{repeats}",
                                  metrics={"accuracy": runs[-1].accuracy}))
        params = point_params(cfg, drop=(level_field,), **{level_key: level})
        artifact = save_variant(first, meta, cfg, f"{method}-{level_key}{level:.3f}", method=method, params=params,
                                by_shape=by_shape)
        point = make_point(
            mean_of_runs(runs), method=method, params=params, stage="pruned", artifact=artifact,
            checkpoint=cfg.checkpoint, level=level, repeats=repeats, seeds=[cfg.seed + r for r in range(repeats)],
            **spread_of_runs(runs), deterministic=deterministic, note=DETERMINISTIC_NOTE if deterministic else "",
            latency_note=(shared_latency_note("first level's") if same_runner else STRUCTURED_LATENCY_NOTE) if cfg.latency
            else "not timed", **extra)
        ctx.log_point(point)
        points.append(point)
    return points
