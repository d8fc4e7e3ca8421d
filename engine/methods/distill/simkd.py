"""simkd: Chen, Mei, Zhang, Wang, Feng & Chen, "Knowledge Distillation with the Reused Teacher
Classifier" (CVPR 2022). The best method in seed 002.

The teacher's classifier is reused, frozen, for the student's predictions; the student's encoder
and a projector are trained with one loss, the L2 distance between the projected student feature
and the teacher's feature: loss = MSE(P(f_s), f_t). No labels are used.

Here the features are what goes into each model's classifier (the pooled embedding), so any pair
of architectures works without per-model code, and the projector is a Linear + BatchNorm1d. Being
affine at inference, the projector and the teacher's classifier fold exactly into one Linear that
replaces the student's classifier: the delivered student is a plain checkpoint of its own
architecture, with the same predictions, that pruning and quantization can take as it is. The paper
aligns the final feature maps through a conv bottleneck projector (1x1, 3x3, 1x1 with BN and ReLU),
which would not fold and would ship the projector and the teacher's head with the student.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.core.config import Config
from engine.core.errors import ConfigError
from engine.methods.distill.adapters import FeatureAdapter
from engine.methods.distill.base import Distiller, classifier_inputs, register_distiller
from engine.model.train import Batch
from engine.model.zoo import get_module


def simkd_loss(projected_student: Tensor, feat_teacher: Tensor) -> Tensor:
    """The L2 feature-alignment loss (mean squared error, as in the paper's code)."""
    return F.mse_loss(projected_student, feat_teacher)


@torch.no_grad()
def fold_into_linear(projector: nn.Sequential, classifier: nn.Linear) -> nn.Linear:
    """One Linear equal to classifier(projector(f)) with the projector (Linear, BatchNorm1d) in eval mode."""
    lin, bn = projector[0], projector[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    a = scale[:, None] * lin.weight  # [C_t, C_s]
    c = shift + (scale * lin.bias if lin.bias is not None else 0)
    out = nn.Linear(a.shape[1], classifier.out_features)
    out.weight.copy_(classifier.weight @ a)
    out.bias.copy_(classifier.weight @ c + (classifier.bias if classifier.bias is not None else 0))
    return out


class ReusedClassifierStudent(nn.Module):
    """Student encoder (its own classifier replaced by an identity) -> projector -> teacher's classifier."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, teacher_classifier: nn.Linear):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.teacher_classifier = teacher_classifier.requires_grad_(False)

    def features(self, x: Tensor) -> Tensor:
        return self.projector(self.encoder(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.teacher_classifier(self.features(x))


def _linear_at(model: nn.Module, path: str, who: str) -> nn.Linear:
    m = get_module(model, path)
    if not isinstance(m, nn.Linear):
        raise ConfigError(f"simkd reuses the classifier as a Linear layer, but the {who}'s classifier "
                          f"'{path}' is a {type(m).__name__}; pick another architecture or method")
    return m


@dataclass
class SimKDConfig(Config):
    """No settings: one loss, no weights to balance (the point of the method)."""


@register_distiller("simkd")
class SimKD(Distiller):
    """Knowledge Distillation with the Reused Teacher Classifier (Chen et al., CVPR 2022)."""

    config = SimKDConfig

    def __init__(self, cfg: SimKDConfig, setup):
        super().__init__(cfg, setup)
        s_path, t_path = setup.student_spec.classifier, setup.teacher_spec.classifier
        self.student_classifier = _linear_at(self.student, s_path, "student")
        teacher_classifier = _linear_at(setup.teacher, t_path, "teacher")
        s_shape, t_shape = classifier_inputs(setup)
        projector = FeatureAdapter(s_shape, t_shape, f"{s_path} (input)", f"{t_path} (input)").proj
        self.student.set_submodule(s_path, nn.Identity())
        self.wrapper = ReusedClassifierStudent(self.student, projector, copy.deepcopy(teacher_classifier))
        self.teacher = self.frozen_teacher([t_path], of="input")

    @property
    def model(self) -> nn.Module:
        return self.wrapper

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        projected = self.wrapper.features(batch.x)
        _, (feat_teacher,) = self.teacher.batch(batch)
        return self.wrapper.teacher_classifier(projected), {"feature": simkd_loss(projected, feat_teacher)}

    def finish(self) -> list[nn.Module]:
        """The student with projector and teacher classifier folded into its own classifier."""
        super().finish()
        self.wrapper.eval()
        folded = fold_into_linear(self.wrapper.projector, self.wrapper.teacher_classifier)
        self.student.set_submodule(self.setup.student_spec.classifier, folded)
        return [self.student.eval()]
