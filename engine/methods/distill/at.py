"""at: Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
Convolutional Neural Networks via Attention Transfer" (ICLR 2017).

A feature map's spatial attention is the channel mean of |f|^p, flattened and L2-normalised; the
student matches the teacher's attention at each paired stage. Maps of different sizes are
average-pooled to the smaller size (as in mdistiller), so no adapter is needed: attention has no
channel dimension. The paper's term per pair is mean((a_s - a_t)^2) with beta = 1000 (its code and
mdistiller), a weight tuned on CIFAR's 32x32 maps: the mean divides by the map area, so a 7x7 map
weighs 20 times more per sample and on this tool's small inputs and few epochs the term swamps
cross-entropy (issue #12: beta 1000 left a cnn_s at 0.28 after one epoch on mnist5k, scratch at 0.9). By
default each pair's weight is therefore scaled to its map size, beta * (H * W) / 1024 (1024 = the
32x32 maps beta was tuned on), which is the paper's weight on CIFAR's 32x32 maps and
beta / 1024 * ||a_s - a_t||^2 per sample on any map; `--no-scale-beta-to-map` gives the paper's
unscaled beta. loss = CE + sum over pairs of weight * mean((a_s - a_t)^2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from engine.core.config import param
from engine.core.errors import ConfigError
from engine.methods.distill.base import (
    Distiller,
    FeatureLayers,
    paired_features,
    register_distiller,
    weight_param,
)
from engine.model.train import Batch


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


def at_loss(feats_student: Sequence[Tensor], feats_teacher: Sequence[Tensor], p: float,
            weights: Sequence[float] | None = None) -> Tensor:
    """Sum over pairs of weight * mean((a_s - a_t)^2); weights default to 1."""
    weights = [1.0] * len(feats_student) if weights is None else weights
    return sum(w * at_pair_loss(s, t, p) for w, s, t in zip(weights, feats_student, feats_teacher))


REFERENCE_MAP_AREA = 32 * 32  # the CIFAR maps beta = 1000 was tuned on


def pair_weights(beta: float, map_areas: Sequence[int], scale_to_map: bool) -> list[float]:
    """beta per pair, times (compared map area) / 1024 when scaled to the map size."""
    return [beta * area / REFERENCE_MAP_AREA if scale_to_map else beta for area in map_areas]


@dataclass
class ATConfig(FeatureLayers):
    beta: float = weight_param(1000.0, "weight of the attention term (the paper's beta; 1000 in mdistiller), "
                                       "tuned for 32x32 maps")
    scale_beta_to_map: bool = param(True, "scale beta per pair by the map's area / (32 * 32), so small maps are not "
                                          "over-weighted (--no-scale-beta-to-map: the paper's beta on every map)")
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
        # maps are compared at the smaller size of the pair
        areas = [min(ss[1], ts[1]) * min(ss[2], ts[2]) for ss, ts in zip(s_shapes, t_shapes)]
        self.weights = pair_weights(cfg.beta, areas, cfg.scale_beta_to_map)
        self.student_feats = self.hooks(self.student, [s for s, _ in pairs])
        self.teacher = self.frozen_teacher([t for _, t in pairs])

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(batch.x)
        feats = self.student_feats.take()
        _, feats_teacher = self.teacher.batch(batch)
        return logits, {"ce": F.cross_entropy(logits, batch.y),
                        "at": at_loss(feats, feats_teacher, self.cfg.p, self.weights)}
