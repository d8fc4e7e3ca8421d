"""Sparsity sweeps as in seed 002 (Malihi & Heidemann 2023, "Efficient and Controllable Model
Compression through Sequential Knowledge Distillation and Pruning"): every level is pruned once,
then fine-tuned and measured R times with seeds seed .. seed+R-1, and reported as mean +- std.

What is deterministic is done once per level (the ranking, the masks, the channel cut); what a
seed changes (the fine-tuning order) and the measurement are repeated. Latency is timed once per
distinct deployed model: a structured cut changes the model, so each level is timed; unstructured
masks only write zeros into the same dense layers, so one timing serves the whole sweep.

Points: one per level. An unpruned level (level 0) is the sweep's `baseline`, the others are
`variant`s. Each level's model is saved as root/<level_name>-<level> (engine.model.outputs.level_dir),
except a level that is the input model untouched (level 0 without fine-tuning): its artifact is the
input checkpoint itself, nothing is copied. With repeats and fine-tuning every repeat is a
different model but one directory is kept per level: repeat 0's model. Its accuracy is
`accuracy_runs[0]` (the point's `accuracy` is the mean), and the point says so with
`artifact_repeat: 0`; the metrics other than accuracy, top-5 and loss are repeat 0's as well.

Evaluation that scales (`eval_samples`, `device`): with `eval_samples` > 0 every level is scored on one seeded
random subset of the test split (engine.model.evaluation.eval_indices, drawn with the fine-tuning seed, the same
images at every level and repeat), and its point says so: `eval_samples` (the images scored), `test_samples`,
`eval_subset: true`, `accuracy_lo` / `accuracy_hi` (the 95 % Wilson interval of the accuracy on that many
images, engine.core.intervals) and `eval_note`. The *reported* points are measured on the whole split as well:
the sweep's first level (its reference: the baseline when the levels start at 0), every unpruned level, its
last level (the most compressed the user asked for) and its breakpoints. A breakpoint is found on the finished
curve by the detectors of engine/analysis/breakpoint.py (every detector at its defaults, x the remaining
parameters, as `python -m engine breakpoint` and the Breakpoints page show first); analysis is a later layer
that a method cannot import, so the run layer hands its finder over when it is imported
(`add_breakpoint_finder`, as engine.core.point.add_family_finder does for families). Each subset level's
models (one per repeat) are kept until then; a breakpoint scored on the subset is measured again on the whole
split, and the detectors run again on the corrected curve until every breakpoint they report is a whole-split
figure (at most once per level). Until the breakpoints are known the points are held back: they are logged in
level order when the sweep ends (or stops: what was measured so far is logged as it is). A reported point's
`accuracy` is the whole split's, its `subset_accuracy` the subset's, so the two can be compared; a breakpoint
also says `breakpoint_remeasured: true`. Without a finder (engine.run not imported) breakpoints stay subset
figures, and the run says so. `eval_samples` at or above the split's size evaluates the whole split and says
so in `eval_note`. `device` (auto: the GPU when present) runs the evaluation forwards there; every point
records `eval_device`. A GPU gives the same accuracy as the CPU up to float rounding; latency is always timed
on the CPU, and fine-tuning takes the GPU when present (engine.model.train).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.intervals import accuracy_interval
from engine.core.point import Measurement, Point
from engine.core.progress import Progress, scaled
from engine.deploy.measure import measure, measure_latency
from engine.methods.prune.common import (
    DETERMINISTIC_NOTE,
    PruneTask,
    point_params,
    pruning_point,
    save_pruned,
)
from engine.methods.prune.finetune import FinetuneConfig, finetune, head_inputs
from engine.model.checkpoint import CheckpointMeta
from engine.model.data import Dataset
from engine.model.evaluation import DEVICES, choose_device, subset_split
from engine.model.outputs import level_dir


@dataclass
class SweepConfig(PruneTask):
    """What every sweep has besides its levels: repeats and fine-tuning."""

    repeats: int = param(1, "runs per level, reported as mean +- std; repeat r fine-tunes with seed + r",
                         lo=1, hi=1000)
    finetune: FinetuneConfig = param(default_factory=FinetuneConfig)
    eval_samples: int = param(0, "score each level on a seeded random subset of this many test images, with its 95 % "
                                 "interval; the first, unpruned and last levels are also measured on the whole split "
                                 "(0 = every level on the whole split)", lo=0, hi=10_000_000)
    device: str = param("auto", "where evaluation runs: auto (the GPU when present, else the CPU), cpu or cuda",
                        choices=DEVICES, role="runner")

    @property
    def deterministic(self) -> bool:
        """One-shot pruning without fine-tuning: every repeat builds and measures the same model."""
        return self.finetune.mode == "none"


@dataclass
class Variant:
    """One level's pruned model, before fine-tuning."""

    model: nn.Module
    masks: dict[str, Tensor] | None  # the pruned positions to hold at zero; None after a structural cut
    pruned: bool  # False: nothing was removed (the sweep's baseline)
    extra: dict = dataclasses.field(default_factory=dict)  # method-specific keys for the point


