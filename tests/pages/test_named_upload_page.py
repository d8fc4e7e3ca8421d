"""From the browser: weights for a timm ViT and a torchvision EfficientNet, uploaded on the Launch page under typed
architecture names, are pruned, quantized and distilled by the jobs the page queues (tiny versions: 32 px,
3 classes)."""

from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import save as st_save

from engine.model.named import canonical
from tests.pages.test_launch_page import by_key, finished, launch
from tests.test_named_models import tinted_folder

VIT = "timm:vit_tiny_patch16_224?depth=2&patch_size=8&img_size=32&embed_dim=48"
EFFNET = "torchvision:efficientnet_b0"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return tinted_folder(tmp_path_factory.mktemp("photos"), train=8, test=3)


def weights(arch: str, as_state_dict: bool) -> bytes:
    from engine.model.zoo import build_model

    torch.manual_seed(0)
    state = build_model(arch, 3, 3, 32).state_dict()
    if as_state_dict:
        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.getvalue()
    return st_save({k: v.contiguous() for k, v in state.items()})


def upload(at, key: str, arch: str, folder: str, name: str, data: bytes) -> None:
    """What a user does under '<key> from: uploaded weights': type the architecture and the folder, set the side,
    choose the file."""
    by_key(at.radio, f"{key}.source").set_value("uploaded weights").run()
    by_key(at.selectbox, f"{key}.arch").set_value(arch).run()
    by_key(at.selectbox, f"{key}.dataset").set_value(folder).run()
    by_key(at.number_input, f"{key}.size.{arch}").set_value(32).run()
    next(u for u in at.get("file_uploader") if u.key == f"{key}.file").set_value(
        (name, data, "application/octet-stream")).run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert any(f"Loaded into {arch}" in c.value for c in at.caption)


@pytest.fixture(autouse=True)
def typed(monkeypatch, folder):
    """AppTest's select box cannot take a value typed into it (it sends the option's index), so the two typed
    values are offered as options: the page then goes through what typing them does."""
    from engine.model.data import DATASETS
    from engine.model.zoo import MODELS

    models, datasets = MODELS.names(), DATASETS.names()
    monkeypatch.setattr(MODELS, "names", lambda: [*models, VIT, EFFNET])
    monkeypatch.setattr(DATASETS, "names", lambda: [*datasets, folder])


def new_runs(store, lab_store):
    """The runs this test queued (the store is a copy of the pre-filled one), by kind."""
    runs = store.list_runs()
    return runs[~runs["run_id"].isin(lab_store["run_ids"])].set_index("kind")


def test_uploaded_vit_weights_are_pruned_by_heads_and_fake_quantized_from_the_launch_page(db, lab_store, folder):
    at = launch(db)
    vit = weights(VIT, as_state_dict=False)
    for family, method, field, value in (("prune", "structured", "ratios", "0,0.5"), ("quantize", "fake", "bits", "8,4")):
        by_key(at.selectbox, "launch.family").set_value(family).run()
        by_key(at.selectbox, f"launch.method.{family}").set_value(method).run()
        upload(at, f"launch.{family}.ckpt", VIT, folder, "vit.safetensors", vit)
        form = f"launch.form.{family}.{method}"
        by_key(at.text_input, f"{form}.{field}").set_value(value).run()
        by_key(at.checkbox, f"{form}.latency").uncheck().run()
        by_key(at.button, f"{form}.submit").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]

    store = finished(db)
    runs = new_runs(store, lab_store)
    assert runs.loc["prune.structured", "status"] == "finished", runs.loc["prune.structured", "error"]
    assert runs.loc["quantize.fake", "status"] == "finished", runs.loc["quantize.fake", "error"]
    pruned = store.run_points(runs.loc["prune.structured", "run_id"])
    assert sorted(p["level"] for p in pruned) == [0.0, 0.5] and {p["model"] for p in pruned} == {canonical(VIT)}
    assert max(p["params_total"] for p in pruned) > 1.5 * min(p["params_total"] for p in pruned)


def test_uploaded_efficientnet_weights_teach_a_student_from_the_launch_page(db, lab_store, folder):
    at = launch(db)
    by_key(at.selectbox, "launch.family").set_value("distill").run()
    upload(at, "launch.distill.teacher", EFFNET, folder, "effnet.pt", weights(EFFNET, as_state_dict=True))
    form = "launch.form.distill"
    by_key(at.selectbox, f"{form}.student").set_value("cnn_s").run()
    by_key(at.number_input, f"{form}.train.epochs").set_value(1).run()
    by_key(at.checkbox, f"{form}.latency").uncheck().run()
    by_key(at.button, f"{form}.submit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    store = finished(db)
    run = new_runs(store, lab_store).loc["distill"]
    assert run["status"] == "finished", run["error"]
    roles = {p["role"]: p["model"] for p in store.run_points(run["run_id"])}
    assert roles == {"teacher": canonical(EFFNET), "student": "cnn_s"}
