"""Layer-wise mixed precision: a path of per-layer weight widths from the top of a width ladder down,
each step lowering one layer by one rung; every reported step is a measured point (average bits vs
accuracy).

Two searches choose the layer to lower:

- `greedy`, the "greedy path-following" quantization of seed 003: at each step every layer is tried
  one rung lower and the one that costs the least validation accuracy is lowered (ties: lower
  validation loss, then the layer that saves more bits). About layers x rungs x layers evaluations,
  made cheaper without changing one score or choice (`engine.methods.quant.prefix_cache`): each candidate runs
  from the kept input of the layer it lowers, the next step starts from the kept activations of the
  lowering it took, and a candidate is abandoned part-way once the validation images it has run
  (hardest first) prove that it cannot rank first, so only the lowering taken is sure to run in full.
- `sensitivity` (the default): one pass of per-layer sensitivity (each layer alone at each width,
  the others at the top width), then a path that lowers, at each step, the layer with the smallest
  predicted loss per bit saved, the loss predicted as the sum of the layers' own losses. This
  is the shape of AIMET's automatic mixed precision (Qualcomm AIMET, aimet_common/amp/
  mixed_precision_algo.py: phase 1 "accuracy list" of one quantizer group at a time, phase 2 a
  Pareto list applied cumulatively and binary-searched for the allowed drop) with HAWQ-V2's ordering
  by sensitivity per bit of model size (Dong et al., "HAWQ-V2: Hessian Aware trace-Weighted
  Quantization of Neural Networks", NeurIPS 2020; here the sensitivity is measured, not the Hessian
  trace). The path is measured every `measure_every` steps; when a measurement breaks the allowed
  drop, the last step within it is found by bisection, as AIMET's phase 2 does, the layer whose
  lowering broke it stays where it is, and the path goes on with the others. Only measured steps
  are reported.

Both stop once the next step would lose more than `max_accuracy_drop` validation accuracy from the
path's start (every layer at the top width) or the average width reaches `target_bits`.

What is searched and what is reported: candidates are scored on a fixed random subset of `val_samples`
validation images drawn with `seed` (the whole validation split when it is smaller); each reported step is then
measured on the whole test split (its `accuracy`), and carries its search score as `val_accuracy` with the 95 %
Wilson interval of that score on `val_samples` images (`val_accuracy_lo` / `val_accuracy_hi`,
engine.core.intervals), so a step's choice can be read against the noise of the subset it was made on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.intervals import wilson
from engine.core.point import Point
from engine.deploy import qmaths as maths
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant.common import (
    LayerWeights,
    Output,
    SimulatedRun,
    check_bits_list,
    float_latency,
    quant_method,
    report,
    simulated_backend,
    simulated_point,
)
from engine.methods.quant.prefix_cache import CandidateEvaluator
from engine.model.data import Dataset
from engine.model.outputs import SaveOptions, level_dir

SEARCHES = ("sensitivity", "greedy")
Scores = dict[str, float]  # accuracy, top5, loss on the validation subset
Change = tuple[str, int]  # (layer, bits)


@dataclass
class MixedPrecisionConfig(SaveOptions, SimulatedRun):
    search: str = param("sensitivity", "sensitivity: one per-layer pass, then a predicted path measured every few "
                                       "steps (fast); greedy: tries every layer at every step (about layers^2 "
                                       "evaluations)", choices=SEARCHES)
    bits: tuple[int, ...] = param((8, 6, 5, 4, 3, 2), "the width ladder; every layer starts at the highest")
    max_accuracy_drop: float = param(0.01, "stop before validation accuracy falls more than this (0.01 = 1 point)",
                                     lo=0, hi=1, flag="max-drop")
    target_bits: float = param(2.0, "or stop once the average weight width is at or below this",
                               lo=maths.MIN_BITS, hi=maths.MAX_BITS)
    val_samples: int = param(500, "validation images the search evaluates on: a fixed random subset drawn with "
                                  "--seed (the whole split when it is smaller)", lo=1, hi=1_000_000)
    measure_every: int = param(4, "sensitivity search: measure (and report) the path every this many steps, "
                                  "and at its last step", lo=1, hi=10_000)

    def validate(self) -> None:
        check_bits_list("bits", self.bits)


# ---------------------------------------------------------------- the path, given evaluations (pure)


@dataclass(frozen=True)
class Step:
    """A point of the path: `index` single-rung lowerings from the start."""

    index: int
    bits: dict[str, int]
    lowered: tuple[str, ...]  # layers lowered since the previous reported step
    val: Scores


def next_lower(ladder: list[int], bits: int) -> int | None:
    """The next rung below `bits` on a descending ladder, or None at the bottom."""
    lower = [b for b in ladder if b < bits]
    return max(lower) if lower else None


def lowerings(bits: dict[str, int], ladder: list[int]) -> list[Change]:
    """Every layer that can go one rung lower, with that width, in layer order."""
    return [(name, low) for name, b in bits.items() if (low := next_lower(ladder, b)) is not None]


def greedy_rank(bits: dict[str, int], sizes: dict[str, int], change: Change, val: Scores) -> tuple[float, float, int]:
    """How greedy ranks a lowering of `bits` scored `val`: accuracy, then lower loss, then bits saved."""
    name, low = change
    return val["accuracy"], -val["loss"], (bits[name] - low) * sizes[name]


def greedy_choice(bits: dict[str, int], sizes: dict[str, int], tried: dict[Change, Scores]) -> Change:
    """The tried lowering that keeps the most accuracy; ties: lower loss, then more bits saved, then the
    earlier layer. `tried[(layer, b)]` scores `bits` with that layer at b."""
    return max(tried.items(), key=lambda item: greedy_rank(bits, sizes, *item))[0]


def greedy_path(start: dict[str, int], ladder: list[int], sizes: dict[str, int], start_val: Scores,
                evaluate_changes: Callable[[dict[str, int], list[Change]], list[Scores | None]], *,
                max_drop: float, target_bits: float, stopped: Callable[[str], None]) -> Iterator[Step]:
    """Seed 003's greedy path: each step tries every layer one rung lower and keeps the best."""
    bits, index = dict(start), 0
    yield Step(0, dict(bits), (), start_val)
    while maths.average_bits(bits, sizes) > target_bits:
        changes = lowerings(bits, ladder)
        if not changes:
            stopped("stopped: every layer is at the lowest width of the ladder")
            return
        # a lowering scored None was dropped part-way, proven to rank below another
        tried = {c: v for c, v in zip(changes, evaluate_changes(bits, changes)) if v is not None}
        name, low = greedy_choice(bits, sizes, tried)
        val = tried[(name, low)]
        drop = start_val["accuracy"] - val["accuracy"]
        if drop > max_drop:
            stopped(f"stopped: the cheapest next step ({name} to {low} bits) would drop validation accuracy by "
                    f"{drop:.4f} > {max_drop}")
            return
        index += 1
        bits[name] = low
        yield Step(index, dict(bits), (name,), val)
    stopped(f"stopped: average width {maths.average_bits(bits, sizes):.2f} <= target {target_bits}")


