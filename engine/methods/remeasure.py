"""The `remeasure` task: stored points timed again now, each beside its baseline, as one job (issue #23).

A point's latency was taken whenever its run happened to run; a user who doubts it (the machine was busy, the
point is from another machine, the timing is marked noisy) re-times it. Each point's checkpoint is loaded in
the form it was measured in (an int8 checkpoint as int8, a float one on the point's runtime) and timed by the
timing protocol (engine/deploy/timing.py) beside its baseline's model, so the new timing carries the speed-up
with its interval, the quality of the rounds and the machine. Quantization compares against the BatchNorm-folded
float model (what its runs timed), so a quantization point's baseline is folded here too.

The new timings go to the run's context (`log_timing`); in the job runner the store keeps each in the point's
latency history and shows the newest clean one (store.Store.add_timing). No new point is made. Which checkpoint
and baseline each point has is read from the store by engine/run/remeasure.py, which builds this config.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.core.config import Config, param
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Point
from engine.core.progress import Progress
from engine.deploy import runtimes
from engine.deploy.formats import load_variant
from engine.deploy.measure import ModelForm, measure_latency
from engine.deploy.quantized import fold_batchnorm
from engine.methods.tasks import register_task
from engine.model.checkpoint import dataset_of
from engine.model.data import DEFAULT_ROOT

FOLDED_FAMILIES = ("quantize",)  # families whose baselines (and float variants) run BatchNorm-folded


@dataclass
class RemeasureTask(Config):
    points: tuple[int, ...] = param((), "stored point ids to time again")
    checkpoints: tuple[str, ...] = param((), "each point's checkpoint directory, in the order of points")
    baselines: tuple[str, ...] = param((), "each point's baseline checkpoint, timed beside it ('' for none)")
    families: tuple[str, ...] = param((), "each point's family (quantization's baselines run BatchNorm-folded)")
    runtimes: tuple[str, ...] = param((), "each point's runtime")
    data_root: str = param(DEFAULT_ROOT, "where torchvision datasets live", role="machine")

    def validate(self) -> None:
        if not self.points:
            raise ConfigError("points must name at least one stored point to time again")
        n = len(self.points)
        for name in ("checkpoints", "baselines", "families", "runtimes"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"{name} must give one entry per point ({n}); got {len(getattr(self, name))}")
        for i, path in enumerate(self.checkpoints):
            if not path:
                raise ConfigError(f"point {self.points[i]} has no checkpoint to time (its run did not save it)")
        for r in self.runtimes:
            runtimes.check_runtime(r)


def _runner(model: nn.Module, form: ModelForm, fold: bool) -> nn.Module:
    """What runs a checkpoint's form: its own runner, else the float model (BatchNorm-folded when `fold`)."""
    return (form.runner or (fold_batchnorm(model) if fold else model)).eval()


def _baseline_runner(directory: str, fold: bool) -> nn.Module:
    model, form, _ = load_variant(directory)
    return _runner(model, form, fold)


@register_task("remeasure", RemeasureTask, "time stored points again now, each beside its baseline")
def remeasure(cfg: RemeasureTask, ctx: RunContext) -> list[Point]:
    references: dict[tuple[str, bool], nn.Module] = {}
    n = len(cfg.points)
    for i, (point_id, path, baseline, family, runtime) in enumerate(
            zip(cfg.points, cfg.checkpoints, cfg.baselines, cfg.families, cfg.runtimes)):
        ctx.cancel.raise_if_cancelled()
        ctx.progress(Progress(i / n, f"timing point {point_id} ({i + 1} of {n})"))
        fold = family in FOLDED_FAMILIES
        model, form, meta = load_variant(path)
        data = dataset_of(meta, cfg.data_root)
        if runtime != "torch":
            with runtimes.using(calibration=runtimes.Calibration.of_checkpoint(meta)):
                form = runtimes.deploy(runtime, model, form, data)
        runner = _runner(model, form, fold)
        reference = None
        if baseline and runtime in runtimes.PAIRED_RUNTIMES:
            key = (baseline, fold)
            if key not in references:
                references[key] = runner if baseline == path and runtime == "torch" else _baseline_runner(baseline, fold)
            reference = references[key]
        x = data.split("test").tensors()[0][:32]
        timing = measure_latency(runner, x, reference=reference)
        ctx.log_timing(point_id, timing)
        sp = timing.get("speedup_b1")
        ctx.log_event(f"point {point_id}: {timing['latency_ms_b1']:.3g} ms at batch 1, "
                      f"{timing['latency_ms_b32']:.3g} ms at batch 32"
                      + (f", {sp:.2f}x its baseline" if sp is not None else "") + f" ({timing['latency_quality']})")
    ctx.progress(Progress(1.0, f"timed {n} point(s)"))
    return []
