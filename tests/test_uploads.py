"""Uploaded weights become a float checkpoint: parsed without unpickling, checked against the architecture,
stored under a name made from their hash (never from the file name)."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from safetensors.torch import save as st_save

from engine.model.checkpoint import CheckpointError, load_checkpoint
from engine.model.uploads import import_weights
from engine.model.zoo import build_model


@pytest.fixture
def cnn_s_weights():
    torch.manual_seed(3)
    model = build_model("cnn_s", 10, 1, 8, 1.0)
    return model, {k: v.contiguous() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["safetensors", "pt"])
def test_uploaded_weights_load_into_a_checkpoint_that_reproduces_the_model(cnn_s_weights, tmp_path, kind):
    model, sd = cnn_s_weights
    if kind == "safetensors":
        data, name = st_save(sd), "../../etc/passwd.safetensors"
    else:
        buf = io.BytesIO()
        torch.save({"state_dict": sd}, buf)
        data, name = buf.getvalue(), "my model.pt"
    directory = import_weights(data, name, "cnn_s", "digits", root=tmp_path / "uploads")
    assert directory.startswith(str(tmp_path / "uploads"))  # the name never reaches the path
    assert "passwd" not in directory and "my model" not in directory
    loaded, meta = load_checkpoint(directory)
    assert meta.arch == "cnn_s" and meta.dataset == "digits" and meta.lineage[0]["method"] == "upload"
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x))
    assert import_weights(data, name, "cnn_s", "digits", root=tmp_path / "uploads") == directory  # same bytes: reused


def test_weights_for_another_architecture_are_refused_naming_the_layers(cnn_s_weights, tmp_path):
    _, sd = cnn_s_weights
    with pytest.raises(CheckpointError, match="shape mismatch|missing|unexpected"):
        import_weights(st_save(sd), "w.safetensors", "cnn_l", "digits", root=tmp_path)


def test_a_pickle_with_code_is_refused_and_never_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("unpickled!",))

    data = pickle.dumps({"weight": Boom()})
    with pytest.raises(CheckpointError, match="nothing is unpickled|state_dict"):
        import_weights(data, "evil.pt", "cnn_s", "digits", root=tmp_path)
    with pytest.raises(CheckpointError, match="unsupported weights file type '.exe'"):
        import_weights(b"MZ", "tool.exe", "cnn_s", "digits", root=tmp_path)
