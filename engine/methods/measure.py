"""The `measure` task: any checkpoint directory measured, on one or more runtimes."""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.config import Config, param
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Point
from engine.deploy.formats import load_variant
from engine.deploy.runtimes import Calibration, check_runtimes, using
from engine.methods.tasks import measure_point, register_task
from engine.model.checkpoint import dataset_of, describe_lineage
from engine.model.data import DEFAULT_ROOT


@dataclass
class MeasureTask(Config):
    checkpoint: str = param("", "checkpoint directory (any format a method writes)", role="input")
    data_root: str = param(DEFAULT_ROOT, "where torchvision datasets live", role="machine")
    latency: bool = param(True, "time the model (--no-latency: latency fields stay empty)", role="runner")
    runtime: tuple[str, ...] = param(("torch",), "runtimes that run the model, one point each: torch, onnxruntime, "
                                                 "torch_bf16 (float models, CPUs with BF16), or a list such as "
                                                 "torch,torch_bf16", role="runner")

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint must name a checkpoint directory")
        check_runtimes("runtime", self.runtime)


COMPRESSING = ("quantize", "prune", "distill")


@register_task("measure", MeasureTask, "measure a checkpoint: accuracy, size, MACs, latency")
def measure_task(cfg: MeasureTask, ctx: RunContext) -> list[Point]:
    model, form, meta = load_variant(cfg.checkpoint)
    data = dataset_of(meta, cfg.data_root)
    compressed = any(step.get("family") in COMPRESSING for step in meta.lineage)
    last = meta.lineage[-1] if meta.lineage else {}
    if "torch_bf16" in cfg.runtime and getattr(ctx, "latency_reference", None) is None:
        ctx.latency_reference = model.eval()  # bf16 is timed beside this checkpoint in fp32: its speed-up over it
    with using(calibration=Calibration.of_checkpoint(meta)):  # an int8 model on another runtime: its own split
        return [measure_point(ctx, model, data, form=form, family="measure", method="measure",
                              stage="variant" if compressed else "baseline", level=last.get("level"),
                              level_name=last.get("level_name", ""), input_checkpoint=cfg.checkpoint,
                              artifact=cfg.checkpoint, latency=cfg.latency, runtime=runtime, lineage=meta.lineage,
                              lineage_text=describe_lineage(meta), weights_format=meta.weights_format)
                for runtime in cfg.runtime]