def sensitivity_order(start: dict[str, int], ladder: list[int], sizes: dict[str, int], start_val: Scores,
                      alone: dict[Change, Scores], bits: dict[str, int] | None = None,
                      frozen: frozenset[str] = frozenset()) -> list[Change]:
    """Every single-rung lowering from `bits` (default `start`) down to the bottom of the ladder,
    cheapest predicted loss per bit first, leaving the `frozen` layers where they are.

    `alone[(layer, b)]` scores `start` with only that layer at b. What a lowering costs is predicted
    from those alone: the validation loss the layer adds at its new width minus what it added at its
    current one, per bit saved (then the same for accuracy; then more bits saved, then the earlier
    layer). Loss first: it is continuous, where accuracy on a few hundred images moves in steps, and
    a loss increase is what HAWQ's sensitivity estimates."""
    bits, order = dict(bits or start), []

    def scored(name: str, b: int) -> Scores:
        return start_val if b == start[name] else alone[(name, b)]

    while changes := [c for c in lowerings(bits, ladder) if c[0] not in frozen]:
        def cost(change: Change) -> tuple[float, float, int]:
            name, low = change
            saved = (bits[name] - low) * sizes[name]
            now, then = scored(name, bits[name]), scored(name, low)
            return (then["loss"] - now["loss"]) / saved, (now["accuracy"] - then["accuracy"]) / saved, -saved

        name, low = min(changes, key=cost)
        bits[name] = low
        order.append((name, low))
    return order


