"""scratch: the baseline. The same student, the same budget, cross-entropy only (no teacher).

Every comparison table needs it: what a method gains is its accuracy minus this one's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from engine.core.config import Config
from engine.methods.distill.base import Distiller, register_distiller
from engine.model.train import Batch


@dataclass
class ScratchConfig(Config):
    """No settings: the training config (epochs, lr, seed) is shared by every method."""


@register_distiller("scratch")
class Scratch(Distiller):
    """Training from scratch with cross-entropy, the baseline for every distillation method."""

    config = ScratchConfig

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(batch.x)
        return logits, {"ce": F.cross_entropy(logits, batch.y)}
