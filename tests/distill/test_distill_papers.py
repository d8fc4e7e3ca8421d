"""Each loss weighted, and each helper built, as its paper and the authors' code do (issue #12, items 12-15).

The methods are built on digits with untrained models and asked for one step: no training, except the
last test, which trains `at` at its defaults for one epoch (the shared run of `method_runs`).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import engine.methods.distill.at as at_module
import engine.methods.distill.crd as crd_module
from engine.methods.distill.at import ATConfig
from engine.methods.distill.base import DISTILLERS, DistillSetup
from engine.methods.distill.crd import CRDConfig
from engine.methods.distill.fitnet import FitNetConfig
from engine.methods.distill.kd import KDConfig, kd_loss
from engine.methods.distill.mixup_kd import MixupKDConfig
from engine.model.train import Batch, TrainConfig
from engine.model.zoo import MODELS, build_model


def untrained_setup(data, student: str = "cnn_s", teacher: str = "cnn_l") -> DistillSetup:
    c, h, _ = data.input_shape
    torch.manual_seed(0)
    return DistillSetup(build_model(student, data.num_classes, c, h), build_model(teacher, data.num_classes, c, h),
                        MODELS.get(student), MODELS.get(teacher), data, TrainConfig(batch_size=32),
                        torch.device("cpu"), lambda seed: build_model(student, data.num_classes, c, h))


def batches(data, size: int = 32, count: int = 1) -> list[Batch]:
    x, y = data.train.tensors()
    return [Batch(x[i * size : (i + 1) * size], y[i * size : (i + 1) * size], torch.arange(i * size, (i + 1) * size), 0)
            for i in range(count)]


# ---------------------------------------------------------------- 12. KD: (1 - alpha) * CE + alpha * T^2 * KL


@pytest.mark.parametrize("method,config", [("kd", KDConfig), ("mixup_kd", MixupKDConfig)])
def test_kd_alpha_one_has_no_hard_term_and_alpha_zero_has_no_soft_term(method, config, digits):
    (batch,) = batches(digits)
    for alpha, empty in [(1.0, "ce"), (0.0, "kd")]:
        distiller = DISTILLERS.get(method)(config(alpha=alpha), untrained_setup(digits))
        _, terms = distiller.step(batch)
        assert terms[empty].item() == 0.0, f"{method} at alpha={alpha}: {terms}"
        assert sum(terms.values()).item() > 0


def test_kd_weights_the_hard_and_the_soft_term_as_hinton_et_al(digits):
    """mdistiller's defaults: CE_WEIGHT 0.1, KD_WEIGHT 0.9; at alpha 0.9 the teacher carries 90%."""
    (batch,) = batches(digits)
    setup = untrained_setup(digits)
    distiller = DISTILLERS.get("kd")(KDConfig(alpha=0.9, temperature=4.0), setup)
    logits, terms = distiller.step(batch)
    with torch.no_grad():
        logits_teacher = setup.teacher(batch.x)
    torch.testing.assert_close(terms["ce"], 0.1 * F.cross_entropy(logits, batch.y))
    torch.testing.assert_close(terms["kd"], 0.9 * kd_loss(logits, logits_teacher, 4.0))


def test_kd_alpha_is_a_share_in_zero_to_one():
    from engine.core.errors import ConfigError

    with pytest.raises(ConfigError, match="alpha"):
        KDConfig(alpha=1.5)


# ---------------------------------------------------------------- 13. CRD: negatives from the other classes


