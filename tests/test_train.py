"""The training loop: accuracy, determinism, progress, cancellation and divergence."""

from __future__ import annotations

import pytest
import torch

from engine.core.errors import Cancelled, ConfigError, TrainingDiverged
from engine.core.progress import CancelToken
from engine.deploy.measure import measure
from engine.model.checkpoint import load_checkpoint
from engine.model.train import TrainConfig, evaluate, fit, lr_factor, seed_everything
from engine.model.zoo import build_model


def test_student_reaches_90_percent_on_mnist5k_in_two_epochs(student_checkpoint, mnist5k):
    model, meta = load_checkpoint(student_checkpoint)
    assert meta.train_config["epochs"] == 2
    assert measure(model, mnist5k, latency=False).accuracy >= 0.90


def _train(digits, seed, epochs=1, **kw):
    seed_everything(seed)
    model = build_model("cnn_s", 10, 1, 8)
    history = fit(model, digits, TrainConfig(epochs=epochs, seed=seed, batch_size=64), **kw)
    return model, history


def test_same_seed_gives_the_same_weights_on_cpu(digits):
    a, ha = _train(digits, seed=3)
    b, hb = _train(digits, seed=3)
    c, _ = _train(digits, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert ha[0]["train_loss"] == hb[0]["train_loss"]
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_history_has_per_epoch_metrics(digits):
    _, history = _train(digits, seed=0, epochs=2)
    assert [h["epoch"] for h in history] == [1, 2]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_top5", "loss_ce", "lr"):
        assert key in history[-1]
    assert history[-1]["val_accuracy"] > 0.5


def test_progress_reaches_one_with_epoch_step_and_eta(digits):
    seen = []
    _train(digits, seed=0, progress=seen.append)
    assert seen[-1].fraction == pytest.approx(1.0)
    assert all(a.fraction < b.fraction for a, b in zip(seen, seen[1:]))
    assert seen[-1].epoch == 1 and seen[-1].step == len(seen) and "loss" in seen[-1].metrics
    assert seen[len(seen) // 2].eta_s is not None


def test_cancel_stops_within_one_batch(digits):
    token, steps = CancelToken(), []

    def progress(p):
        steps.append(p.step)
        if p.step == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        _train(digits, seed=0, progress=progress, cancel=token)
    assert steps == [1, 2, 3]


def test_nan_loss_stops_with_a_clear_failure(digits):
    model = build_model("cnn_s", 10, 1, 8)

    def nan_step(batch):
        logits = model(batch.x)
        return logits, {"ce": logits.sum() * float("nan")}

    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 1, step 1"):
        fit(model, digits, TrainConfig(epochs=1), step=nan_step)


def test_adam_and_step_schedule_train(digits):
    seed_everything(0)
    model = build_model("cnn_s", 10, 1, 8)
    fit(model, digits, TrainConfig(epochs=2, optimizer="adam", lr=3e-3, schedule="step"))
    assert evaluate(model, digits.test)["accuracy"] > 0.5


def test_schedules_are_pure_functions():
    assert lr_factor("cosine", 0.0) == 1.0 and lr_factor("cosine", 1.0) == pytest.approx(0.0)
    assert [lr_factor("step", p) for p in (0.1, 0.6, 0.8)] == [1.0, 0.1, 0.01]
    assert lr_factor("constant", 0.7) == 1.0


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="optimizer must be one of sgd, adam; got 'rmsprop'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match=r"lr must be in \(0, 10\]"):
        TrainConfig(lr=0)
    assert TrainConfig.from_dict(TrainConfig(epochs=5).to_dict()) == TrainConfig(epochs=5)
