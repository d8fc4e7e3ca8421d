"""simkd: Chen, Mei, Zhang, Wang, Feng & Chen, "Knowledge Distillation with the Reused Teacher
Classifier" (CVPR 2022). The best method in seed 002.

The teacher's classifier is reused, frozen, for the student's predictions; the student's encoder
and a projector are trained with one loss, the L2 distance between the projected student feature
and the teacher's feature: loss = MSE(P(f_s), f_t). No labels are used.

Two projectors (`projector`):

- `linear` (the default): the features are what goes into each model's classifier (the pooled
  embedding), so any pair of architectures works without per-model code, and the projector is a
  Linear + BatchNorm1d. Being affine at inference, the projector and the teacher's classifier fold
  exactly into one Linear that replaces the student's classifier: the delivered student is a plain
  checkpoint of its own architecture, with the same predictions, that pruning and quantization can
  take as it is.
- `conv` (the paper's): the student's last feature map goes through the paper's bottleneck projector
  (1x1, 3x3, 1x1 convolutions, each with BN and ReLU, the middle width the teacher's channels /
  `factor`) onto the teacher's last feature map, then is average-pooled into the teacher's classifier.
  It does not fold: the delivered student is the backbone + projector + the reused teacher head, an
  architecture of its own, `simkd:<student>+<teacher>` (engine/model/reused_head.py), saved as a
  checkpoint like any other that measure, prune and quantize take.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.core.config import Config, param
from engine.core.errors import ConfigError
from engine.methods.distill.adapters import FeatureAdapter
from engine.methods.distill.base import Distiller, classifier_inputs, register_distiller
from engine.model.reused_head import MAX_FACTOR, ReusedHeadArch, reused_head_student
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

    def classify(self, features: Tensor) -> Tensor:
        return self.teacher_classifier(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.features(x))


def _linear_at(model: nn.Module, path: str, who: str) -> nn.Linear:
    m = get_module(model, path)
    if not isinstance(m, nn.Linear):
        raise ConfigError(f"simkd reuses the classifier as a Linear layer, but the {who}'s classifier "
                          f"'{path}' is a {type(m).__name__}; pick another architecture or method")
    return m


@dataclass
class SimKDConfig(Config):
    """One loss, no weights to balance (the point of the method); which projector, and its bottleneck."""

    projector: str = param("linear", "linear: on the pooled features, folded into the student's classifier (saved as "
                                     "the student's own architecture); conv: the paper's 1x1-3x3-1x1 projector on the "
                                     "last feature maps (saved as simkd:<student>+<teacher>, the projector and the "
                                     "teacher's classifier with the student)", choices=("linear", "conv"))
    factor: int = param(2, "conv projector: its middle width is the teacher's channels / factor", lo=1, hi=MAX_FACTOR)


@register_distiller("simkd")
class SimKD(Distiller):
    """Knowledge Distillation with the Reused Teacher Classifier (Chen et al., CVPR 2022)."""

    config = SimKDConfig

    def __init__(self, cfg: SimKDConfig, setup):
        super().__init__(cfg, setup)
        self.conv = cfg.projector == "conv"
        if self.conv:
            self._paper_form(cfg, setup)
            return
        s_path, t_path = setup.student_spec.classifier, setup.teacher_spec.classifier
        self.student_classifier = _linear_at(self.student, s_path, "student")
        teacher_classifier = _linear_at(setup.teacher, t_path, "teacher")
        s_shape, t_shape = classifier_inputs(setup)
        projector = FeatureAdapter(s_shape, t_shape, f"{s_path} (input)", f"{t_path} (input)").proj
        self.student.set_submodule(s_path, nn.Identity())
        self.wrapper = ReusedClassifierStudent(self.student, projector, copy.deepcopy(teacher_classifier))
        self.teacher = self.frozen_teacher([t_path], of="input")

    def _paper_form(self, cfg: SimKDConfig, setup) -> None:
        """The paper's projector between the last feature stages' maps, in the model the checkpoint rebuilds."""
        s_spec, t_spec = setup.student_spec, setup.teacher_spec
        arch = ReusedHeadArch(s_spec.name, t_spec.name, cfg.factor, setup.teacher_width)  # zoo names only
        self.wrapper = reused_head_student(self.student, s_spec.stages[-1], setup.teacher, t_spec.stages[-1],
                                           t_spec.classifier, cfg.factor, setup.data.train.tensors()[0][:2])
        self.wrapper.arch = arch.spec  # what the checkpoint's meta and every point record as the model
        self.teacher = self.frozen_teacher([t_spec.stages[-1]])

    @property
    def model(self) -> nn.Module:
        return self.wrapper

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        projected = self.wrapper.features(batch.x)
        _, (feat_teacher,) = self.teacher.batch(batch)
        return self.wrapper.classify(projected), {"feature": simkd_loss(projected, feat_teacher)}

    def finish(self) -> list[nn.Module]:
        """The student with projector and teacher classifier folded into its own classifier (linear); the
        backbone + projector + teacher head, an architecture of its own (conv)."""
        super().finish()
        self.wrapper.eval()
        if self.conv:
            return [self.wrapper]
        folded = fold_into_linear(self.wrapper.projector, self.wrapper.teacher_classifier)
        self.student.set_submodule(self.setup.student_spec.classifier, folded)
        return [self.student.eval()]