def assignments_along(start: dict[str, int], order: list[Change]) -> list[dict[str, int]]:
    """The assignment after each prefix of `order` (index 0: `start`)."""
    out, bits = [dict(start)], dict(start)
    for name, low in order:
        bits[name] = low
        out.append(dict(bits))
    return out


def measured_indices(last: int, every: int, within: Callable[[int], bool]) -> Iterator[int]:
    """The path indices to report: 0, every, 2*every, ... and `last`, while `within(i)` holds; at the
    first that breaks it, the last index within it, found by bisection since the previous good one."""
    yield 0
    good = 0
    for i in [*range(every, last, every), last] if last > 0 else []:
        if within(i):
            good = i
            yield i
            continue
        reported, bad = good, i
        while bad - good > 1:
            mid = (good + bad) // 2
            if within(mid):
                good = mid
            else:
                bad = mid
        if good > reported:
            yield good
        return


def sensitivity_path(start: dict[str, int], ladder: list[int], sizes: dict[str, int], start_val: Scores,
                     evaluate_changes: Callable[[dict[str, int], list[Change]], list[Scores]],
                     evaluate: Callable[[dict[str, int]], Scores], *, max_drop: float, target_bits: float,
                     measure_every: int, stopped: Callable[[str], None]) -> Iterator[Step]:
    """One sensitivity pass, then the predicted path, measured at the steps it reports. A lowering that
    breaks the drop leaves its layer where it was (frozen) and the path goes on without it, predicted
    afresh from the last step within the drop, until no layer can go lower or the target is reached."""
    yield Step(0, dict(start), (), start_val)
    changes = [(name, b) for name in start for b in ladder if b < start[name]]
    alone = dict(zip(changes, evaluate_changes(start, changes)))
    measured: dict[tuple, Scores] = {tuple(start.items()): start_val}
    bits, index, frozen = dict(start), 0, frozenset()
    while True:
        order = sensitivity_order(start, ladder, sizes, start_val, alone, bits, frozen)
        path = assignments_along(bits, order)
        last = next((i for i, b in enumerate(path) if maths.average_bits(b, sizes) <= target_bits), len(path) - 1)

        def score(i: int, path: list[dict[str, int]] = path) -> Scores:
            key = tuple(path[i].items())
            if key not in measured:
                measured[key] = evaluate(path[i])
            return measured[key]

        def within(i: int) -> bool:
            return start_val["accuracy"] - score(i)["accuracy"] <= max_drop

        previous = 0
        for i in measured_indices(last, measure_every, within):
            if i > 0:
                yield Step(index + i, path[i], tuple(name for name, _ in order[previous:i]), score(i))
                previous = i
        if previous == last:
            break
        # bisection left the first step beyond the last good one measured, and it broke the drop
        name, low = order[previous]
        stopped(f"{name} stays at {path[previous][name]} bits: step {index + previous + 1} ({name} to {low} bits) "
                f"would drop validation accuracy by {start_val['accuracy'] - score(previous + 1)['accuracy']:.4f} "
                f"> {max_drop}")
        bits, index, frozen = path[previous], index + previous, frozen | {name}
    if maths.average_bits(bits := path[last], sizes) <= target_bits:
        stopped(f"stopped: average width {maths.average_bits(bits, sizes):.2f} <= target {target_bits}")
    elif frozen:
        stopped(f"stopped: no layer can go lower within the drop ({len(frozen)} kept where a step broke it)")
    else:
        stopped("stopped: every layer is at the lowest width of the ladder")


