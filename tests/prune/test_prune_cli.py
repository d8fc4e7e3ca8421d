"""`python -m engine prune` and `prune-methods`: options generated from the method configs, typed
points with every contract field, artifacts that reload, outputs that never overwrite the input."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.cli.families import build_config
from engine.cli.main import build_parser, main
from engine.core.errors import ConfigError
from engine.core.point import CONTRACT_FIELDS, METRIC_FIELDS
from engine.methods.registry import family_methods
from engine.methods.tasks import get_task
from engine.model.checkpoint import load_checkpoint

METHODS = ("l1_unstructured", "global_unstructured", "structured", "iterative", "lottery_ticket", "sensitivity", "nm")
README_FLAGS = ("--checkpoint", "--method", "--sparsity", "--repeats", "--importance", "--layer-ratios", "--finetune",
                "--epochs", "--lr", "--samples", "--l1", "--l2", "--keep-first-last", "--scope", "--rate",
                "--iterations", "--rewind-step", "--structured", "--layers", "--seed", "--out", "--no-latency",
                "--no-save", "--overwrite", "--db", "--json")


def config(*argv: str):
    args = build_parser().parse_args(["prune", "--checkpoint", "ckpt", *argv])
    return build_config(args)


def test_the_six_methods_are_registered_with_their_tasks():
    methods = family_methods("prune")
    assert sorted(methods.names()) == sorted(METHODS)
    for name in METHODS:
        assert methods.get(name).task == f"prune.{name}" and get_task(f"prune.{name}").config is methods.get(name).config


@pytest.mark.parametrize("method", METHODS)
def test_every_prune_config_round_trips_through_json(method):
    cls = family_methods("prune").get(method).config
    for cfg in (cls(checkpoint="x"), config("--method", method, "--no-latency", "--out", "somewhere")):
        assert cls.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_options_map_onto_the_nested_method_config():
    cfg = config("--method", "global_unstructured", "--sparsity", "0.5,0.9", "--repeats", "4", "--finetune", "last",
                 "--epochs", "2", "--lr", "0.03", "--seed", "3", "--l1", "0.0001", "--samples", "500",
                 "--keep-first-last", "--no-save")
    assert cfg.sparsities == (0.5, 0.9) and cfg.repeats == 4 and cfg.keep_first_last and not cfg.save
    assert (cfg.finetune.mode, cfg.finetune.l1, cfg.finetune.samples) == ("last", 0.0001, 500)
    assert (cfg.finetune.train.epochs, cfg.finetune.train.lr, cfg.finetune.train.seed) == (2, 0.03, 3)
    assert cfg.finetune.train.weight_decay == 0.0  # fine-tuning's own default survives a partial --epochs
    assert config("--method", "l1_unstructured", "--sparsity", "0,0.25,...,0.75").sparsities == (0, 0.25, 0.5, 0.75)
    cfg = config("--method", "structured", "--layer-ratios", "features.1.0.0=0.5", "--importance", "bn")
    assert cfg.levels() == (0.0,) and cfg.layer_ratios == {"features.1.0.0": 0.5} and cfg.importance == "bn"
    assert config("--method", "structured", "--sparsity", "0.2").levels() == (0.2,)
    cfg = config("--method", "lottery_ticket", "--iterations", "5", "--rewind-step", "10", "--epochs", "1")
    assert (cfg.rounds, cfg.rewind_step, cfg.train.epochs, cfg.train.lr) == (5, 10, 1, 0.05)
    cfg = config("--method", "iterative", "--sparsity", "0.2,0.5", "--scope", "layer")
    assert cfg.schedule == (0.2, 0.5) and cfg.finetune.mode == "all" and cfg.scope == "layer"
    cfg = config("--method", "sensitivity", "--layers", "fc,features.1.0.0", "--structured", "--latency")
    assert cfg.layers == ("fc", "features.1.0.0") and cfg.structured and cfg.latency and not cfg.save


def test_an_option_the_method_does_not_take_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match="--importance does not apply to --method l1_unstructured"):
        config("--method", "l1_unstructured", "--importance", "bn")
    with pytest.raises(ConfigError, match="--seed does not apply to --method sensitivity"):
        config("--method", "sensitivity", "--seed", "1")  # nothing in a sensitivity scan is random


def test_prune_help_lists_every_method_and_the_readme_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["prune", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in METHODS)
    assert [f for f in README_FLAGS if f not in text] == []


def test_prune_methods_json_lists_each_method_with_its_settings(capsys):
    assert main(["prune-methods", "--json"]) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == sorted(METHODS)
    flags = {name: {s["flag"] for s in r["settings"]} for name, r in rows.items()}
    assert {"--sparsity", "--repeats", "--finetune", "--epochs", "--out", "--no-save"} - flags["structured"] == \
        {"--no-save"}  # the switch is listed once, as --save
    assert "--iterations" in flags["lottery_ticket"] and "--importance" not in flags["l1_unstructured"]
    assert all(r["description"] for r in rows.values())


def test_a_sweep_end_to_end_gives_every_contract_field_and_artifacts_that_reload(digits_checkpoint, tmp_path,
                                                                                  capsys):
    out = tmp_path / "run"
    code = main(["prune", "--checkpoint", digits_checkpoint, "--method", "global_unstructured", "--sparsity", "0,0.5",
                 "--repeats", "2", "--out", str(out), "--no-latency", "--json"])
    assert code == 0
    points = json.loads(capsys.readouterr().out)
    assert len(points) == 2
    for p in points:
        assert set(CONTRACT_FIELDS) <= set(p) and set(METRIC_FIELDS) <= set(p)
        assert (p["family"], p["method"], p["level_name"], p["role"]) == ("prune", "global_unstructured", "sparsity", "")
        assert p["input_checkpoint"] == digits_checkpoint and p["params"]["repeats"] == 2
        assert p["accuracy_runs"] == [p["accuracy"]] * 2 and p["accuracy_std"] == 0.0
    base, half = points
    assert (base["stage"], base["level"], half["stage"], half["level"]) == ("baseline", 0.0, "variant", 0.5)
    assert half["artifact"] == str(out / "sparsity-0.500")
    assert main(["measure", "--checkpoint", half["artifact"], "--no-latency", "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["accuracy"] == half["accuracy"] and measured["sparsity"] == half["sparsity"]
    assert measured["stage"] == "variant" and measured["lineage_text"] == "train -> global_unstructured (sparsity 0.5)"
    again = ["prune", "--checkpoint", digits_checkpoint, "--method", "l1_unstructured", "--sparsity", "0.5",
             "--out", str(out), "--no-latency", "--json"]
    assert main(again) == 2 and "already exists" in capsys.readouterr().err  # never silently replaced
    assert main([*again, "--overwrite"]) == 0  # this tool made it, so --overwrite may
    assert json.loads(capsys.readouterr().out)[0]["method"] == "l1_unstructured"


def test_an_out_inside_the_input_checkpoint_is_refused_and_the_input_still_loads(digits_checkpoint, tmp_path, capsys):
    ck = tmp_path / "ck"
    shutil.copytree(digits_checkpoint, ck)
    before = sorted(p.name for p in ck.iterdir())
    for out in (ck / "pruned", ck):
        code = main(["prune", "--checkpoint", str(ck), "--method", "l1_unstructured", "--sparsity", "0.5",
                     "--out", str(out), "--no-latency"])
        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: out ") and "input checkpoint" in err
    assert sorted(p.name for p in ck.iterdir()) == before
    load_checkpoint(ck)


def test_a_bad_sparsity_is_a_one_line_error(digits_checkpoint, capsys):
    code = main(["prune", "--checkpoint", digits_checkpoint, "--method", "l1_unstructured", "--sparsity", "1.2",
                 "--no-save"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: sparsity must be in [0, 1), got 1.2"
