"""Fine-tuning after pruning, with the masks held fixed.

Modes: `none`; `last`, the classifier only, as in seed 002 (Malihi & Heidemann 2023, "Efficient
and Controllable Model Compression through Sequential Knowledge Distillation and Pruning"); or
`all` layers for E epochs. Optional L1 and L2 penalties on the prunable weights, as in seed 000
(Kieu & Sood, "Optimizing Deep Learning Model Efficiency Through Comparative Analysis of
Compression Techniques"). Every run goes through engine.model.train.fit: progress, cancellation and
divergence checks are the train loop's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.core.config import Config, param
from engine.core.progress import CancelToken, ProgressFn
from engine.deploy.measure import prunable_weights
from engine.methods.prune.masks import mask_keeper
from engine.model.data import Dataset, Split
from engine.model.train import Batch, StepFn, TrainConfig, cross_entropy_step, fit
from engine.model.zoo import get_module

FINETUNE_MODES = ("none", "last", "all")


def finetune_training(epochs: int = 1, lr: float = 0.01) -> TrainConfig:
    """Fine-tuning's defaults: short, a lower learning rate than training, no weight decay (the L1/L2
    penalties are the regularisers here), cosine decay."""
    return TrainConfig(epochs=epochs, lr=lr, weight_decay=0.0)


@dataclass
class FinetuneConfig(Config):
    """How a pruned model is fine-tuned: which layers, the training run, and the penalties."""

    mode: str = param("none", "fine-tune after pruning: none, last (the classifier only, seed 002) or all layers",
                      choices=FINETUNE_MODES, flag="finetune")
    train: TrainConfig = param(default_factory=finetune_training)
    l1: float = param(0.0, "weight of the L1 penalty on prunable weights while fine-tuning (seed 000)", lo=0, hi=1)
    l2: float = param(0.0, "weight of the L2 penalty on prunable weights while fine-tuning (seed 000)", lo=0, hi=1)
    samples: int | None = param(None, "fine-tune on this many training images, a fixed random subset (default all)",
                                lo=1, hi=10**9)


def l1_penalty(weights: list[Tensor]) -> Tensor:
    return sum(w.abs().sum() for w in weights)


def l2_penalty(weights: list[Tensor]) -> Tensor:
    return sum(w.pow(2).sum() for w in weights)


def with_penalties(step: StepFn, weights: list[Tensor], l1: float, l2: float) -> StepFn:
    """Adds the L1/L2 terms to a step's loss dict (the loop sums the dict)."""
    if not weights or (l1 == 0 and l2 == 0):
        return step

    def run(b: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits, losses = step(b)
        if l1:
            losses["l1"] = l1 * l1_penalty(weights)
        if l2:
            losses["l2"] = l2 * l2_penalty(weights)
        return logits, losses

    return run


def train_subset(data: Dataset, samples: int | None) -> Dataset:
    """The dataset with its train split cut to a fixed random subset (the same for every seed)."""
    if samples is None or samples >= len(data.train):
        return data
    idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:samples]
    return dataclasses.replace(data, train=data.train.subset(idx.sort().values))


@torch.no_grad()
def classifier_inputs(model: nn.Module, head: nn.Module, split: Split, batch_size: int = 512) -> Tensor | None:
    """What the classifier sees for every training image, computed once with the body in eval mode.

    None when the classifier's output is not the model's output (e.g. SqueezeNet pools after its
    conv classifier): then caching its inputs would skip part of the model.
    """
    seen: list[Tensor] = []
    outs: list[Tensor] = []

    def grab(_m: nn.Module, args: tuple, out: Tensor) -> None:
        seen.append(args[0].detach().cpu())
        outs.append(out.detach().cpu())

    hook = head.register_forward_hook(grab)
    was_training = model.training
    model.eval()
    try:
        x_all, _ = split.tensors()
        for i in range(0, len(split), batch_size):
            logits = model(x_all[i : i + batch_size])
            if len(seen) != i // batch_size + 1 or not torch.equal(outs[-1], logits.detach().cpu()):
                return None
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(seen)


def head_inputs(model: nn.Module, data: Dataset, cfg: FinetuneConfig, classifier: str) -> Tensor | None:
    """The classifier inputs that mode `last` trains on (None for other modes, or if they cannot be cached)."""
    if cfg.mode != "last" or cfg.train.augment:  # augmented images change what the body computes
        return None
    return classifier_inputs(model, get_module(model, classifier), train_subset(data, cfg.samples).train)


def _chain(*fns: Callable[[], None] | None) -> Callable[[], None] | None:
    todo = [f for f in fns if f is not None]
    if not todo:
        return None

    def run() -> None:
        for f in todo:
            f()

    return run


def finetune(model: nn.Module, data: Dataset, cfg: FinetuneConfig, *, classifier: str,
             masks: dict[str, Tensor] | None = None, seed: int | None = None, progress: ProgressFn | None = None,
             cancel: CancelToken | None = None, after_step: Callable[[], None] | None = None,
             features: Tensor | None = None) -> list[dict]:
    """Fine-tunes in place as `cfg.mode` says, keeping masked weights at zero; returns fit's history.

    `seed` replaces cfg.train.seed (repeat r of a sweep runs with seed + r). `after_step` runs after
    each optimizer step, once the masks are re-applied. `features` are the
    classifier inputs from `head_inputs` for mode `last`, when several runs share one frozen body.
    """
    if cfg.mode == "none":
        return []
    data = train_subset(data, cfg.samples)
    tc = cfg.train if seed is None else dataclasses.replace(cfg.train, seed=seed)
    keep = _chain(mask_keeper(model, masks) if masks else None, after_step)
    if cfg.mode == "all":
        weights = [m.weight for _, m in prunable_weights(model)]
        step = with_penalties(cross_entropy_step(model), weights, cfg.l1, cfg.l2)
        return fit(model, data, tc, step=step, after_step=keep, progress=progress, cancel=cancel)
    head = get_module(model, classifier)
    own = {id(p) for p in head.parameters()}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in own]
    # the body is frozen, so its outputs are fixed: compute them once instead of every batch
    feats = features if features is not None or tc.augment else classifier_inputs(model, head, data.train)

    def cached(b: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = head(feats[b.index].to(b.x.device))
        return logits, {"ce": F.cross_entropy(logits, b.y)}

    step = cached if feats is not None else cross_entropy_step(model)

    weights = [m.weight for m in head.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for p in frozen:
        p.requires_grad_(False)
    try:
        return fit(model, data, tc, step=with_penalties(step, weights, cfg.l1, cfg.l2), after_step=keep,
                   freeze_bn=True, progress=progress, cancel=cancel)
    finally:
        for p in frozen:
            p.requires_grad_(True)
