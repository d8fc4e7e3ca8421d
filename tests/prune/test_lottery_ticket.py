"""Lottery tickets: rewinding puts the survivors back exactly at their stored initial values."""

from __future__ import annotations

import pytest
import torch

from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.deploy.measure import prunable_weights
from engine.methods.prune import lottery_ticket as lt
from engine.methods.prune.finetune import FinetuneConfig, finetune, finetune_training
from engine.methods.prune.importance import weight_magnitudes
from engine.methods.prune.masks import rank
from engine.methods.tasks import open_checkpoint, run_task


def test_rewinding_restores_exactly_the_stored_initial_values_of_surviving_weights(digits_checkpoint):
    trained, meta, data = open_checkpoint(digits_checkpoint)
    model = lt.fresh_init(trained, meta.arch, meta.num_classes, meta.in_channels, meta.image_size, meta.width, 3)
    initial = lt.snapshot(model)
    finetune(model, data, FinetuneConfig(mode="all", train=finetune_training(lr=0.05)), classifier="fc")
    layers = prunable_weights(model)
    assert not torch.equal(layers[0][1].weight.detach(), initial[f"{layers[0][0]}.weight"])  # training moved it
    masks = rank([n for n, _ in layers], weight_magnitudes(layers), "global").masks(0.6)
    lt.rewind(model, initial, masks)
    for name, m in layers:
        w, keep = m.weight.detach(), masks[name]
        assert torch.equal(w[keep], initial[f"{name}.weight"][keep])
        assert bool((w[~keep] == 0).all())
    state = model.state_dict()
    others = [k for k in initial if not any(k == f"{n}.weight" for n, _ in layers)]
    assert all(torch.equal(state[k], initial[k]) for k in others)  # biases, BatchNorm: back to the start too


def test_lottery_ticket_rewinds_to_the_seeded_initialisation_each_round(prune, digits_checkpoint, tmp_path,
                                                                        monkeypatch):
    trained, meta, _ = open_checkpoint(digits_checkpoint)
    expected = lt.snapshot(lt.fresh_init(trained, meta.arch, meta.num_classes, meta.in_channels, meta.image_size,
                                         meta.width, 7))
    seen = []
    real_rewind = lt.rewind

    def checked_rewind(model, saved, masks):
        real_rewind(model, saved, masks)
        seen.append({n: (model.get_submodule(n).weight.detach().clone(), masks[n]) for n in masks})

    monkeypatch.setattr(lt, "rewind", checked_rewind)
    points = prune("lottery_ticket", rounds=2, samples=400, train={"epochs": 1, "seed": 7},
                   out=str(tmp_path / "run"))
    assert len(seen) == 2
    for rewound in seen:
        for name, (w, keep) in rewound.items():
            assert torch.equal(w[keep], expected[f"{name}.weight"][keep])
            assert bool((w[~keep] == 0).all())
    assert [p["iteration"] for p in points] == [0, 1, 2]
    assert [p["stage"] for p in points] == ["step"] * 3
    for p, target in zip(points, [0.0, 0.2, 0.36]):
        assert abs(p["sparsity"] - target) <= 0.005
        assert p["level"] == p["sparsity"] and p["level_name"] == "sparsity"
    assert points[1]["rewound_to"] == "initial weights"
    # round 0 is a newly trained dense network, so it is saved like every round
    assert [p["artifact"] for p in points] == [str(tmp_path / "run" / f"iteration-{k}") for k in range(3)]
    assert run_task("measure", {"checkpoint": points[2]["artifact"], "latency": False},
                    RunContext())[0].accuracy == points[2]["accuracy"]


def test_late_rewinding_goes_back_to_the_weights_after_k_steps(prune, digits_checkpoint, monkeypatch):
    trained, meta, _ = open_checkpoint(digits_checkpoint)
    initial = lt.snapshot(lt.fresh_init(trained, meta.arch, meta.num_classes, meta.in_channels, meta.image_size,
                                        meta.width, 0))
    saved_states = []
    real_rewind = lt.rewind
    monkeypatch.setattr(lt, "rewind", lambda model, saved, masks: saved_states.append(dict(saved)) or
                        real_rewind(model, saved, masks))
    (_, one) = prune("lottery_ticket", rounds=1, rewind_step=5, samples=400, train={"epochs": 1})
    assert one["rewound_to"] == "weights after 5 steps"
    (saved,) = saved_states
    assert saved.keys() == initial.keys()
    assert not torch.equal(saved["fc.weight"], initial["fc.weight"])  # 5 steps of training moved it


def test_rewind_step_beyond_one_training_run_is_refused(prune, tmp_path):
    with pytest.raises(ConfigError, match="rewind_step must be at most the"):
        prune("lottery_ticket", rounds=1, rewind_step=10**6, train={"epochs": 1}, out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_lottery_training_is_one_nested_train_config_with_its_own_defaults():
    cfg = lt.LotteryTicketConfig(checkpoint="x")
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.weight_decay) == (2, 0.05, 0.0)
    assert lt.LotteryTicketConfig.from_dict({"checkpoint": "x", "train": {"epochs": 1}}).train.lr == 0.05
