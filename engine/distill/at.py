"""at: Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer" (ICLR 2017).

A feature map's spatial attention is the channel mean of |f|^p, flattened and L2-normalised; the
student matches the teacher's attention at each paired stage. Maps of different sizes are
average-pooled to the smaller size (as in mdistiller), so no adapter is needed: attention has no
channel dimension. loss = CE + beta * sum over pairs of mean((a_s - a_t)^2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from engine.config import param
from engine.distill.base import Distiller, FeatureLayers, paired_features, register_distiller, weight_param
from engine.errors import ConfigError
from engine.train import Batch


def attention_map(feat: Tensor, p: float) -> Tensor:
    """normalize(mean_c |f|^p) per sample: [B, H * W] with unit L2 norm."""
    return F.normalize(feat.abs().pow(p).mean(1).flatten(1), dim=1)


def at_pair_loss(f_s: Tensor, f_t: Tensor, p: float) -> Tensor:
    """mean((a_s - a_t)^2) after pooling the larger map to the smaller one's size."""
    hs, ws = f_s.shape[-2:]
    ht, wt = f_t.shape[-2:]
    if (hs, ws) != (ht, wt):
        size = (min(hs, ht), min(ws, wt))
        f_s, f_t = F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size)
    return (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()


def at_loss(feats_student: Sequence[Tensor], feats_teacher: Sequence[Tensor], p: float) -> Tensor:
    return sum(at_pair_loss(s, t, p) for s, t in zip(feats_student, feats_teacher))


@dataclass
class ATConfig(FeatureLayers):
    beta: float = weight_param(1000.0, "weight of the attention term (the paper's beta; 1000 in mdistiller)")
    p: float = param(2.0, "attention = mean over channels of |f|^p", lo=0, hi=8, lo_open=True, flag="attention-p")


@register_distiller("at")
class AT(Distiller):
    """Attention Transfer (Zagoruyko & Komodakis, ICLR 2017), on every paired feature stage."""

    config = ATConfig

    def __init__(self, cfg: ATConfig, setup):
        super().__init__(cfg, setup)
        pairs, s_shapes, t_shapes = paired_features(setup, cfg, default="all")
        for (s, t), ss, ts in zip(pairs, s_shapes, t_shapes):
            if len(ss) != 3 or len(ts) != 3:
                raise ConfigError(f"attention transfer needs feature maps [C, H, W]; student layer '{s}' gives "
                                  f"{list(ss)} and teacher layer '{t}' gives {list(ts)}")
        self.student_feats = self.hooks(self.student, [s for s, _ in pairs])
        self.teacher = self.frozen_teacher([t for _, t in pairs])

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(batch.x)
        feats = self.student_feats.take()
        _, feats_teacher = self.teacher.batch(batch)
        return logits, {"ce": F.cross_entropy(logits, batch.y),
                        "at": self.cfg.beta * at_loss(feats, feats_teacher, self.cfg.p)}
