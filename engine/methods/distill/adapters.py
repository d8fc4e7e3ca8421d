"""Small learned adapters that map a student feature onto the shape of a teacher feature.

A map [C_s, H_s, W_s] goes through a 1x1 conv and BatchNorm to C_t channels, then is resized
(bilinear) to H_t x W_t when the sizes differ; a vector [C_s] goes through a Linear and
BatchNorm1d. Adapters are trained with the student (passed to fit as extra modules) and dropped
after training: the student's deployed structure never changes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from engine.core.errors import ConfigError


def match_spatial(x: Tensor, size: tuple[int, int]) -> Tensor:
    """x resized to `size` (H, W) by bilinear interpolation; unchanged when it already fits."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def check_same_kind(student_layer: str, s_shape: tuple, teacher_layer: str, t_shape: tuple) -> None:
    """Both features are maps [C, H, W] or both are vectors [C]; anything else cannot be matched."""
    kinds = {1: "vector", 3: "map"}
    if len(s_shape) not in kinds or len(t_shape) not in kinds or len(s_shape) != len(t_shape):
        raise ConfigError(
            f"student layer '{student_layer}' gives shape {list(s_shape)} and teacher layer '{teacher_layer}' "
            f"gives {list(t_shape)}; pick layers that both give maps [C, H, W] or both vectors [C]")


class FeatureAdapter(nn.Module):
    """1x1 conv + BN (+ resize) for maps, Linear + BN for vectors: student shape -> teacher shape."""

    def __init__(self, s_shape: tuple, t_shape: tuple, student_layer: str = "student", teacher_layer: str = "teacher"):
        super().__init__()
        check_same_kind(student_layer, s_shape, teacher_layer, t_shape)
        self.size = tuple(t_shape[1:]) if len(t_shape) == 3 else None
        if self.size is not None:
            self.proj = nn.Sequential(nn.Conv2d(s_shape[0], t_shape[0], 1, bias=False), nn.BatchNorm2d(t_shape[0]))
        else:
            self.proj = nn.Sequential(nn.Linear(s_shape[0], t_shape[0], bias=False), nn.BatchNorm1d(t_shape[0]))

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj(x)
        return match_spatial(y, self.size) if self.size is not None else y
