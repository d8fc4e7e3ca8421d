"""The `train` task: a zoo model trained on a dataset, saved as a checkpoint and measured."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.point import Point
from engine.core.progress import scaled
from engine.deploy.runtimes import RUNTIME_NAMES
from engine.methods.tasks import check_dataset_name, measure_point, register_task
from engine.model.checkpoint import CheckpointMeta, model_data, normalisation, save_checkpoint
from engine.model.data import DEFAULT_ROOT
from engine.model.outputs import SaveOptions, claim_output, default_out_dir
from engine.model.train import TrainConfig, fit, seed_everything
from engine.model.zoo import MODELS, build_model


@dataclass
class TrainTask(SaveOptions):
    dataset: str = param("mnist5k", "dataset name or imagefolder:<path> (see `datasets`)")
    model: str = param("cnn_l", "architecture from the zoo (see `models`), or timm:<name> / torchvision:<name>")
    width: float = param(1.0, "width multiplier where the architecture has one", lo=0.05, hi=16)
    data_root: str = param(DEFAULT_ROOT, "where torchvision datasets live", role="machine")
    download: bool = param(False, "download a missing torchvision dataset")
    image_size: int | None = param(None, "resize imagefolder images to this side (default 64; a timm/torchvision "
                                         "model's own side, e.g. 224)", lo=4, hi=1024)
    latency: bool = param(True, "time the final model (--no-latency: latency fields stay empty)", role="runner")
    runtime: str = param("torch", "what runs the model when it is measured (accuracy and latency)",
                         choices=RUNTIME_NAMES, role="runner")
    train: TrainConfig = param(default_factory=TrainConfig)

    def validate(self) -> None:
        check_dataset_name(self.dataset)
        MODELS.get(self.model)


@register_task("train", TrainTask, "train a model from the zoo on a dataset and save a checkpoint")
def train_task(cfg: TrainTask, ctx: RunContext) -> list[Point]:
    data = model_data(cfg.model, cfg.dataset, cfg.data_root, cfg.download, cfg.image_size)
    out = cfg.out or default_out_dir(cfg.model, data.name)
    c, h, _ = data.input_shape
    with claim_output(out, [], cfg.overwrite, describe={"task": "train"}) if cfg.save else nullcontext():
        seed_everything(cfg.train.seed)
        model = build_model(cfg.model, data.num_classes, c, h, cfg.width)
        ctx.log_event(f"training {cfg.model} on {data.name}: {len(data.train)} train / {len(data.val)} val images")
        history = fit(model, data, cfg.train, progress=scaled(ctx.progress, 0.0, 0.95), cancel=ctx.cancel)
        for row in history:
            ctx.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        artifact = ""
        if cfg.save:
            meta = CheckpointMeta(arch=cfg.model, num_classes=data.num_classes, in_channels=c, image_size=h,
                                  dataset=data.name, class_names=data.class_names, width=cfg.width,
                                  train_config=cfg.train.to_dict(), **normalisation(data),
                                  lineage=[{"family": "train", "method": "train", "params": cfg.to_dict(),
                                            "input_checkpoint": ""}])
            save_checkpoint(out, model, meta)
            ctx.log_artifact(out, "checkpoint")
            artifact = out
    return [measure_point(ctx, model, data, family="train", method="train", stage="baseline",
                          params=cfg.train.to_dict(), artifact=artifact, latency=cfg.latency)]


