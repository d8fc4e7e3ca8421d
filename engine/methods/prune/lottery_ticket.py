"""Lottery tickets (Frankle & Carbin 2019, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable
Neural Networks"): train, prune the smallest weights, rewind the survivors to their initial values,
retrain; repeat. With rewind_step k > 0 the survivors go back to their values after k training
steps instead (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

The checkpoint gives the architecture and the dataset; the ticket is searched from a fresh seeded
initialisation, because the checkpoint's trained weights are not an initialisation. Round 0 is the
dense network trained once; round k has sparsity 1 - (1 - rate)^k, as in seed 000's Table III.
`train.seed` seeds the initialisation and every round's training run.

Every round is a `step` point whose level is the global sparsity reached, saved as
root/iteration-k (round 0 too: it is a newly trained dense network, not the input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Point
from engine.core.progress import Progress, scaled
from engine.deploy.measure import measure, measure_latency
from engine.methods.prune.common import (
    PruneTask,
    candidate_layers,
    claim,
    open_for_pruning,
    point_params,
    prune_method,
    pruning_point,
    save_pruned,
)
from engine.methods.prune.finetune import FinetuneConfig, finetune, finetune_training, train_subset
from engine.methods.prune.importance import weight_magnitudes
from engine.methods.prune.masks import SCOPES, apply_masks, rank
from engine.methods.prune.schedule import geometric
from engine.methods.prune.sweep import shared_latency_note
from engine.model.checkpoint import resize_to_state_dict
from engine.model.outputs import level_dir
from engine.model.train import TrainConfig, seed_everything
from engine.model.zoo import build_model


@dataclass
class LotteryTicketConfig(PruneTask):
    scope: str = param("global", "rank all layers under one threshold (global) or each layer alone (layer)",
                       choices=SCOPES)
    rate: float = param(0.2, "fraction of the remaining weights pruned each round (Frankle & Carbin: 20%)", lo=0,
                        hi=1, lo_open=True, hi_open=True)
    rounds: int = param(3, "prune + rewind + retrain rounds after the first dense training", lo=1, hi=1000,
                        flag="iterations")
    rewind_step: int = param(0, "rewind to the weights after this many training steps (0 = the initial weights)",
                             lo=0, hi=10**9)
    keep_first_last: bool = param(False, "leave the first conv and the classifier dense")
    train: TrainConfig = param(default_factory=lambda: finetune_training(epochs=2, lr=0.05))
    samples: int | None = param(None, "train on this many training images, a fixed random subset (default all)",
                                lo=1, hi=10**9)

    def training(self) -> FinetuneConfig:
        return FinetuneConfig(mode="all", train=self.train, samples=self.samples)


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every parameter and buffer, to rewind to."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def rewind(model: nn.Module, saved: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
    """Puts every weight back to its saved value, then zeroes the pruned ones."""
    model.load_state_dict(saved)
    apply_masks(model, masks)


def fresh_init(trained: nn.Module, arch: str, num_classes: int, in_channels: int, image_size: int,
               width: float, seed: int) -> nn.Module:
    """The architecture newly initialised from `seed`, with the trained model's layer shapes."""
    seed_everything(seed)
    model = build_model(arch, num_classes, in_channels, image_size, width)
    resize_to_state_dict(model, trained.state_dict())  # a channel-pruned checkpoint keeps its shapes
    return model.eval()


@prune_method("lottery_ticket", LotteryTicketConfig,
              "train, prune, rewind the survivors to their initial values, retrain; one point per round")
def lottery_ticket(cfg: LotteryTicketConfig, ctx: RunContext) -> list[Point]:
    with claim(cfg, "lottery_ticket") as root:
        return _search(cfg, ctx, root)


def _search(cfg: LotteryTicketConfig, ctx: RunContext, root: Path | None) -> list[Point]:
    trained, meta, data, classifier = open_for_pruning(cfg)
    seed = cfg.train.seed
    model = fresh_init(trained, meta.arch, meta.num_classes, meta.in_channels, meta.image_size, meta.width, seed)
    names = [n for n, _ in candidate_layers(model, classifier, cfg.keep_first_last)]
    layers = [(n, model.get_submodule(n)) for n in names]
    train = cfg.training()
    steps = cfg.train.epochs * math.ceil(len(train_subset(data, cfg.samples).train) / cfg.train.batch_size)
    if cfg.rewind_step > steps:
        raise ConfigError(f"rewind_step must be at most the {steps} steps of one training run, got {cfg.rewind_step}")
    saved = snapshot(model) if cfg.rewind_step == 0 else {}
    done = 0

    def catch_rewind_point() -> None:
        nonlocal done
        done += 1
        if done == cfg.rewind_step:
            saved.update(snapshot(model))

    targets = geometric(cfg.rate, cfg.rounds)
    params = point_params(cfg)
    latency: bool | dict = False
    masks = None
    points = []
    for k, target in enumerate([0.0, *targets]):
        ctx.cancel.raise_if_cancelled()
        if k > 0:
            masks = rank(names, weight_magnitudes(layers, masks), cfg.scope).masks(target)
            rewind(model, saved, masks)
        finetune(model, data, train, classifier=classifier, masks=masks, seed=seed,
                 progress=scaled(ctx.progress, k / (cfg.rounds + 1), (k + 1) / (cfg.rounds + 1)), cancel=ctx.cancel,
                 after_step=catch_rewind_point if k == 0 and cfg.rewind_step else None)
        if cfg.latency and latency is False:
            latency = measure_latency(model, data.test.tensors()[0][:32])
        m = measure(model, data, latency=latency)
        artifact = save_pruned(ctx, root, level_dir("iteration", k), model, meta, cfg, method="lottery_ticket",
                               params=params, level=m.sparsity, level_name="sparsity")
        points.append(pruning_point(
            ctx, m, cfg, method="lottery_ticket", stage="step", params=params, level=m.sparsity,
            level_name="sparsity", artifact=artifact, iteration=k, target_sparsity=target, scope=cfg.scope,
            rewound_to="initial weights" if cfg.rewind_step == 0 else f"weights after {cfg.rewind_step} steps",
            latency_note=shared_latency_note("dense round-0") if cfg.latency else "not timed"))
        ctx.progress(Progress((k + 1) / (cfg.rounds + 1), f"round {k}/{cfg.rounds}: sparsity {m.sparsity:.3f}",
                              metrics={"accuracy": m.accuracy, "sparsity": m.sparsity}))
    return points
