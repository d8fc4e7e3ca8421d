"""crd: Tian, Krishnan & Isola, "Contrastive Representation Distillation" (ICLR 2020).

Student and teacher embeddings (each model's classifier input, through a learned Linear to
`feat_dim` and L2-normalised) are contrasted against a memory bank holding one embedding per
training image for each side. For every sample, its own stored embedding is the positive and
`nce_k` images of the other classes are the negatives, drawn without replacement as the authors'
code does (RepDistiller's CIFAR100InstanceSample, mode 'exact'); `negatives=uniform` draws them
from all images instead, some of the anchor's class. The NCE loss with noise probability 1/N pushes
the student's embedding towards the teacher's for the same image and away from other images'.
loss = CE + beta * (NCE of the student against the teacher bank + NCE of the teacher against the
student bank). The bank entries of the batch are refreshed with momentum after each step.
The sample indices come through `Batch.index`, so the training loop needs no special case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.core.config import Config, param
from engine.core.errors import ConfigError
from engine.methods.distill.base import Distiller, classifier_inputs, register_distiller, weight_param
from engine.model.train import Batch


def contrast_scores(bank: Tensor, v: Tensor, idx: Tensor, temperature: float) -> Tensor:
    """exp(<bank[idx], v> / T): [B, K + 1], the positive in column 0."""
    weights = bank[idx.flatten()].view(*idx.shape, bank.shape[1]).detach()
    return torch.exp(torch.bmm(weights, v[:, :, None]).squeeze(2) / temperature)


def nce_loss(scores: Tensor, num_data: int, eps: float = 1e-7) -> Tensor:
    """NCE with K negatives and noise probability 1/N on normalised scores (positive first)."""
    k = scores.shape[1] - 1
    noise = k / num_data
    log_d1 = torch.log(scores[:, 0] / (scores[:, 0] + noise + eps))
    log_d0 = torch.log(noise / (scores[:, 1:] + noise + eps))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


class NegativeSampler:
    """Row i: [index[i], then k negatives]; negatives from the other classes, or from all images."""

    def __init__(self, labels: Tensor, k: int, negatives: str, generator: torch.Generator):
        self.labels = labels.cpu()
        self.k = k
        self.generator = generator
        self.num_data = len(labels)
        # per class, the images of every other class (RepDistiller's cls_negative)
        self.others = ({int(c): (self.labels != c).nonzero().flatten() for c in self.labels.unique()}
                       if negatives == "other_classes" else None)

    def __call__(self, index: Tensor) -> Tensor:
        index = index.cpu()
        if self.others is None:
            idx = torch.randint(0, self.num_data, (len(index), self.k + 1), generator=self.generator)
        else:
            idx = torch.empty(len(index), self.k + 1, dtype=torch.long)
            anchor_labels = self.labels[index]
            for c in anchor_labels.unique().tolist():
                rows = (anchor_labels == c).nonzero().flatten()
                pool = self.others[c]
                if self.k <= len(pool):  # without replacement, as the authors' np.random.choice
                    pick = torch.rand(len(rows), len(pool), generator=self.generator).topk(self.k, dim=1).indices
                else:
                    pick = torch.randint(0, len(pool), (len(rows), self.k), generator=self.generator)
                idx[rows, 1:] = pool[pick]
        idx[:, 0] = index
        return idx


@torch.no_grad()
def update_bank(bank: Tensor, v: Tensor, index: Tensor, momentum: float) -> None:
    """bank[index] = normalize(momentum * bank[index] + (1 - momentum) * v)."""
    bank.index_copy_(0, index, F.normalize(bank[index] * momentum + v.detach() * (1 - momentum), dim=1))


class Embed(nn.Module):
    """Linear to the contrast dimension, then L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


class ContrastMemory(nn.Module):
    """One bank of embeddings per side, and the normalising constants Z set on the first batch."""

    def __init__(self, dim: int, num_data: int):
        super().__init__()
        stdv = 1.0 / math.sqrt(dim / 3)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("student_bank", torch.rand(num_data, dim, generator=g) * 2 * stdv - stdv)
        self.register_buffer("teacher_bank", torch.rand(num_data, dim, generator=g) * 2 * stdv - stdv)
        self.register_buffer("z", torch.tensor([-1.0, -1.0]))  # Z for (student, teacher) scores; < 0 = not set


@dataclass
class CRDConfig(Config):
    beta: float = weight_param(0.8, "weight of the contrastive term (mdistiller's value)")
    feat_dim: int = param(128, "embedding size of the contrast space", lo=1, hi=8192)
    nce_k: int = param(1024, "negatives per sample; must be below the number of training images", lo=1, hi=1_000_000)
    negatives: str = param("other_classes", "where negatives come from: images of the other classes (the authors' "
                                            "code) or uniform over all images", choices=("other_classes", "uniform"))
    nce_t: float = param(0.07, "temperature of the scores", lo=0, hi=10, lo_open=True)
    # --nce-momentum: the training config's --momentum is SGD's
    momentum: float = param(0.5, "memory bank update momentum", lo=0, hi=1, hi_open=True, flag="nce-momentum")


@register_distiller("crd")
class CRD(Distiller):
    """Contrastive Representation Distillation (Tian et al., ICLR 2020)."""

    config = CRDConfig

    def __init__(self, cfg: CRDConfig, setup):
        super().__init__(cfg, setup)
        self.num_data = len(setup.data.train)
        if cfg.nce_k >= self.num_data:
            raise ConfigError(f"nce_k must be below the number of training images ({self.num_data}), got {cfg.nce_k}")
        s_shape, t_shape = classifier_inputs(setup)
        self.embed_student = Embed(math.prod(s_shape), cfg.feat_dim)
        self.embed_teacher = Embed(math.prod(t_shape), cfg.feat_dim)
        self.memory = ContrastMemory(cfg.feat_dim, self.num_data)
        self.extra_modules = [self.embed_student, self.embed_teacher, self.memory]
        self.student_feats = self.hooks(self.student, [setup.student_spec.classifier], of="input")
        self.teacher = self.frozen_teacher([setup.teacher_spec.classifier], of="input")
        # negatives: seeded, global RNG untouched
        self.sampler = NegativeSampler(setup.data.train.y, cfg.nce_k, cfg.negatives,
                                       torch.Generator().manual_seed(setup.train.seed + 7))

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(batch.x)
        (f_s,) = self.student_feats.take()
        _, (f_t,) = self.teacher.batch(batch)
        v_s, v_t = self.embed_student(f_s), self.embed_teacher(f_t)
        index = batch.index.to(v_s.device)
        idx = self.sampler(index).to(v_s.device)
        mem = self.memory
        # the student is scored against the teacher bank, the teacher against the student bank
        out_s = contrast_scores(mem.teacher_bank, v_s, idx, self.cfg.nce_t)
        out_t = contrast_scores(mem.student_bank, v_t, idx, self.cfg.nce_t)
        if mem.z[0] < 0:  # Z estimated once, from the first batch, as in the paper's code
            mem.z.copy_(torch.stack([out_s.mean(), out_t.mean()]).detach() * self.num_data)
        loss = nce_loss(out_s / mem.z[0], self.num_data) + nce_loss(out_t / mem.z[1], self.num_data)
        update_bank(mem.student_bank, v_s, index, self.cfg.momentum)
        update_bank(mem.teacher_bank, v_t, index, self.cfg.momentum)
        return logits, {"ce": F.cross_entropy(logits, batch.y), "crd": self.cfg.beta * loss}
