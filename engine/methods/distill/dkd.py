"""dkd: Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation" (CVPR 2022).

The KD term splits into a target-class part and a non-target-class part (the paper's Eq. 5):
    KD = TCKD + (1 - p_t^T) * NCKD
TCKD is the KL between the binary distributions [p_target, 1 - p_target] of teacher and student;
NCKD is the KL between their distributions over the non-target classes only (renormalised). DKD
drops the (1 - p_t^T) coupling and weights the terms freely: CE + w * (alpha * TCKD + beta * NCKD),
with w ramped linearly from 0 to 1 over the warm-up. Both KLs are scaled by T^2 as in mdistiller.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.core.config import Config, param
from engine.methods.distill.base import Distiller, register_distiller, temperature_param, weight_param
from engine.model.train import Batch


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    return per_sample.mean() if reduction == "mean" else per_sample


def _binary_log_probs(logits: Tensor, target: Tensor) -> Tensor:
    """[log p_target, log (1 - p_target)] per sample, computed stably with logsumexp."""
    target_mask = F.one_hot(target, logits.shape[1]).bool()
    lse_all = logits.logsumexp(1)
    log_p_target = logits.gather(1, target[:, None]).squeeze(1) - lse_all
    log_p_rest = logits.masked_fill(target_mask, float("-inf")).logsumexp(1) - lse_all
    return torch.stack([log_p_target, log_p_rest], dim=1)


def _non_target(logits: Tensor, target: Tensor) -> Tensor:
    """The logits of every class but the target: [B, C - 1]."""
    keep = ~F.one_hot(target, logits.shape[1]).bool()
    return logits[keep].view(logits.shape[0], logits.shape[1] - 1)


def tckd_loss(logits_student: Tensor, logits_teacher: Tensor, target: Tensor, temperature: float,
              reduction: str = "mean") -> Tensor:
    """Target-class KD: T^2 * KL(b^T || b^S) with b = [p_target, 1 - p_target] at temperature T."""
    log_b_s = _binary_log_probs(logits_student / temperature, target)
    log_b_t = _binary_log_probs(logits_teacher / temperature, target)
    kl = F.kl_div(log_b_s, log_b_t, reduction="none", log_target=True).sum(1)
    return _reduce(kl * temperature**2, reduction)


def nckd_loss(logits_student: Tensor, logits_teacher: Tensor, target: Tensor, temperature: float,
              reduction: str = "mean") -> Tensor:
    """Non-target-class KD: T^2 * KL over the non-target classes, each side renormalised."""
    log_p_s = F.log_softmax(_non_target(logits_student, target) / temperature, dim=1)
    log_p_t = F.log_softmax(_non_target(logits_teacher, target) / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(1)
    return _reduce(kl * temperature**2, reduction)


def dkd_loss(logits_student: Tensor, logits_teacher: Tensor, target: Tensor, alpha: float, beta: float,
             temperature: float) -> Tensor:
    """alpha * TCKD + beta * NCKD (batch means)."""
    return (alpha * tckd_loss(logits_student, logits_teacher, target, temperature)
            + beta * nckd_loss(logits_student, logits_teacher, target, temperature))


def warmup_weight(epochs_done: float, warmup_epochs: float) -> float:
    """The DKD weight after `epochs_done` (fractional) epochs: linear from 0 to 1 over the warm-up."""
    return 1.0 if warmup_epochs <= 0 else min(1.0, epochs_done / warmup_epochs)


@dataclass
class DKDConfig(Config):
    alpha: float = weight_param(1.0, "weight of TCKD (the target-class term)")
    beta: float = weight_param(8.0, "weight of NCKD (the non-target-class term; the paper's CIFAR-100 value)")
    temperature: float = temperature_param(4.0, "softens both distributions")
    warmup_epochs: float = param(1.0, "the DKD weight ramps from 0 to 1 over this many epochs; 0 = none",
                                 lo=0, hi=10_000)


@register_distiller("dkd")
class DKD(Distiller):
    """Decoupled Knowledge Distillation (Zhao et al., CVPR 2022)."""

    config = DKDConfig

    def __init__(self, cfg: DKDConfig, setup):
        super().__init__(cfg, setup)
        self.teacher = self.frozen_teacher()
        self.steps_per_epoch = setup.data.train.num_batches(setup.train.batch_size)
        self.steps = 0

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        self.steps += 1
        # the ramp advances every step (the paper's is per epoch), so short runs get a smooth warm-up
        w = warmup_weight(self.steps / self.steps_per_epoch, self.cfg.warmup_epochs)
        logits = self.student(batch.x)
        logits_teacher, _ = self.teacher.batch(batch)
        t = self.cfg.temperature
        return logits, {
            "ce": F.cross_entropy(logits, batch.y),
            "tckd": w * self.cfg.alpha * tckd_loss(logits, logits_teacher, batch.y, t),
            "nckd": w * self.cfg.beta * nckd_loss(logits, logits_teacher, batch.y, t),
        }
