"""fitnet: Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep Nets"
(ICLR 2015).

The student's guided layer regresses the teacher's hint layer through a learned regressor: a 1x1
conv + BN (resized to the teacher's map size; see adapters.py) that ends with the hint layer's own
non-linearity, since the paper requires the regressor and the hint to be "the same
non-linearity" (a ReLU for post-ReLU stages, as RepDistiller's and mdistiller's ConvReg). loss =
CE + beta * MSE(regressor(f_s), f_t), with beta = 10 by default rather than mdistiller's 100: on this
tool's budgets (3 epochs of mnist5k) 100 leaves the student 3.8 points behind scratch. By default the hint is the middle pair of feature stages, as
in the paper; named layers give one hint per pair. The paper's separate hint-pretraining stage is
folded into one joint objective, as mdistiller does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.methods.distill.adapters import FeatureAdapter
from engine.methods.distill.base import (
    Distiller,
    FeatureLayers,
    paired_features,
    register_distiller,
    weight_param,
)
from engine.model.train import Batch
from engine.model.zoo import get_module

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Sigmoid, nn.Tanh)
# modules that may follow the activation without changing what the output is made of
PASS_THROUGH = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity)


def hint_loss(adapted_student: Tensor, feat_teacher: Tensor) -> Tensor:
    """Mean squared error between the adapted student feature and the teacher's hint."""
    return F.mse_loss(adapted_student, feat_teacher)


@torch.no_grad()
def output_nonlinearity(model: nn.Module, path: str, example: Tensor) -> nn.Module:
    """A copy of the activation the layer `path` ends with (in execution order), or Identity if it ends linearly."""
    layer = get_module(model, path)
    ran: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda m, args, out: ran.append(m))
               for m in layer.modules() if not list(m.children())]
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        model(example.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for m in reversed(ran):
        if isinstance(m, ACTIVATIONS):
            return copy.deepcopy(m)
        if not isinstance(m, PASS_THROUGH):
            break
    return nn.Identity()


@dataclass
class FitNetConfig(FeatureLayers):
    # mdistiller's 100 is for 240 CIFAR epochs; at 3 epochs cnn_l -> cnn_s on mnist5k it trails scratch by 3.8
    # points (30: 1.7, 10: 0.8), so the default is 10 (bench/bench_distill.py --defaults-table)
    beta: float = weight_param(10.0, "weight of the hint term (mdistiller's is 100, tuned for long CIFAR runs; 10 "
                                     "keeps a 3-epoch run within a point of scratch)")


@register_distiller("fitnet")
class FitNet(Distiller):
    """FitNets: Hints for Thin Deep Nets (Romero et al., ICLR 2015)."""

    config = FitNetConfig

    def __init__(self, cfg: FitNetConfig, setup):
        super().__init__(cfg, setup)
        pairs, s_shapes, t_shapes = paired_features(setup, cfg, default="middle")
        example = setup.data.train.tensors()[0][:2]
        # the regressor: adapter, then the hint layer's non-linearity
        self.adapters = nn.ModuleList(
            nn.Sequential(FeatureAdapter(ss, ts, s, t), output_nonlinearity(setup.teacher, t, example))
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
