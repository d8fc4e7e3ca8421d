"""Checkpoint round trips, users' weight files, and refusal of pickles that would run code."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch
from safetensors.torch import save as st_save

from engine.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    load_user_weights,
    read_state_dict,
    save_checkpoint,
)
from engine.errors import CheckpointError
from engine.models import build_model


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