def shared_latency_note(timed_on: str) -> str:
    return (f"timed once, on the {timed_on} model: unstructured zeros run through the same dense kernels, "
            f"so sparsity does not make it faster and every point shares that one timing")


STRUCTURED_LATENCY_NOTE = "timed on this level's model: channels were removed, so it is a different, smaller model"


def std(values: list[float]) -> float:
    """Sample standard deviation; 0 for a single run."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_of_runs(runs: list[Measurement]) -> Measurement:
    """Accuracy, top-5 and loss averaged; confusion matrices summed (so its trace / total is the mean
    accuracy, and per-class accuracy the mean over repeats); the rest (same masks, same structure) from the first run."""
    matrices = [r.confusion for r in runs]
    confusion = ([[sum(cells) for cells in zip(*rows, strict=True)] for rows in zip(*matrices, strict=True)]
                 if all(m is not None for m in matrices) else None)
    return dataclasses.replace(runs[0], confusion=confusion, **{k: statistics.fmean(getattr(r, k) for r in runs)
                                                                for k in ("accuracy", "top5", "loss")})


# Which levels a sweep reports as breakpoints, given its points as flat dicts (Point.to_dict), in level order:
# engine.analysis.breakpoint.reported_levels, installed by the run layer (engine/run/__init__.py).
BreakpointFinder = Callable[[list[dict]], list[float]]
_BREAKPOINT_FINDERS: list[BreakpointFinder] = []


def add_breakpoint_finder(find: BreakpointFinder) -> None:
    """Lets sweeps find their breakpoints with `find` (the last one added is used)."""
    if find not in _BREAKPOINT_FINDERS:
        _BREAKPOINT_FINDERS.append(find)


@dataclass
class Held:
    """A level scored on the subset, kept until the sweep's breakpoints are known."""

    models: list[nn.Module]  # its fine-tuned models, one per repeat (the same one each time when deterministic)
    latency: bool | dict  # its timing, reused when it is measured again
    extra: dict  # the variant's method-specific keys
    artifact: str


