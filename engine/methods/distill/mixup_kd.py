"""mixup_kd: KD on mixup-interpolated inputs and labels, as in seed 003.

Mixup is Zhang, Cisse, Dauphin & Lopez-Paz, "mixup: Beyond Empirical Risk Minimization" (ICLR
2018); the distillation term is Hinton et al.'s KD (see kd.py). Each batch is mixed with a shuffled
copy of itself, x = lam * x_i + (1 - lam) * x_j with lam ~ Beta(a, a); the student learns the mixed
labels and the teacher's soft predictions on the same mixed images, weighted as in kd.py:
loss = (1 - alpha) * mixed CE + alpha * T^2 * KL. The teacher has to run on every mixed batch, so
its outputs are never cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.core.config import Config, param
from engine.methods.distill.base import Distiller, register_distiller, temperature_param
from engine.methods.distill.kd import alpha_param, kd_loss, kd_terms
from engine.model.train import Batch


def mixup(x: Tensor, y: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(lam * x + (1 - lam) * x[perm], y, y[perm]): the mixed inputs and the two label sets."""
    return lam * x + (1 - lam) * x[perm], y, y[perm]


def mixed_cross_entropy(logits: Tensor, y_a: Tensor, y_b: Tensor, lam: float) -> Tensor:
    """Cross-entropy against the interpolated labels lam * y_a + (1 - lam) * y_b."""
    return lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)


@dataclass
class MixupKDConfig(Config):
    temperature: float = temperature_param(4.0, "KD temperature")
    alpha: float = alpha_param(0.9)  # as kd
    mixup_alpha: float = param(0.4, "lam ~ Beta(mixup_alpha, mixup_alpha); small values mix little",
                               lo=0, hi=100, lo_open=True)


@register_distiller("mixup_kd")
class MixupKD(Distiller):
    """Knowledge distillation on mixup-interpolated images and labels (mixup: Zhang et al. 2018)."""

    config = MixupKDConfig

    def __init__(self, cfg: MixupKDConfig, setup):
        super().__init__(cfg, setup)
        self.teacher = self.frozen_teacher(cache=False)
        # its own seeded generators: the same seed gives the same mixes, and the global RNG is untouched
        self.rng = torch.Generator().manual_seed(setup.train.seed + 31337)
        self.lam_rng = np.random.default_rng(setup.train.seed + 31337)

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        lam = float(self.lam_rng.beta(self.cfg.mixup_alpha, self.cfg.mixup_alpha))
        perm = torch.randperm(len(batch.y), generator=self.rng).to(batch.x.device)
        x, y_a, y_b = mixup(batch.x, batch.y, lam, perm)
        logits = self.student(x)
        logits_teacher, _ = self.teacher(x)
        return logits, kd_terms(mixed_cross_entropy(logits, y_a, y_b, lam),
                                kd_loss(logits, logits_teacher, self.cfg.temperature), self.cfg.alpha)

