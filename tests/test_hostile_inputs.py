"""Inputs a careless or hostile user can give: recipes that expand without bound, files in the wrong encoding,
numbers past every range, contradictory flags and pickled uploads. Each is refused quickly, with a short
message that names the input and what is allowed."""

from __future__ import annotations

import pytest

from engine.core.errors import ConfigError, UserError
from engine.run.recipes import load_recipe


def laughs(levels: int) -> str:
    """A "billion laughs" recipe: each level is nine aliases of the one before, so `levels` levels are 9**levels
    strings behind a few hundred bytes; the value lands in a field whose error quotes it."""
    parts = [f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "name: &a0 lol\nmodel: cnn_s\nstages: [{task: train}]\ndataset: {" + ", ".join(parts) + "}\n"


# ---------------------------------------------------------------- recipes that expand without bound


@pytest.mark.parametrize("levels", [6, 9, 20])
def test_a_recipe_whose_aliases_expand_past_the_budget_is_refused_in_a_short_message(tmp_path, levels):
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs(levels))
    assert path.stat().st_size < 2000
    with pytest.raises(ConfigError, match="alias") as e:
        load_recipe(path)
    assert len(str(e.value)) < 500


def test_a_long_value_is_quoted_truncated_in_an_error(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("model: cnn_s\nstages: [{task: train}]\ndataset: [" + ", ".join(["lol"] * 20000) + "]\n")
    with pytest.raises(ConfigError, match=r"dataset must be text, got \['lol', 'lol'") as e:
        load_recipe(path)
    assert len(str(e.value)) < 500 and "(20,000 items)" in str(e.value)


def train_sweep(axes: int, values: int) -> dict:
    fields = ["epochs", "batch_size", "lr", "momentum", "weight_decay", "seed"]
    sweep = {"train": {f: [i + 1 for i in range(values)] for f in fields[:axes - 1]}, "width": [
        round(0.1 * (i + 1), 2) for i in range(values)]}
    return {"dataset": "digits", "model": "cnn_s", "stages": [{"task": "train", "sweep": sweep}]}


@pytest.mark.parametrize("axes, values, size", [(4, 12, "20,736"), (7, 20, "1,280,000,000")])
def test_a_sweep_grid_above_the_limit_is_refused_before_it_is_expanded(axes, values, size):
    recipe = train_sweep(axes, values)
    recipe["stages"][0]["sweep"]["width"] = [round(0.05 * (i + 1), 2) for i in range(values)]
    with pytest.raises(ConfigError, match=f"stage 'train'.*{size} units.*at most 10,000"):
        load_recipe_dict(recipe)


def test_sweeps_that_multiply_along_a_chain_past_the_limit_are_refused():
    recipe = {"dataset": "digits", "model": "cnn_s", "stages": [
        {"name": "first", "task": "prune.l1_unstructured", "config": {"latency": False},
         "sweep": {"sparsities": [i / 200 for i in range(150)]}},
        {"name": "second", "task": "prune.l1_unstructured", "config": {"latency": False},
         "sweep": {"sparsities": [i / 200 for i in range(100)]}},
    ]}
    with pytest.raises(ConfigError, match="stage 'second'.*15,000 units.*at most 10,000"):
        load_recipe_dict(recipe)


def load_recipe_dict(d: dict):
    import json

    return load_recipe(json.dumps(d, indent=1))


# ---------------------------------------------------------------- smaller ones


def engine_cli(capsys, *argv: str) -> tuple[int, str]:
    from engine.cli.main import main

    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse refuses a usage mistake by exiting
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("raw, words", [("dataset: d\u00e9j\u00e0\n".encode("latin-1"), "byte 0xe9 at offset 10"),
                                        ("dataset: digits\n".encode("utf-16"), "UTF-16")])
def test_a_recipe_that_is_not_utf8_is_refused_naming_the_file_and_the_encoding(tmp_path, capsys, raw, words):
    path = tmp_path / "latin.yaml"
    path.write_bytes(raw)
    rc, err = engine_cli(capsys, "validate", str(path))
    assert rc == 2
    assert str(path) in err and "not UTF-8" in err and words in err and "Traceback" not in err


def test_a_run_limit_past_what_the_store_counts_is_a_clear_error(tmp_path, capsys):
    from store import open_store

    open_store(str(tmp_path / "runs.duckdb")).close()
    rc, err = engine_cli(capsys, "runs", "--db", str(tmp_path / "runs.duckdb"), "--limit", "9" * 23)
    assert rc == 2
    assert "limit" in err and "Conversion" not in err and "Traceback" not in err


@pytest.mark.parametrize("flags", [("--symmetric", "--asymmetric"), ("--asymmetric", "--symmetric"),
                                   ("--symmetric", "--no-symmetric"), ("--no-latency", "--latency")])
def test_contradictory_switches_are_refused_naming_both(capsys, flags):
    rc, err = engine_cli(capsys, "quantize", "--method", "fake", "--checkpoint", "nowhere", *flags)
    assert rc == 2
    assert flags[0] in err and flags[1] in err and "contradict" in err


def test_a_value_option_given_twice_with_different_values_is_refused(capsys):
    rc, err = engine_cli(capsys, "quantize", "--method", "fake", "--checkpoint", "nowhere", "--bits", "4",
                         "--bits", "8")
    assert rc == 2
    assert "--bits" in err and "4" in err and "8" in err and "twice" in err


def test_a_pickled_model_upload_is_refused_without_suggesting_to_unpickle_it(tmp_path):
    import io

    import torch

    from engine.model.uploads import import_weights
    from engine.model.zoo import build_model

    buf = io.BytesIO()
    torch.save(build_model("cnn_s", 10, 1, 8, 1.0), buf)  # the whole model pickled, not its state_dict
    with pytest.raises(UserError) as e:
        import_weights(buf.getvalue(), "model.pt", "cnn_s", "digits", root=tmp_path)
    message = str(e.value)
    assert "weights_only" not in message and "trust" not in message and "\x1b" not in message
    assert "pickled" in message and "SmallCNN" in message
    assert ".safetensors" in message and "state_dict()" in message
    with pytest.raises(UserError) as e:
        import_weights(b"not a torch file at all", "garbage.pt", "cnn_s", "digits", root=tmp_path)
    assert "weights_only" not in str(e.value) and ".safetensors" in str(e.value)


def test_an_uploaded_recipe_that_is_not_utf8_is_refused_by_name_not_decoded_with_replacements():
    """Issue #22 item 6's neighbour: the Launch page decoded an uploaded recipe with errors="replace"; it now
    goes through the same check as a recipe file."""
    from engine.core.errors import UserError
    from engine.run.recipes import decode_recipe

    assert decode_recipe("name: é\n".encode(), "mine.yaml") == "name: é\n"
    with pytest.raises(UserError, match=r"cannot read the recipe mine.yaml: it is not UTF-8 text \(it looks like "
                                        r"UTF-16\), byte 0xff at offset 0; save it as UTF-8"):
        decode_recipe("name: x".encode("utf-16"), "mine.yaml")
