"""Each loss against an independent computation on random tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.methods.distill.at import at_loss, attention_map
from engine.methods.distill.crd import ContrastMemory, contrast_scores, nce_loss, update_bank
from engine.methods.distill.dkd import dkd_loss, nckd_loss, tckd_loss, warmup_weight
from engine.methods.distill.dml import mutual_loss
from engine.methods.distill.kd import kd_loss
from engine.methods.distill.mixup_kd import mixed_cross_entropy, mixup
from engine.methods.distill.simkd import fold_into_linear
from engine.methods.distill.sp import similarity_matrix, sp_loss
from engine.methods.distill.vid import VIDHead, gaussian_nll


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 10, generator=g) * 3, torch.randn(6, 10, generator=g) * 3, torch.tensor([0, 3, 9, 2, 2, 7])


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_is_t_squared_times_kl_teacher_to_student(logits, temperature):
    s, t, _ = logits
    expected = sum(_kl(_softmax(t[i].tolist(), temperature), _softmax(s[i].tolist(), temperature))
                   for i in range(len(s))) / len(s) * temperature**2
    assert kd_loss(s, t, temperature).item() == pytest.approx(expected, rel=1e-5)
    assert kd_loss(t, t, temperature).item() == pytest.approx(0.0, abs=1e-6)


def test_dkd_terms_add_up_to_kd_with_the_target_probability_coupling(logits):
    """The paper's Eq. 5: KD = TCKD + (1 - p_target^teacher) * NCKD, sample by sample."""
    s, t, y = logits
    temp = 4.0
    tckd = tckd_loss(s, t, y, temp, reduction="none")
    nckd = nckd_loss(s, t, y, temp, reduction="none")
    p_target_teacher = F.softmax(t / temp, dim=1).gather(1, y[:, None]).squeeze(1)
    kd_per_sample = torch.stack([kd_loss(s[i : i + 1], t[i : i + 1], temp) for i in range(len(s))])
    torch.testing.assert_close(tckd + (1 - p_target_teacher) * nckd, kd_per_sample, rtol=1e-5, atol=1e-6)
    # and DKD weights the two terms freely
    expected = 0.5 * tckd.mean() + 8.0 * nckd.mean()
    assert dkd_loss(s, t, y, 0.5, 8.0, temp).item() == pytest.approx(expected.item(), rel=1e-6)


def test_tckd_is_the_binary_kl_and_nckd_ignores_the_target_logit(logits):
    s, t, y = logits
    i = 1
    ps, pt = _softmax(s[i].tolist(), 2.0), _softmax(t[i].tolist(), 2.0)
    b_s, b_t = [ps[y[i]], 1 - ps[y[i]]], [pt[y[i]], 1 - pt[y[i]]]
    assert tckd_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1], 2.0).item() == pytest.approx(4 * _kl(b_t, b_s), rel=1e-5)
    s2 = s.clone()
    s2[torch.arange(len(y)), y] += 5.0  # moving only the target logit leaves NCKD unchanged
    torch.testing.assert_close(nckd_loss(s2, t, y, 4.0), nckd_loss(s, t, y, 4.0))


def test_dkd_warmup_ramps_linearly_then_holds():
    assert warmup_weight(0.0, 2.0) == 0.0
    assert warmup_weight(1.0, 2.0) == 0.5
    assert warmup_weight(5.0, 2.0) == 1.0
    assert warmup_weight(0.1, 0.0) == 1.0


def test_sp_loss_does_not_depend_on_the_order_of_the_batch():
    g = torch.Generator().manual_seed(2)
    f_s, f_t = torch.randn(8, 16, 4, 4, generator=g), torch.randn(8, 32, 2, 2, generator=g)
    perm = torch.randperm(8, generator=g)
    a, b = sp_loss([f_s], [f_t]), sp_loss([f_s[perm]], [f_t[perm]])
    assert a.item() > 0
    assert b.item() == pytest.approx(a.item(), rel=1e-5)
    # a student whose features are a scaled copy of the teacher's has nothing to learn
    assert sp_loss([f_t * 3], [f_t]).item() == pytest.approx(0.0, abs=1e-7)
    g_s = similarity_matrix(f_s)
    torch.testing.assert_close(g_s.norm(dim=1), torch.ones(8))


