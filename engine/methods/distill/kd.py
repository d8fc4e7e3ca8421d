"""kd: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (NIPS workshop 2015).

loss = (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T)), averaged over
the batch: the paper's weighted average of the hard and the soft objective (mdistiller's defaults
are the same, CE_WEIGHT 0.1 and KD_WEIGHT 0.9). The T^2 keeps the soft term's gradients on the
scale of the hard term's as T changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from engine.core.config import Config, param
from engine.methods.distill.base import Distiller, register_distiller, temperature_param
from engine.model.train import Batch


def kd_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes and averaged over the batch."""
    log_p_student = F.log_softmax(logits_student / temperature, dim=1)
    log_p_teacher = F.log_softmax(logits_teacher / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(1)
    return kl.mean() * temperature**2


def kd_terms(hard_loss: Tensor, soft_loss: Tensor, alpha: float) -> dict[str, Tensor]:
    """{"ce": (1 - alpha) * hard, "kd": alpha * soft}: the paper's weighted average of the two objectives."""
    return {"ce": (1 - alpha) * hard_loss, "kd": alpha * soft_loss}


def alpha_param(default: float) -> Any:
    """The share of the soft (teacher) term, in [0, 1]; the hard term gets the rest."""
    return param(default, "share of the soft (teacher) term; the hard CE term gets 1 - alpha "
                          "(0 = plain training, 1 = the teacher only)", lo=0, hi=1)


@dataclass
class KDConfig(Config):
    temperature: float = temperature_param(4.0, "softens both distributions; 4 as in mdistiller and seed 002")
    alpha: float = alpha_param(0.9)  # 0.9 as mdistiller's KD_WEIGHT (its CE_WEIGHT is 0.1)


@register_distiller("kd")
class KD(Distiller):
    """Distilling the Knowledge in a Neural Network (Hinton et al. 2015)."""

    config = KDConfig

    def __init__(self, cfg: KDConfig, setup):
        super().__init__(cfg, setup)
        self.teacher = self.frozen_teacher()

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(batch.x)
        logits_teacher, _ = self.teacher.batch(batch)
        return logits, kd_terms(F.cross_entropy(logits, batch.y),
                                kd_loss(logits, logits_teacher, self.cfg.temperature), self.cfg.alpha)