def run_sweep(ctx: RunContext, cfg: SweepConfig, *, method: str, meta: CheckpointMeta, data: Dataset,
              classifier: str, root: Path | None, levels: tuple[float, ...], level_name: str, levels_field: str,
              make_variant: Callable[[float], Variant], same_runner: bool, by_shape: bool) -> list[Point]:
    """Prunes, fine-tunes (cfg.finetune) and measures every level cfg.repeats times; one point per level."""
    repeats = cfg.repeats
    total = len(levels) * repeats
    deterministic = cfg.deterministic
    seed = cfg.finetune.train.seed
    example = data.test.tensors()[0][:32]
    shared_latency: dict | None = None
    reference = None  # the unpruned model (level 0), which every later level is timed beside
    params = point_params(cfg, drop=(levels_field,))
    device = choose_device(cfg.device)
    subset, eval_note = (subset_split(data, cfg.eval_samples, seed) if cfg.eval_samples else (None, ""))
    subset = subset if subset is not data else None  # eval_samples >= the split: the whole split, noted
    test_samples = len(data.test.y)
    if eval_note:
        ctx.log_event(eval_note)
    elif subset is not None:
        eval_note = (f"seeded subset: {len(subset.test.y)} of {test_samples} test images (seed {seed}); "
                     f"the first, unpruned and last levels and the breakpoints are also measured on the whole split")
        ctx.log_event(f"evaluating on {device.type}; {eval_note}")
    held_back = subset is not None  # points wait for the breakpoints, then are logged in level order
    sink = RunContext(ctx.cancel) if held_back else ctx

    def level_point(level: float, pruned: bool, extra: dict, runs: list[Measurement], subset_runs: list[Measurement],
                    whole: bool, artifact: str, **more) -> Point:
        accuracy = [r.accuracy for r in runs]
        scored = mean_of_runs(runs)
        evaluation: dict = {"eval_device": device.type}
        if cfg.eval_samples:
            n = test_samples if whole else len(subset.test.y)
            evaluation.update(eval_samples=n, test_samples=test_samples, eval_subset=not whole, eval_note=eval_note,
                              **accuracy_interval(scored.accuracy, n))
            if subset_runs:
                evaluation["subset_accuracy"] = statistics.fmean(r.accuracy for r in subset_runs)
        return pruning_point(
            sink, scored, cfg, method=method, stage="variant" if pruned else "baseline",
            params=params, level=level, level_name=level_name, artifact=artifact, accuracy_std=std(accuracy),
            accuracy_runs=accuracy, repeats=repeats, seeds=[seed + r for r in range(repeats)],
            top5_std=std([r.top5 for r in runs]), loss_std=std([r.loss for r in runs]),
            **({"artifact_repeat": 0} if artifact else {}),
            deterministic=deterministic, note=DETERMINISTIC_NOTE if deterministic else "",
            latency_note=(shared_latency_note("first level's") if same_runner else STRUCTURED_LATENCY_NOTE)
            if cfg.latency else "not timed", **evaluation, **extra, **more)

    points: list[Point] = []
    held: dict[int, Held] = {}
    try:
        for i, level in enumerate(levels):
            ctx.cancel.raise_if_cancelled()
            ctx.progress(Progress(i * repeats / total, f"{level_name} {level:g}: pruning"))
            variant = make_variant(level)
            # what a sweep reports as its result is measured on the whole split (see the module docstring)
            whole = subset is None or i in (0, len(levels) - 1) or not variant.pruned
            latency: bool | dict = False
            if cfg.latency:
                if same_runner and shared_latency is not None:
                    latency = shared_latency
                else:
                    latency = measure_latency(variant.model, example, reference=reference)
                    shared_latency = latency
                if level == 0 and not same_runner:
                    reference = copy.deepcopy(variant.model).eval()
            features = head_inputs(variant.model, data, cfg.finetune, classifier)  # one frozen body for every repeat
            runs: list[Measurement] = []
            subset_runs: list[Measurement] = []
            models: list[nn.Module] = []
            for r in range(repeats):
                ctx.cancel.raise_if_cancelled()
                done = i * repeats + r
                m = variant.model if deterministic else copy.deepcopy(variant.model)  # measuring changes nothing
                finetune(m, data, cfg.finetune, classifier=classifier, masks=variant.masks, seed=seed + r,
                         progress=scaled(ctx.progress, done / total, (done + 1) / total), cancel=ctx.cancel,
                         features=features)
                runs.append(measure(m, data if whole else subset, latency=latency, device=device))
                if subset is not None and whole:
                    subset_runs.append(measure(m, subset, latency=False, device=device))
                models.append(m)
                ctx.progress(Progress((done + 1) / total, f"{level_name} {level:g}: repeat {r + 1}/{repeats}",
                                      metrics={"accuracy": runs[-1].accuracy}))
            if root is None:
                artifact = ""
            elif not variant.pruned and deterministic:
                artifact = cfg.checkpoint  # the input model untouched: nothing to copy
            else:
                artifact = save_pruned(ctx, root, level_dir(level_name, level), models[0], meta, cfg, method=method,
                                       params=params, level=level, level_name=level_name, by_shape=by_shape)
            if not whole:
                held[i] = Held(models, latency, variant.extra, artifact)
            points.append(level_point(level, variant.pruned, variant.extra, runs, subset_runs, whole, artifact))
        if held:
            confirm_breakpoints(ctx, points, held, data, device, level_point)
    finally:
        if held_back:
            for p in points:
                ctx.log_point(p)
    return points


def confirm_breakpoints(ctx: RunContext, points: list[Point], held: dict[int, Held], data: Dataset, device,
                        level_point: Callable[..., Point]) -> None:
    """Measures each breakpoint that was scored on the subset again on the whole split, in place in `points`,
    and looks for the breakpoints again on the corrected curve until all it reports are whole-split figures."""
    if not _BREAKPOINT_FINDERS:
        ctx.log_event("no breakpoint finder is loaded (engine.run is not imported): a breakpoint between the first "
                      "and last levels stays a subset figure", "warning")
        return
    find = _BREAKPOINT_FINDERS[-1]
    by_level = {p.level: i for i, p in enumerate(points)}
    while True:
        ctx.cancel.raise_if_cancelled()
        found = [by_level[level] for level in find([p.to_dict() for p in points]) if level in by_level]
        todo = [i for i in dict.fromkeys(found) if i in held]
        if not todo:
            return
        for i in todo:
            h = held.pop(i)
            p = points[i]
            ctx.progress(Progress(1.0, f"{p.level_name} {p.level:g}: breakpoint, measuring on the whole split"))
            measured: dict[int, Measurement] = {}  # a deterministic sweep's repeats share one model
            runs = [measured.setdefault(id(m), measure(m, data, latency=h.latency, device=device)) for m in h.models]
            points[i] = level_point(p.level, True, h.extra, runs, [], True, h.artifact,
                                    subset_accuracy=p.accuracy, breakpoint_remeasured=True)
            ctx.log_event(f"breakpoint at {p.level_name} {p.level:g}: {points[i].accuracy:.4f} on the whole split "
                          f"({p.accuracy:.4f} on the subset)")
