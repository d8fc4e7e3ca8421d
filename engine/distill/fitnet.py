"""fitnet: Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep Nets"
(ICLR 2015).

The student's guided layer regresses the teacher's hint layer through a learned adapter (a 1x1
conv + BN, resized to the teacher's map size; see adapters.py): loss = CE + beta * MSE(adapter(f_s),
f_t). By default the hint is the middle pair of feature stages, as in the paper; named layers
give one hint per pair. The paper's separate hint-pretraining stage is folded into one joint
objective, as mdistiller does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from engine.distill.adapters import FeatureAdapter
from engine.distill.base import Distiller, FeatureLayers, paired_features, register_distiller, weight_param
from engine.train import Batch


def hint_loss(adapted_student: Tensor, feat_teacher: Tensor) -> Tensor:
    """Mean squared error between the adapted student feature and the teacher's hint."""
    return F.mse_loss(adapted_student, feat_teacher)


@dataclass
class FitNetConfig(FeatureLayers):
    beta: float = weight_param(100.0, "weight of the hint term (mdistiller's FitNet weight)")


@register_distiller("fitnet")
class FitNet(Distiller):
    """FitNets: Hints for Thin Deep Nets (Romero et al., ICLR 2015)."""

    config = FitNetConfig

    def __init__(self, cfg: FitNetConfig, setup):
        super().__init__(cfg, setup)
        pairs, s_shapes, t_shapes = paired_features(setup, cfg, default="middle")
        self.adapters = nn.ModuleList(FeatureAdapter(ss, ts, s, t)
                                      for (s, t), ss, ts in zip(pairs, s_shapes, t_shapes))
        self.extra_modules = [self.adapters]
        self.student_feats = self.hooks(self.student, [s for s, _ in pairs])
        self.teacher = self.frozen_teacher([t for _, t in pairs])

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(batch.x)
        feats = self.student_feats.take()
        _, feats_teacher = self.teacher.batch(batch)
        hint = sum(hint_loss(a(f), t) for a, f, t in zip(self.adapters, feats, feats_teacher))
        return logits, {"ce": F.cross_entropy(logits, batch.y), "hint": self.cfg.beta * hint}
