"""Adding a pruning method touches one file: a config, a function and `@prune_method`. Declared here,
inside a test, it appears in `prune --help` and `prune-methods`, and runs through the CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from engine.cli.main import main
from engine.methods.registry import METHODS, family_methods
from engine.methods.tasks import TASKS, load_families


@pytest.fixture
def scratch_registries(monkeypatch):
    """Registrations made in the test vanish after it: the registries are copied, then restored."""
    load_families()  # register the real methods first, so they are in the copies
    monkeypatch.setattr(TASKS, "_items", dict(TASKS._items))
    monkeypatch.setattr(METHODS["prune"], "_items", dict(METHODS["prune"]._items))


def declare_random_unstructured() -> None:
    """The whole method file: random scores instead of magnitudes (a floor for magnitude pruning)."""
    from engine.core.config import param
    from engine.methods.prune.common import prune_method
    from engine.methods.prune.unstructured import UnstructuredConfig, unstructured_sweep

    @dataclass
    class RandomUnstructuredConfig(UnstructuredConfig):
        mask_seed: int = param(0, "seeds which weights are zeroed", lo=0, hi=2**31 - 1)

    @prune_method("random_unstructured", RandomUnstructuredConfig, "zero weights chosen at random; a floor")
    def random_unstructured(cfg, ctx):
        g = torch.Generator().manual_seed(cfg.mask_seed)
        scores = lambda layers: [torch.rand(m.weight.shape, generator=g) for _, m in layers]  # noqa: E731
        return unstructured_sweep(cfg, ctx, "global", "random_unstructured", score=scores)


def test_a_method_declared_in_one_place_is_offered_and_runs_through_the_cli(scratch_registries, digits_checkpoint,
                                                                            tmp_path, capsys):
    declare_random_unstructured()
    with pytest.raises(SystemExit):
        main(["prune", "--help"])  # the parser is built now, after the registration
    text = capsys.readouterr().out
    assert "random_unstructured" in text and "--mask-seed" in text
    assert main(["prune-methods", "--json"]) == 0
    assert "random_unstructured" in {r["method"] for r in json.loads(capsys.readouterr().out)}
    code = main(["prune", "--checkpoint", digits_checkpoint, "--method", "random_unstructured", "--sparsity", "0.5",
                 "--mask-seed", "3", "--out", str(tmp_path / "run"), "--no-latency", "--json"])
    assert code == 0, capsys.readouterr().err
    (point,) = json.loads(capsys.readouterr().out)
    assert (point["family"], point["method"], point["stage"], point["level"]) == \
        ("prune", "random_unstructured", "variant", 0.5)
    assert point["params"]["mask_seed"] == 3 and abs(point["sparsity"] - 0.5) <= 0.005
    assert point["artifact"] == str(tmp_path / "run" / "sparsity-0.500")
    assert main(["prune", "--checkpoint", digits_checkpoint, "--method", "l1_unstructured", "--mask-seed", "3"]) == 2
    assert "--mask-seed does not apply to --method l1_unstructured" in capsys.readouterr().err


def test_the_test_method_does_not_outlive_its_test():
    assert "random_unstructured" not in family_methods("prune")
    assert "prune.random_unstructured" not in TASKS
