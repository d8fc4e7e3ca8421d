"""`python -m engine prune`: options become validated configs, --json prints the points."""

from __future__ import annotations

import json

import pytest

from engine.config import Config
from engine.errors import ConfigError
from engine.measure import METRIC_FIELDS
from engine.prune import METHODS, task_name
from engine.prune.cli import build_config, parse_layer_ratios, parse_levels
from engine.tasks import TASKS


def parse(*argv: str):
    from engine.cli import build_parser

    return build_parser().parse_args(["prune", "--checkpoint", "ckpt", *argv])


def test_levels_accept_lists_and_an_ellipsis():
    assert parse_levels("0,0.1,...,0.9") == tuple(round(0.1 * i, 1) for i in range(10))
    assert parse_levels("0.25, 0.5") == (0.25, 0.5)
    with pytest.raises(ConfigError, match="--sparsity must be comma-separated numbers"):
        parse_levels("half")
    with pytest.raises(ConfigError, match="--sparsity"):
        parse_levels("0,...,0.9")
    assert parse_layer_ratios("features.1.0.0=0.5, fc=0") == {"features.1.0.0": 0.5, "fc": 0.0}
    with pytest.raises(ConfigError, match="--layer-ratios must look like"):
        parse_layer_ratios("features.1.0.0:0.5")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_builds_a_config_that_round_trips(method):
    cfg = build_config(parse("--method", method))
    task = TASKS.get(task_name(method))
    assert isinstance(cfg, task.config)
    assert task.config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_options_map_onto_the_method_config():
    cfg = build_config(parse("--method", "global_unstructured", "--sparsity", "0.5,0.9", "--repeats", "4",
                             "--finetune", "last", "--epochs", "2", "--l1", "0.0001", "--keep-first-last"))
    assert cfg.sparsities == (0.5, 0.9) and cfg.repeats == 4 and cfg.keep_first_last
    assert (cfg.finetune.mode, cfg.finetune.epochs, cfg.finetune.l1) == ("last", 2, 0.0001)
    cfg = build_config(parse("--method", "structured", "--layer-ratios", "features.1.0.0=0.5", "--importance", "bn"))
    assert cfg.ratios == (0.0,) and cfg.layer_ratios == {"features.1.0.0": 0.5} and cfg.importance == "bn"
    cfg = build_config(parse("--method", "lottery_ticket", "--iterations", "5", "--rewind-step", "10"))
    assert (cfg.rounds, cfg.rewind_step) == (5, 10)
    cfg = build_config(parse("--method", "iterative", "--sparsity", "0.2,0.5"))
    assert cfg.schedule == (0.2, 0.5) and cfg.finetune.mode == "all"


def test_an_option_the_method_does_not_read_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match="--importance does not apply to --method l1_unstructured"):
        build_config(parse("--method", "l1_unstructured", "--importance", "bn"))


def test_all_prune_configs_round_trip_through_dicts():
    for name, task in TASKS.items():
        if name.startswith("prune."):
            cfg: Config = task.config(checkpoint="x")
            assert task.config.from_dict(cfg.to_dict()) == cfg


def test_json_prints_one_object_per_point_with_metrics_method_params_and_std(teacher_checkpoint, capsys):
    from engine.cli import main

    code = main(["prune", "--checkpoint", teacher_checkpoint, "--method", "global_unstructured",
                 "--sparsity", "0.5,0.8", "--repeats", "2", "--no-latency", "--json"])
    assert code == 0
    points = json.loads(capsys.readouterr().out)
    assert len(points) == 2
    for p, level in zip(points, (0.5, 0.8)):
        assert set(METRIC_FIELDS) <= set(p)
        assert p["method"] == "global_unstructured" and p["params"]["sparsity"] == level
        assert p["accuracy_std"] == 0.0


def test_a_bad_sparsity_is_a_one_line_error(teacher_checkpoint, capsys):
    from engine.cli import main

    code = main(["prune", "--checkpoint", teacher_checkpoint, "--method", "l1_unstructured", "--sparsity", "1.2"])
    assert code == 2
    assert "error: sparsity must be in [0, 1), got 1.2" in capsys.readouterr().err
