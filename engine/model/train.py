"""The one training loop that every method uses, and evaluation.

A method changes what a training step computes, not the loop: `fit` takes a `step(batch)` that
returns the logits and a dict of named loss terms (as mdistiller's distillers do); the loop sums
the terms, steps the optimizer and the LR schedule, reports progress each batch, checks the
cancel token each batch, and stops on a NaN or Inf loss.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.core.config import Config, param
from engine.core.errors import TrainingDiverged
from engine.core.progress import CancelToken, Eta, Progress, ProgressFn
from engine.model.data import Dataset, Split, augment


@dataclass
class TrainConfig(Config):
    """How a model is trained; every method that trains (train, distill, QAT, fine-tuning) nests one."""

    epochs: int = param(3, "passes over the training split", lo=0, hi=10_000)
    batch_size: int = param(64, "images per batch", lo=1, hi=65_536)
    optimizer: str = param("sgd", "optimizer", choices=("sgd", "adam"))
    lr: float = param(0.05, "peak learning rate", lo=0, hi=10, lo_open=True)
    momentum: float = param(0.9, "SGD momentum", lo=0, hi=1, hi_open=True)
    weight_decay: float = param(5e-4, "L2 weight decay", lo=0, hi=1)
    schedule: str = param("cosine", "learning-rate schedule: cosine, step (x0.1 at 50% and 75%) or constant",
                          choices=("cosine", "step", "constant"))
    seed: int = param(0, "seeds init, shuffling and augmentation: same seed, same run on the CPU", lo=0, hi=2**32 - 1)
    augment: bool = param(False, "random shifts (and flips where the dataset allows them)")


@dataclass
class Batch:
    x: Tensor
    y: Tensor
    index: Tensor  # positions of these samples in the training split (for cached teacher outputs)
    epoch: int  # 0-based


StepFn = Callable[[Batch], tuple[Tensor, dict[str, Tensor]]]


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cross_entropy_step(model: nn.Module) -> StepFn:
    def step(b: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model(b.x)
        return logits, {"ce": F.cross_entropy(logits, b.y)}

    return step


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.momentum > 0)


def lr_factor(schedule: str, progress: float) -> float:
    """The LR multiplier at a fraction of training done (a pure function of the schedule)."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return 0.01 if progress >= 0.75 else 0.1 if progress >= 0.5 else 1.0
    return 1.0


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int = 512, device: torch.device | None = None) -> Tensor:
    """Logits for a whole split, in order."""
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    out = [model(x.to(device)).float().cpu() for x, _ in split.batches(batch_size)]
    model.train(was_training)
    return torch.cat(out)


def scores(logits: Tensor, y: Tensor) -> dict[str, float]:
    """accuracy (top-1), top5 and mean cross-entropy loss from logits."""
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    return {
        "accuracy": (topk[:, 0] == y).float().mean().item(),
        "top5": (topk == y[:, None]).any(dim=1).float().mean().item(),
        "loss": F.cross_entropy(logits, y).item(),
    }


def confusion_matrix(logits: Tensor, y: Tensor, num_classes: int | None = None) -> list[list[int]]:
    """Counts of (true class, predicted class): row i, column j = test samples of class i predicted as j.

    The prediction is the top-1 class taken exactly as `scores` takes it (ties included), so trace / total
    is `scores`' accuracy exactly.
    """
    n = int(num_classes if num_classes is not None else logits.shape[1])
    pred = logits.topk(min(5, logits.shape[1]), dim=1).indices[:, 0] if len(y) else y
    if len(pred) != len(y):
        raise ValueError(f"confusion_matrix: {len(pred)} predictions for {len(y)} labels")
    counts = torch.bincount(y.long() * n + pred.long(), minlength=n * n)
    return counts.reshape(n, n).tolist()


def evaluate(model: nn.Module, split: Split, batch_size: int = 512, device: torch.device | None = None) -> dict:
    return scores(predict(model, split, batch_size, device), split.y)


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    step: StepFn | None = None,
    extra_modules: Sequence[nn.Module] = (),
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    after_step: Callable[[], None] | None = None,
    freeze_bn: bool = False,
    device: torch.device | None = None,
) -> list[dict]:
    """Trains `model` (and `extra_modules`, e.g. adapters) on data.train; returns per-epoch metrics.

    `step` defaults to cross-entropy. `after_step` runs after every optimizer step (e.g. to
    re-apply pruning masks). `freeze_bn` keeps BatchNorm statistics fixed. The model ends on the CPU.
    """
    device = device or pick_device()
    seed_everything(config.seed)
    model.to(device)
    for m in extra_modules:
        m.to(device)
    step = step or cross_entropy_step(model)
    params = [p for m in (model, *extra_modules) for p in m.parameters() if p.requires_grad]
    if not params:
        raise TrainingDiverged("nothing to train: every parameter is frozen")
    opt = make_optimizer(params, config)
    steps_per_epoch = data.train.num_batches(config.batch_size)
    total = max(1, config.epochs * steps_per_epoch)
    eta = Eta()
    history: list[dict] = []
    done = 0
    for epoch in range(config.epochs):
        for m in (model, *extra_modules):
            m.train()
        if freeze_bn:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        correct = seen = 0
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        for i, (x, y) in enumerate(_ordered_batches(data.train, order, config, epoch)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            lr = config.lr * lr_factor(config.schedule, done / total)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = order[i * config.batch_size : (i + 1) * config.batch_size]
            batch = Batch(x.to(device, non_blocking=True), y.to(device, non_blocking=True), idx, epoch)
            logits, losses = step(batch)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}; "
                    f"try a lower learning rate (lr={config.lr:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            done += 1
            n = len(y)
            values = {k: v.item() for k, v in losses.items()}
            values["loss"] = sum(values.values())
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v * n
            correct += (logits.argmax(1) == batch.y).sum().item()
            seen += n
            if progress is not None:
                frac = done / total
                progress(Progress(frac, f"epoch {epoch + 1}/{config.epochs}", epoch + 1, i + 1, eta(frac), values))
        val = evaluate(model, data.val, device=device)
        row = {"epoch": epoch + 1, "lr": lr, "epoch_seconds": time.perf_counter() - t0,
               "train_loss": sums.get("loss", 0.0) / max(seen, 1), "train_accuracy": correct / max(seen, 1),
               "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_top5": val["top5"]}
        row.update({f"loss_{k}": v / max(seen, 1) for k, v in sums.items() if k != "loss"})
        history.append(row)
    model.to("cpu")
    for m in extra_modules:
        m.to("cpu")
    model.eval()
    return history


def _ordered_batches(split: Split, order: Tensor, config: TrainConfig, epoch: int):
    """Batches in the given order; augmentation is seeded per batch so a seed fixes the run."""
    x_all = split.x if config.augment else split.tensors()[0]
    for start in range(0, len(split), config.batch_size):
        idx = order[start : start + config.batch_size]
        x = x_all[idx]
        if config.augment:
            x = split.normalise(augment(x, split.hflip, config.seed * 7919 + epoch * 104729 + start))
        yield x, split.y[idx]
