"""Greedy layer-wise mixed precision: the "greedy path-following" quantization of seed 003.

Every layer starts at the highest width; each step lowers, by one rung of the width ladder, the
layer whose reduction costs the least validation accuracy (ties: lower validation loss, then the
layer that saves more bits), until the next step would lose more than `max_accuracy_drop` or the
average width reaches `target_bits`. Compare Distiller's greedy PTQ search and AIMET's AMP (whose
Pareto path it resembles). Each step is a point, so the path is a curve: average bits vs accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.artifacts import SaveOptions, level_dir
from engine.config import param
from engine.context import RunContext
from engine.data import Dataset
from engine.point import Point
from engine.quant import maths
from engine.quant.common import (
    LayerWeights,
    Output,
    SimulatedRun,
    check_bits_list,
    evaluate_tensors,
    float_latency,
    fold_batchnorm,
    quant_method,
    report,
    simulated_backend,
    simulated_point,
)


@dataclass
class MixedPrecisionConfig(SaveOptions, SimulatedRun):
    bits: tuple[int, ...] = param((8, 6, 5, 4, 3, 2), "the width ladder; every layer starts at the highest")
    max_accuracy_drop: float = param(0.01, "stop before validation accuracy falls more than this (0.01 = 1 point)",
                                     lo=0, hi=1, flag="max-drop")
    target_bits: float = param(2.0, "or stop once the average weight width is at or below this",
                               lo=maths.MIN_BITS, hi=maths.MAX_BITS)
    val_samples: int = param(500, "validation images the search evaluates on (the first n of the split)",
                             lo=1, hi=1_000_000)

    def validate(self) -> None:
        check_bits_list("bits", self.bits)


def next_lower(ladder: list[int], bits: int) -> int | None:
    """The next rung below `bits` on a descending ladder, or None at the bottom."""
    lower = [b for b in ladder if b < bits]
    return max(lower) if lower else None


@quant_method("mixed", MixedPrecisionConfig, "greedy layer-wise mixed precision: a path of bits vs accuracy")
def greedy_mixed_precision(model: nn.Module, data: Dataset, cfg: MixedPrecisionConfig, ctx: RunContext,
                           output: Output) -> list[Point]:
    model = fold_batchnorm(model)
    latency = float_latency(model, data, cfg.latency)
    weights = LayerWeights(model, cfg.quantizer())
    ladder = sorted(cfg.bits, reverse=True)
    x_val, y_val = data.val.tensors()
    x_val, y_val = x_val[: cfg.val_samples], y_val[: cfg.val_samples]
    assignment = {name: ladder[0] for name in weights.layers}
    max_steps = len(weights.layers) * (len(ladder) - 1)
    ctx.log_event(f"greedy mixed precision over {ladder} bits, {len(weights.layers)} layers, "
                  f"{len(y_val)} validation images, {cfg.scheme()}")

    def evaluate(bits: dict[str, int]) -> dict[str, float]:
        weights.apply(bits)
        return evaluate_tensors(model, x_val, y_val)

    def record(step: int, val: dict[str, float], lowered: str | None) -> Point:
        avg = weights.average_bits(assignment)
        return simulated_point(ctx, model, data, weights, dict(assignment), cfg, output, method="mixed",
                               stage="step", sub=level_dir("step", step), level=avg, level_name="average_bits",
                               latency=latency, backend=simulated_backend("mixed-precision"), step=step,
                               bits_per_layer=dict(assignment), lowered=lowered, val_accuracy=val["accuracy"],
                               val_loss=val["loss"])

    start = evaluate(assignment)
    points = [record(0, start, None)]
    step = 0
    while weights.average_bits(assignment) > cfg.target_bits:
        candidates = []
        for name, bits in assignment.items():
            lower = next_lower(ladder, bits)
            if lower is None:
                continue
            report(ctx, step / max_steps, f"step {step + 1}: trying {name} at {lower} bits")
            val = evaluate({**assignment, name: lower})
            saved = (bits - lower) * weights.sizes[name]
            candidates.append(((val["accuracy"], -val["loss"], saved), name, lower, val))
        if not candidates:
            ctx.log_event("stopped: every layer is at the lowest width of the ladder")
            break
        _, name, lower, val = max(candidates, key=lambda c: c[0])
        if start["accuracy"] - val["accuracy"] > cfg.max_accuracy_drop:
            ctx.log_event(f"stopped: the cheapest next step ({name} to {lower} bits) would drop validation "
                          f"accuracy by {start['accuracy'] - val['accuracy']:.4f} > {cfg.max_accuracy_drop}")
            break
        step += 1
        assignment[name] = lower
        points.append(record(step, val, name))
    else:
        ctx.log_event(f"stopped: average width {weights.average_bits(assignment):.2f} <= target {cfg.target_bits}")
    weights.apply(maths.FLOAT_BITS)
    report(ctx, 1.0, "done")
    return points
