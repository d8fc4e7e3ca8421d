"""Checkpoint round trips, users' weight files, and refusal of pickles that would run code."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch
from safetensors.torch import save as st_save

from engine.core.errors import CheckpointError
from engine.model.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    load_user_weights,
    read_state_dict,
    save_checkpoint,
)
from engine.model.zoo import build_model


def _meta(**kw) -> CheckpointMeta:
    return CheckpointMeta(arch="cnn_s", num_classes=10, in_channels=1, image_size=28, dataset="mnist5k",
                          class_names=[str(i) for i in range(10)], **kw)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = build_model("cnn_s", 10, 1, 28).eval()
    with torch.no_grad():  # non-trivial BN statistics
        model.features[0][0][1].running_mean.uniform_(-1, 1)
    save_checkpoint(tmp_path / "ck", model, _meta(train_config={"epochs": 2}))
    loaded, meta = load_checkpoint(tmp_path / "ck")
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert meta.train_config == {"epochs": 2} and meta.dataset == "mnist5k"


def test_pt_state_dict_and_safetensors_load_into_the_architecture():
    model = build_model("cnn_s", 10, 1, 28).eval()
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict()}, buf)
    x = torch.randn(2, 1, 28, 28)
    for data, name in ((buf.getvalue(), "mine.pth"), (st_save(model.state_dict()), "mine.safetensors")):
        loaded = load_user_weights("cnn_s", data, name, num_classes=10, in_channels=1, image_size=28)
        assert torch.equal(loaded(x), model(x))


def test_shape_mismatch_names_the_layer():
    wrong = build_model("cnn_s", 7, 1, 28).state_dict()
    with pytest.raises(CheckpointError, match=r"fc\.weight: file \(7, 96\) vs model \(10, 96\)"):
        load_user_weights("cnn_s", st_save(wrong), "w.safetensors", num_classes=10, in_channels=1, image_size=28)


def test_missing_keys_are_listed():
    sd = build_model("cnn_s", 10, 1, 28).state_dict()
    del sd["fc.bias"]
    with pytest.raises(CheckpointError, match="missing fc.bias"):
        load_user_weights("cnn_s", st_save(sd), "w.safetensors", num_classes=10, in_channels=1, image_size=28)


class _RunsCode:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_pickle_that_would_run_code_is_rejected_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(2), "evil": _RunsCode(str(marker))}, buf)
    with pytest.raises(CheckpointError, match="nothing is unpickled"):
        read_state_dict(buf.getvalue(), "model.pt")
    assert not marker.exists()
    raw = pickle.dumps(_RunsCode(str(marker)))  # a bare pickle, not even a torch file
    with pytest.raises(CheckpointError):
        read_state_dict(raw, "model.pth")
    assert not marker.exists()


def test_file_name_is_only_used_for_its_suffix(tmp_path):
    with pytest.raises(CheckpointError, match="unsupported weights file"):
        read_state_dict(b"x", "../../etc/passwd")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        read_state_dict(b"garbage", "../../x.safetensors")


def test_not_a_checkpoint_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_checkpoint(tmp_path / "empty")


def _write_meta(tmp_path, text: str):
    model = build_model("cnn_s", 10, 1, 28).eval()
    d = tmp_path / "ck"
    save_checkpoint(d, model, _meta())
    (d / "meta.json").write_text(text)
    return d


@pytest.mark.parametrize("change, words", [
    ({"num_classes": "10"}, "num_classes must be a whole number, got '10'"),
    ({"num_classes": None}, "num_classes must be a whole number, got None"),
    ({"image_size": 100000}, "image_size must be in [1, 1024], got 100000"),
    ({"in_channels": True}, "in_channels must be a whole number"),
    ({"class_names": "0123456789"}, "class_names must be a list of names"),
    ({"format_version": 99}, "format_version 99; this code reads versions 1, 2"),
    ({"weights_format": "fp8"}, "weights_format must be one of float, int8, packed"),
    ({"layer_shapes": "guess"}, "layer_shapes must be arch or shape"),
])
def test_meta_json_is_validated_like_a_config(tmp_path, change, words):
    import json

    d = _write_meta(tmp_path, json.dumps({**_meta().to_dict(), **change}))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    assert words in str(e.value)


def test_meta_json_holding_null_or_a_list_is_refused(tmp_path):
    for text in ("null", "[1, 2]", '"text"'):
        d = _write_meta(tmp_path, text)
        with pytest.raises(CheckpointError, match="must hold a JSON object"):
            load_checkpoint(d)


def test_a_format_1_checkpoint_reads_its_history_as_lineage(tmp_path):
    import json

    old = {k: v for k, v in _meta().to_dict().items() if k not in ("lineage", "weights_format", "quant")}
    old.update(format_version=1, history=[{"method": "train", "params": {"epochs": 2}}])
    d = _write_meta(tmp_path, json.dumps(old))
    _, meta = load_checkpoint(d)
    assert meta.lineage == [{"method": "train", "params": {"epochs": 2}}] and meta.weights_format == "float"


def test_a_derived_meta_adds_one_lineage_step_and_says_it_in_words():
    from engine.model.checkpoint import describe_lineage

    base = _meta(lineage=[{"family": "train", "method": "train", "params": {}, "input_checkpoint": ""}])
    pruned = base.derived(family="prune", method="global_unstructured", params={"sparsity": 0.5},
                          input_checkpoint="ck/kd", level=0.5, level_name="sparsity", layer_shapes="arch")
    assert len(pruned.lineage) == 2 and base.lineage == pruned.lineage[:1]
    assert pruned.lineage[-1]["input_checkpoint"] == "ck/kd"
    assert describe_lineage(pruned) == "train -> global_unstructured (sparsity 0.5)"


def test_output_directories_never_overwrite_an_input_or_a_foreign_folder(tmp_path):
    from engine.core.errors import ConfigError
    from engine.model.outputs import MARKER, check_output, claim_output

    ck = tmp_path / "ck"
    save_checkpoint(ck, build_model("cnn_s", 10, 1, 28), _meta())
    for out in (ck, ck / "model.safetensors", ck / "sub"):
        with pytest.raises(ConfigError, match="input checkpoint"):
            check_output(str(out), [str(ck)], overwrite=True)
    with pytest.raises(ConfigError, match="contains the input checkpoint"):
        check_output(str(tmp_path), [str(ck)], overwrite=True)
    mine = tmp_path / "mine"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with pytest.raises(ConfigError, match="not created by Compression Lab"):
        check_output(str(foreign), [], overwrite=True)
    with claim_output(str(mine), [str(ck)]) as root:
        (root / "x").write_text("1")
    assert (mine / MARKER).is_file()
    with pytest.raises(ConfigError, match="already exists"):
        check_output(str(mine), [])
    check_output(str(mine), [], overwrite=True)  # ours: may be replaced
    with pytest.raises(RuntimeError), claim_output(str(tmp_path / "failed"), []):
        raise RuntimeError("the run failed before writing")
    assert not (tmp_path / "failed").exists()  # an empty claim is given back
    load_checkpoint(ck)  # the input is intact
