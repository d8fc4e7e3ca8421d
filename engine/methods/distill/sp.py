"""sp: Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).

For a batch of B samples, G = F F^T (F: the flattened features, one row per sample), each row
L2-normalised; the student matches the teacher's B x B similarity matrix:
loss = CE + beta * sum over pairs of ||G_s - G_t||_F^2 / B^2. Only similarities between samples
are compared, so the two models' feature shapes may differ freely and no adapter is needed; the
loss does not depend on the order of the batch. By default the deepest stage pair is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from engine.methods.distill.base import (
    Distiller,
    FeatureLayers,
    paired_features,
    register_distiller,
    weight_param,
)
from engine.model.train import Batch


def similarity_matrix(feat: Tensor) -> Tensor:
    """Row-normalised G = F F^T for a batch of features of any shape: [B, B]."""
    f = feat.flatten(1)
    return F.normalize(f @ f.t(), dim=1)


def sp_pair_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    b = f_s.shape[0]
    return (similarity_matrix(f_s) - similarity_matrix(f_t)).pow(2).sum() / (b * b)


def sp_loss(feats_student: Sequence[Tensor], feats_teacher: Sequence[Tensor]) -> Tensor:
    return sum(sp_pair_loss(s, t) for s, t in zip(feats_student, feats_teacher))


@dataclass
class SPConfig(FeatureLayers):
    beta: float = weight_param(3000.0, "weight of the similarity term (the paper's gamma; 3000 in mdistiller)")


@register_distiller("sp")
class SP(Distiller):
    """Similarity-Preserving Knowledge Distillation (Tung & Mori, ICCV 2019)."""

    config = SPConfig

    def __init__(self, cfg: SPConfig, setup):
        super().__init__(cfg, setup)
        pairs, _, _ = paired_features(setup, cfg, default="last")
        self.student_feats = self.hooks(self.student, [s for s, _ in pairs])
        self.teacher = self.frozen_teacher([t for _, t in pairs])

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(batch.x)
        feats = self.student_feats.take()
        _, feats_teacher = self.teacher.batch(batch)
        return logits, {"ce": F.cross_entropy(logits, batch.y), "sp": self.cfg.beta * sp_loss(feats, feats_teacher)}
