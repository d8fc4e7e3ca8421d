"""vid: Ahn, Hu, Damianou, Lawrence & Dai, "Variational Information Distillation for Knowledge
Transfer" (CVPR 2019).

VID maximises a variational lower bound on the mutual information between teacher and student
features: for each paired stage a small regressor predicts the teacher feature's mean from the
student's, with a learned per-channel variance (softplus, so it stays positive), and the loss is
the Gaussian negative log-likelihood 0.5 * ((mu - f_t)^2 / var + log var), averaged.
loss = CE + beta * sum over pairs. Unlike mdistiller, the variances here are really trained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.core.config import param
from engine.methods.distill.adapters import check_same_kind, match_spatial
from engine.methods.distill.base import (
    Distiller,
    FeatureLayers,
    paired_features,
    register_distiller,
    weight_param,
)
from engine.model.train import Batch

VAR_EPS = 1e-5


def gaussian_nll(mean: Tensor, log_scale: Tensor, target: Tensor) -> Tensor:
    """Mean of 0.5 * ((mean - target)^2 / var + log var), var = softplus(log_scale) + eps per channel."""
    var = F.softplus(log_scale) + VAR_EPS
    var = var.view(1, -1, *([1] * (target.dim() - 2)))
    return (0.5 * ((mean - target) ** 2 / var + var.log())).mean()


class VIDHead(nn.Module):
    """Predicts a teacher feature's mean from the student's; holds the per-channel variances."""

    def __init__(self, s_shape: tuple, t_shape: tuple, init_var: float, student_layer: str, teacher_layer: str):
        super().__init__()
        check_same_kind(student_layer, s_shape, teacher_layer, t_shape)
        cs, ct = s_shape[0], t_shape[0]
        layer = (lambda i, o: nn.Conv2d(i, o, 1, bias=False)) if len(t_shape) == 3 else nn.Linear
        self.size = tuple(t_shape[1:]) if len(t_shape) == 3 else None
        self.regressor = nn.Sequential(layer(cs, ct), nn.ReLU(), layer(ct, ct), nn.ReLU(), layer(ct, ct))
        # softplus(log_scale) + eps starts at init_var
        self.log_scale = nn.Parameter(torch.full((ct,), math.log(math.expm1(init_var - VAR_EPS))))

    def forward(self, f_s: Tensor) -> Tensor:
        mean = self.regressor(f_s)
        return match_spatial(mean, self.size) if self.size is not None else mean


def vid_loss(heads: Sequence[VIDHead], feats_student: Sequence[Tensor], feats_teacher: Sequence[Tensor]) -> Tensor:
    return sum(gaussian_nll(h(s), h.log_scale, t) for h, s, t in zip(heads, feats_student, feats_teacher))


@dataclass
class VIDConfig(FeatureLayers):
    beta: float = weight_param(1.0, "weight of the VID term (mdistiller's value)")
    init_var: float = param(5.0, "starting variance of every channel", lo=1e-3, hi=1e3)


@register_distiller("vid")
class VID(Distiller):
    """Variational Information Distillation for Knowledge Transfer (Ahn et al., CVPR 2019)."""

    config = VIDConfig

    def __init__(self, cfg: VIDConfig, setup):
        super().__init__(cfg, setup)
        pairs, s_shapes, t_shapes = paired_features(setup, cfg, default="all")
        self.heads = nn.ModuleList(VIDHead(ss, ts, cfg.init_var, s, t)
                                   for (s, t), ss, ts in zip(pairs, s_shapes, t_shapes))
        self.extra_modules = [self.heads]
        self.student_feats = self.hooks(self.student, [s for s, _ in pairs])
        self.teacher = self.frozen_teacher([t for _, t in pairs])

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(batch.x)
        feats = self.student_feats.take()
        _, feats_teacher = self.teacher.batch(batch)
        return logits, {"ce": F.cross_entropy(logits, batch.y),
                        "vid": self.cfg.beta * vid_loss(self.heads, feats, feats_teacher)}