# ---------------------------------------------------------------- the method


def validation_subset(data: Dataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of n validation images (normalised) and labels, drawn with `seed`."""
    x, y = data.val.tensors()
    if n >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[idx], y[idx]


@quant_method("mixed", MixedPrecisionConfig, "layer-wise mixed precision: a path of average bits vs accuracy "
                                             "(sensitivity-guided or greedy)")
def mixed_precision(model: nn.Module, data: Dataset, cfg: MixedPrecisionConfig, ctx: RunContext,
                    output: Output, *, cached: bool = True) -> list[Point]:
    """`cached=False` scores every candidate with a full forward (what the cache must reproduce)."""
    model = fold_batchnorm(model)
    latency = float_latency(model, data, cfg.latency)
    weights = LayerWeights(model, cfg.quantizer())
    ladder = sorted(cfg.bits, reverse=True)
    x_val, y_val = validation_subset(data, cfg.val_samples, cfg.seed)
    start = {name: ladder[0] for name in weights.layers}
    max_steps = max(1, len(weights.layers) * (len(ladder) - 1))
    progress = {"step": 0}
    evaluator = CandidateEvaluator(model, weights, x_val, y_val, cached=cached, progress=lambda m: report(
        ctx, progress["step"] / max_steps, f"step {progress['step'] + 1}: {m}"))
    ctx.log_event(f"{cfg.search} mixed precision over {ladder} bits, {len(weights.layers)} layers, {len(y_val)} "
                  f"validation images, {cfg.scheme()}; {len(evaluator.cuts)} of the layers run from a cached input")

    def stopped(message: str) -> None:
        ctx.log_event(message)

    start_val = evaluator.evaluate(start)
    if cfg.search == "greedy":
        def tried(bits: dict[str, int], changes: list[Change]) -> list[Scores]:
            # the states of the lowering greedy will take are kept: the next step starts from them
            return evaluator.evaluate_changes(bits, changes, keep=lambda change, val: greedy_rank(
                bits, weights.sizes, change, val), abandon=True)

        path = greedy_path(start, ladder, weights.sizes, start_val, tried,
                           max_drop=cfg.max_accuracy_drop, target_bits=cfg.target_bits, stopped=stopped)
    else:
        path = sensitivity_path(start, ladder, weights.sizes, start_val, evaluator.evaluate_changes,
                                evaluator.evaluate, max_drop=cfg.max_accuracy_drop, target_bits=cfg.target_bits,
                                measure_every=cfg.measure_every, stopped=stopped)
    points = []
    for step in path:
        progress["step"] = step.index
        avg = weights.average_bits(step.bits)
        val_lo, val_hi = wilson(round(step.val["accuracy"] * len(y_val)), len(y_val))  # the subset's noise
        points.append(simulated_point(
            ctx, model, data, weights, step.bits, cfg, output, method="mixed", stage="step",
            sub=level_dir("step", step.index), level=avg, level_name="average_bits", latency=latency,
            backend=simulated_backend("mixed-precision"), step=step.index, bits_per_layer=step.bits,
            lowered=list(step.lowered), val_accuracy=step.val["accuracy"], val_loss=step.val["loss"],
            val_accuracy_lo=val_lo, val_accuracy_hi=val_hi,
            search=cfg.search, val_samples=len(y_val), evaluations=evaluator.evaluations,
            full_evaluations=evaluator.full_forwards, abandoned=evaluator.abandoned,
            segments=round(evaluator.segments, 2)))
    weights.apply(maths.FLOAT_BITS)
    report(ctx, 1.0, "done")
    return points
