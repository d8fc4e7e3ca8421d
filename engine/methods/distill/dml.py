"""dml: Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning" (CVPR 2018).

Two or more students learn together; each minimises its cross-entropy plus the mean KL from its
peers' predictions to its own (the peers' side detached, so each student only moves itself):
    loss_i = CE(s_i, y) + 1/(K-1) * sum_{j != i} T^2 * KL(p_j || p_i)
and, optionally, a KD term from the teacher (teacher_alpha > 0). The first student is the one the
run was given (fresh, or from --student-init); the others start from different seeds, as in seed
003 where the two students had different initialisations. All students step together under one
optimizer (the paper alternates their updates within a step); every student is delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from engine.core.config import Config, param
from engine.methods.distill.base import Distiller, register_distiller, temperature_param, weight_param
from engine.methods.distill.kd import kd_loss
from engine.model.train import Batch


def mutual_loss(logits: Sequence[Tensor], i: int, temperature: float) -> Tensor:
    """Mean over peers j != i of T^2 * KL(p_j || p_i), the peers' predictions held fixed."""
    peers = [kd_loss(logits[i], logits[j].detach(), temperature) for j in range(len(logits)) if j != i]
    return sum(peers) / len(peers)


@dataclass
class DMLConfig(Config):
    students: int = param(2, "how many students learn together (the first is the run's student)", lo=2, hi=8)
    temperature: float = temperature_param(1.0, "the paper compares plain softmax outputs (T = 1)")
    teacher_alpha: float = weight_param(0.0, "weight of a KD term from the teacher (at T = temperature); 0 = no teacher")


@register_distiller("dml")
class DML(Distiller):
    """Deep Mutual Learning (Zhang et al., CVPR 2018)."""

    config = DMLConfig

    def __init__(self, cfg: DMLConfig, setup):
        super().__init__(cfg, setup)
        self.peers: list[nn.Module] = [self.student] + [setup.new_student(setup.train.seed + k)
                                                       for k in range(1, cfg.students)]
        self.extra_modules = self.peers[1:]
        self.teacher = self.frozen_teacher() if cfg.teacher_alpha > 0 else None

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = [p(batch.x) for p in self.peers]
        t = self.cfg.temperature
        losses: dict[str, Tensor] = {}
        logits_teacher = self.teacher.batch(batch)[0] if self.teacher is not None else None
        for i, z in enumerate(logits, start=1):
            losses[f"ce_{i}"] = F.cross_entropy(z, batch.y)
            losses[f"mutual_{i}"] = mutual_loss(logits, i - 1, t)
            if logits_teacher is not None:
                losses[f"kd_{i}"] = self.cfg.teacher_alpha * kd_loss(z, logits_teacher, t)
        return logits[0], losses

    def finish(self) -> list[nn.Module]:
        super().finish()
        return [p.eval() for p in self.peers]
