"""Lottery tickets: rewinding puts the survivors back exactly at their stored initial values."""

from __future__ import annotations

import pytest
import torch

from engine.context import RunContext
from engine.errors import ConfigError
from engine.measure import prunable_weights
from engine.prune import lottery_ticket as lt
from engine.prune.finetune import FinetuneConfig, finetune
from engine.prune.importance import weight_magnitudes
from engine.prune.masks import rank
from engine.tasks import open_checkpoint, run_task


def test_rewinding_restores_exactly_the_stored_initial_values_of_surviving_weights(digits_checkpoint):
    trained, meta, data = open_checkpoint(digits_checkpoint)
    model = lt.fresh_init(trained, meta.arch, meta.num_classes, meta.in_channels, meta.image_size, meta.width, 3)
    initial = lt.snapshot(model)
    finetune(model, data, FinetuneConfig(mode="all", epochs=1, lr=0.05), classifier="fc")
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


def test_lottery_ticket_rewinds_to_the_seeded_initialisation_each_round(digits_checkpoint, monkeypatch):
    trained, meta, _ = open_checkpoint(digits_checkpoint)
    expected = lt.snapshot(lt.fresh_init(trained, meta.arch, meta.num_classes, meta.in_channels, meta.image_size,
                                         meta.width, 7))
    seen = []
    real_rewind = lt.rewind

    def checked_rewind(model, saved, masks):
        real_rewind(model, saved, masks)
        seen.append({n: (model.get_submodule(n).weight.detach().clone(), masks[n]) for n in masks})

    monkeypatch.setattr(lt, "rewind", checked_rewind)
    points = run_task("prune.lottery_ticket", {"checkpoint": digits_checkpoint, "seed": 7, "rounds": 2,
                                               "epochs": 1, "latency": False}, RunContext())
    assert len(seen) == 2
    for rewound in seen:
        for name, (w, keep) in rewound.items():
            assert torch.equal(w[keep], expected[f"{name}.weight"][keep])
            assert bool((w[~keep] == 0).all())
    assert [p["iteration"] for p in points] == [0, 1, 2]
    for p, target in zip(points, [0.0, 0.2, 0.36]):
        assert abs(p["sparsity"] - target) <= 0.005
    assert points[1]["rewound_to"] == "initial weights"


def test_late_rewinding_goes_back_to_the_weights_after_k_steps(digits_checkpoint, monkeypatch):
    trained, meta, _ = open_checkpoint(digits_checkpoint)
    initial = lt.snapshot(lt.fresh_init(trained, meta.arch, meta.num_classes, meta.in_channels, meta.image_size,
                                        meta.width, 0))
    saved_states = []
    real_rewind = lt.rewind
    monkeypatch.setattr(lt, "rewind", lambda model, saved, masks: saved_states.append(dict(saved)) or
                        real_rewind(model, saved, masks))
    (_, one) = run_task("prune.lottery_ticket", {"checkpoint": digits_checkpoint, "rounds": 1, "epochs": 1,
                                                 "rewind_step": 5, "latency": False}, RunContext())
    assert one["rewound_to"] == "weights after 5 steps"
    (saved,) = saved_states
    assert saved.keys() == initial.keys()
    assert not torch.equal(saved["fc.weight"], initial["fc.weight"])  # 5 steps of training moved it


def test_rewind_step_beyond_one_training_run_is_refused(digits_checkpoint):
    with pytest.raises(ConfigError, match="rewind_step must be at most the"):
        run_task("prune.lottery_ticket", {"checkpoint": digits_checkpoint, "rounds": 1, "epochs": 1,
                                          "rewind_step": 10**6, "latency": False}, RunContext())