def test_attention_transfer_compares_normalised_channel_energy():
    g = torch.Generator().manual_seed(3)
    f = torch.randn(4, 8, 6, 6, generator=g)
    a = attention_map(f, 2.0)
    expected = f.pow(2).mean(1).flatten(1)
    torch.testing.assert_close(a, expected / expected.norm(dim=1, keepdim=True))
    assert at_loss([f * 5], [f], 2.0).item() == pytest.approx(0.0, abs=1e-7)  # scale does not matter
    # maps of different sizes are pooled to the smaller one
    big = torch.randn(4, 3, 12, 12, generator=g)
    assert at_loss([big], [f], 2.0).item() > 0


def test_vid_is_the_gaussian_negative_log_likelihood():
    g = torch.Generator().manual_seed(4)
    mean, target = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    log_scale = torch.tensor([0.0, 1.0, -1.0])
    var = F.softplus(log_scale).view(1, 3, 1, 1) + 1e-5
    expected = (0.5 * ((mean - target) ** 2 / var + var.log())).mean()
    torch.testing.assert_close(gaussian_nll(mean, log_scale, target), expected)
    head = VIDHead((5, 8, 8), (3, 4, 4), init_var=5.0, student_layer="s", teacher_layer="t")
    assert (F.softplus(head.log_scale) + 1e-5).tolist() == pytest.approx([5.0] * 3)
    assert head(torch.randn(2, 5, 8, 8)).shape == (2, 3, 4, 4)


def test_crd_nce_loss_and_memory_bank():
    n, k, dim = 50, 8, 4
    scores = torch.rand(3, k + 1) + 0.01
    noise = k / n
    expected = -(torch.log(scores[:, 0] / (scores[:, 0] + noise)).sum()
                 + torch.log(noise / (scores[:, 1:] + noise)).sum()) / 3
    assert nce_loss(scores, n, eps=0.0).item() == pytest.approx(expected.item(), rel=1e-6)
    mem = ContrastMemory(dim, n)
    v = F.normalize(torch.randn(3, dim), dim=1)
    idx = torch.randint(0, n, (3, k + 1))
    out = contrast_scores(mem.teacher_bank, v, idx, 0.07)
    manual = torch.exp((mem.teacher_bank[idx] * v[:, None, :]).sum(2) / 0.07)
    torch.testing.assert_close(out, manual)
    index = torch.tensor([1, 5, 7])
    update_bank(mem.student_bank, v, index, momentum=0.0)
    torch.testing.assert_close(mem.student_bank[index], v)  # momentum 0 stores the new embeddings
    update_bank(mem.student_bank, F.normalize(torch.randn(3, dim), dim=1), index, momentum=0.5)
    assert mem.student_bank[index].norm(dim=1).tolist() == pytest.approx([1.0] * 3)


def test_dml_mutual_term_averages_kl_from_each_peer():
    g = torch.Generator().manual_seed(5)
    z = [torch.randn(4, 10, generator=g) for _ in range(3)]
    expected = (kd_loss(z[0], z[1], 1.0) + kd_loss(z[0], z[2], 1.0)) / 2
    torch.testing.assert_close(mutual_loss(z, 0, 1.0), expected)
    # the peers' predictions are targets: no gradient reaches them
    zs = [t.clone().requires_grad_() for t in z]
    mutual_loss(zs, 0, 1.0).backward()
    assert zs[0].grad is not None and zs[1].grad is None and zs[2].grad is None


def test_mixup_interpolates_inputs_and_labels():
    x = torch.arange(12.0).view(3, 4)
    y = torch.tensor([0, 1, 2])
    perm = torch.tensor([2, 0, 1])
    xm, ya, yb = mixup(x, y, 0.25, perm)
    torch.testing.assert_close(xm, 0.25 * x + 0.75 * x[perm])
    assert yb.tolist() == [2, 0, 1]
    logits = torch.randn(3, 3)
    soft = 0.25 * F.one_hot(ya, 3) + 0.75 * F.one_hot(yb, 3)
    expected = -(soft * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(mixed_cross_entropy(logits, ya, yb, 0.25), expected)


def test_simkd_projector_and_teacher_classifier_fold_into_one_linear():
    torch.manual_seed(6)
    projector = nn.Sequential(nn.Linear(5, 7, bias=False), nn.BatchNorm1d(7))
    projector.train()
    for _ in range(3):  # give BatchNorm non-trivial running statistics
        projector(torch.randn(16, 5) * 2 + 1)
    projector.eval()
    classifier = nn.Linear(7, 3)
    f = torch.randn(9, 5)
    folded = fold_into_linear(projector, classifier)
    torch.testing.assert_close(folded(f), classifier(projector(f)), rtol=1e-5, atol=1e-5)
    assert folded.weight.shape == (3, 5)