def _drawn_indices(digits, monkeypatch, **settings) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The [B, K + 1] index rows CRD scores over three steps, and the training labels."""
    seen: list[torch.Tensor] = []
    real = crd_module.contrast_scores

    def spy(bank, v, idx, temperature):
        seen.append(idx.clone())
        return real(bank, v, idx, temperature)

    monkeypatch.setattr(crd_module, "contrast_scores", spy)
    distiller = DISTILLERS.get("crd")(CRDConfig(nce_k=256, **settings), untrained_setup(digits))
    for batch in batches(digits, count=3):
        distiller.step(batch)
    return seen[::2], digits.train.y  # each step scores both sides with the same rows


def test_crd_negatives_never_share_the_anchor_class(digits, monkeypatch):
    rows, labels = _drawn_indices(digits, monkeypatch)
    for step, idx in enumerate(rows):
        assert idx[:, 0].tolist() == list(range(32 * step, 32 * (step + 1)))  # the positive is the anchor itself
        anchor, negatives = labels[idx[:, :1]], labels[idx[:, 1:]]
        assert (negatives != anchor).all()
        # drawn without replacement, as the authors' np.random.choice(cls_negative[target], k, replace=False)
        assert all(len(set(r.tolist())) == 256 for r in idx[:, 1:])


def test_crd_uniform_negatives_stay_an_option(digits, monkeypatch):
    rows, labels = _drawn_indices(digits, monkeypatch, negatives="uniform")
    same_class = torch.cat([(labels[idx[:, 1:]] == labels[idx[:, :1]]).flatten() for idx in rows]).float().mean()
    assert 0.05 < same_class.item() < 0.2  # about one in ten digits shares the anchor's class


# ---------------------------------------------------------------- 14. FitNet: the regressor ends like the hint layer


def test_fitnet_regressor_ends_with_the_hint_layers_relu(digits):
    setup = untrained_setup(digits)
    distiller = DISTILLERS.get("fitnet")(FitNetConfig(), setup)
    (regressor,) = distiller.adapters
    regressor.train()
    out = regressor(torch.randn(16, 64, 2, 2) * 3)  # cnn_s features.1 on digits: [64, 2, 2]
    with torch.no_grad():
        hint = setup.teacher.eval().features[:2](batches(digits)[0].x)
    assert (hint >= 0).all()  # the hint (cnn_l features.1) is post-ReLU ...
    assert (out >= 0).all() and (out > 0).any()  # ... and so is what regresses to it
    assert out.shape[1:] == hint.shape[1:]


def test_fitnet_regressor_stays_linear_when_the_hint_layer_ends_linearly(digits):
    """A hint taken before the ReLU (the conv+BN of a stage) is regressed without a non-linearity."""
    setup = untrained_setup(digits)
    distiller = DISTILLERS.get("fitnet")(
        FitNetConfig(student_layers=("features.1.1.1",), teacher_layers=("features.1.1.1",)), setup)
    (regressor,) = distiller.adapters
    assert (regressor(torch.randn(16, 64, 4, 4)) < 0).any()
    assert not any(isinstance(m, nn.ReLU) for m in regressor.modules())


# ---------------------------------------------------------------- 15. AT: defaults that work on short budgets


def test_at_weight_is_scaled_to_the_map_size():
    assert at_module.pair_weights(1000.0, [32 * 32, 16 * 16, 7 * 7], scale_to_map=True) == pytest.approx(
        [1000.0, 250.0, 1000.0 * 49 / 1024])
    assert at_module.pair_weights(1000.0, [32 * 32, 49], scale_to_map=False) == [1000.0, 1000.0]  # the paper's beta


def test_at_at_its_defaults_is_not_swamped_on_small_maps(digits):
    """digits' stages are 4x4, 2x2 and 2x2: the unscaled beta 1000 made the attention term 100x the CE term."""
    (batch,) = batches(digits)
    _, terms = DISTILLERS.get("at")(ATConfig(), untrained_setup(digits)).step(batch)
    assert terms["at"].item() < terms["ce"].item()


def test_at_at_its_defaults_learns_as_well_as_scratch_in_one_epoch(method_runs):
    at = method_runs.get("at", {})["points"][-1]
    scratch = method_runs.get("scratch")["points"][-1]
    assert at.accuracy >= scratch.accuracy - 0.05, (at.accuracy, scratch.accuracy)
