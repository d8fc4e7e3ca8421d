"""Architectures by name (timm:..., torchvision:...): built without the network, the user's weights uploaded
at the model's own size and normalisation, and every family run on tiny versions (32 px, 3 classes)."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from engine.core.context import RunContext
from engine.core.errors import ConfigError, UserError
from engine.deploy.int8 import INT8_BACKENDS, Int8ConversionError
from engine.deploy.measure import count_macs, storage
from engine.methods.distill.task import DistillTask
from engine.methods.prune.channels import prune_channels
from engine.methods.prune.structured import StructuredConfig
from engine.methods.quant.fake import FakeQuantConfig
from engine.methods.tasks import run_task
from engine.methods.train import TrainTask
from engine.model.checkpoint import dataset_of, load_checkpoint, read_meta
from engine.model.train import TrainConfig
from engine.model.uploads import import_weights
from engine.model.zoo import MODELS, build_model

VIT = "timm:vit_tiny_patch16_224?depth=2&patch_size=8&img_size=32&embed_dim=48"  # 2 blocks of 3 heads of 16, 60 k params
EFFNET = "torchvision:efficientnet_b0"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def tinted_folder(root, train: int, test: int) -> str:
    """3 classes of 40x40 PNGs under `root` (each class tinted by one colour channel), `train` and `test` images
    each: an image folder a tiny model learns in an epoch."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
                a[..., c] += 150
                Image.fromarray(a).save(d / f"{i}.png")
    return f"imagefolder:{root}"


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> str:
    return tinted_folder(tmp_path_factory.mktemp("named-folder"), train=10, test=3)


def weights_of(model: torch.nn.Module) -> bytes:
    return st_save({k: v.contiguous() for k, v in model.state_dict().items()})


@pytest.fixture(scope="session")
def vit_checkpoint(image_folder, tmp_path_factory) -> str:
    torch.manual_seed(1)
    model = build_model(VIT, 3, 3, 32)
    return import_weights(weights_of(model), "vit.safetensors", VIT, image_folder,
                          root=tmp_path_factory.mktemp("uploads"))


CONFIGS = {"train": TrainTask, "prune.structured": StructuredConfig, "quantize.fake": FakeQuantConfig,
           "distill": DistillTask}


def task(name: str, **settings):
    return run_task(name, CONFIGS[name](latency=False, **settings), RunContext())


def test_architectures_by_name_build_without_the_network_at_the_data_size():
    vit = build_model(VIT, 3, 3, 32)
    assert vit.arch == "timm:vit_tiny_patch16_224?depth=2&embed_dim=48&img_size=32&patch_size=8"  # canonical order
    assert len(vit.blocks) == 2 and vit.blocks[0].attn.num_heads == 3
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    effnet = build_model(EFFNET, 5, 3, 32)
    assert effnet(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    spec = MODELS.get(EFFNET)
    assert spec.classifier == "classifier.1" and len(spec.stages) == 4
    assert MODELS.get(VIT).classifier == "head" and VIT in MODELS and "timm:no_such_net" not in MODELS


@pytest.mark.parametrize("arch, message", [
    ("timm:no_such_net", "timm has no model 'no_such_net'"),
    ("torchvision:resnet19", "torchvision has no classification model 'resnet19'"),
    ("timm:vit_tiny_patch16_224.no_such_tag", "timm has no weights tag"),
    ("timm:vit_tiny_patch16_224?pretrained=true", "option 'pretrained' .* is set by the lab"),
    ("timm:vit_tiny_patch16_224?depth=two", "option 'depth' .* must be a number or true/false, got 'two'"),
    ("timm:vit_tiny_patch16_224?depth", "key=value pairs"),
    ("timm:vit_tiny_patch16_224?img_size=16", "built for 16-pixel images but the data is 32 px"),
    ("timm:vit_tiny_patch16_224?no_such_option=1", "timm could not build"),
])
def test_bad_names_and_options_are_refused_by_name(arch, message):
    with pytest.raises(ConfigError, match=message):
        build_model(arch, 3, 3, 32)


def test_torchvision_models_refuse_grey_images_and_width():
    with pytest.raises(ConfigError, match="takes 3-channel .* the data has 1 channel"):
        build_model(EFFNET, 3, 1, 32)
    with pytest.raises(ConfigError, match="no width multiplier"):
        build_model(EFFNET, 3, 3, 32, width=0.5)


def test_uploaded_vit_reloads_at_its_own_size_and_normalisation(vit_checkpoint):
    meta = read_meta(vit_checkpoint)
    assert meta.arch == VIT and meta.image_size == 32  # the folder was read at the model's own img_size
    assert meta.mean == [0.5, 0.5, 0.5] and meta.std == [0.5, 0.5, 0.5]  # timm's ViT statistics, not ImageNet's
    data = dataset_of(meta)
    assert data.input_shape == (3, 32, 32) and data.test.mean == (0.5, 0.5, 0.5)
    torch.manual_seed(1)
    original = build_model(VIT, 3, 3, 32).eval()
    loaded, _ = load_checkpoint(vit_checkpoint)
    x = data.test.tensors()[0]
    assert torch.equal(loaded(x), original(x))


def test_training_reads_an_image_folder_at_the_models_own_size_and_normalisation(image_folder, tmp_path):
    out = tmp_path / "trained"
    [point] = task("train", model=VIT, dataset=image_folder, out=str(out), train=TrainConfig(epochs=1, batch_size=16))
    meta = read_meta(out)
    assert meta.image_size == 32 and meta.mean == [0.5, 0.5, 0.5]  # not the folder default of 64 px, ImageNet's stats
    assert point.measurement.model == "timm:vit_tiny_patch16_224?depth=2&embed_dim=48&img_size=32&patch_size=8"
    assert load_checkpoint(out)[0].blocks[0].attn.num_heads == 3


def test_uploaded_torchvision_state_dict_reloads_with_the_same_predictions(image_folder, tmp_path):
    torch.manual_seed(2)
    model = build_model(EFFNET, 3, 3, 32).eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    directory = import_weights(buf.getvalue(), "effnet.pt", EFFNET, image_folder, image_size=32, root=tmp_path)
    loaded, meta = load_checkpoint(directory)
    assert meta.mean == pytest.approx([0.485, 0.456, 0.406]) and meta.image_size == 32
    x = dataset_of(meta).test.tensors()[0][:4]
    assert torch.equal(loaded(x), model(x))


def test_structured_pruning_cuts_attention_heads_and_mlp_channels(vit_checkpoint, tmp_path):
    dense, _ = load_checkpoint(vit_checkpoint)
    points = task("prune.structured", checkpoint=vit_checkpoint, ratios=(0.0, 0.5), out=str(tmp_path / "p"))
    before, after = points[0].measurement, points[1].measurement
    assert after.macs < 0.6 * before.macs and after.params_total < 0.6 * before.params_total
    assert points[1].extra["channels_kept"] < 0.7
    pruned, meta = load_checkpoint(points[1].artifact)  # rebuilt from the stored shapes
    assert meta.layer_shapes == "shape"
    for block in pruned.blocks:
        assert block.attn.num_heads == 1 and block.attn.qkv.out_features == 3 * 16  # 3 heads -> 1, head_dim kept
        assert block.mlp.fc1.out_features == 96  # 192 hidden channels -> 96
        assert block.mlp.fc2.out_features == 48  # the embedding width stays
    x = dataset_of(meta).test.tensors()[0]
    assert pruned(x).shape == (9, 3)
    assert count_macs(pruned, x[:1]) < count_macs(dense, x[:1])


def test_a_ratio_that_cuts_every_head_is_refused_naming_the_block():
    vit = build_model(VIT, 3, 3, 32).eval()
    with pytest.raises(ConfigError, match=r"every attention head of 'blocks.0.attn' \(3 heads\).* 0.667"):
        prune_channels(vit, torch.randn(1, 3, 32, 32), ratio=0.7, keep=("head",))


class TorchAttention(torch.nn.Module):
    """What torchvision's ViT uses: nn.MultiheadAttention, whose packed in_proj weights cannot be resized."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 16, 8, 8)
        self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return self.fc(self.attn(tokens, tokens, tokens)[0].mean(1))


def test_torch_multihead_attention_is_refused_naming_the_layer():
    with pytest.raises(UserError, match="does not cut torch's nn.MultiheadAttention \\(at 'attn'"):
        prune_channels(TorchAttention().eval(), torch.randn(1, 3, 32, 32), ratio=0.5, keep=("fc",))


def test_a_torchvision_resnet_loses_channels_across_its_residuals():
    arch = "torchvision:resnet18"
    model = build_model(arch, 3, 3, 32).eval()
    x = torch.randn(1, 3, 32, 32)
    params, macs = storage(model)["params_total"], count_macs(model, x)
    prune_channels(model, x, ratio=0.3, keep=(MODELS.get(arch).classifier,), arch=arch)
    assert storage(model)["params_total"] < 0.6 * params and count_macs(model, x) < 0.6 * macs
    assert model(x).shape == (1, 3)


def test_fake_quantization_runs_on_the_vit(vit_checkpoint):
    points = task("quantize.fake", checkpoint=vit_checkpoint, bits=(8, 4), save=False)
    assert [p.level for p in points[-2:]] == [8, 4]
    assert all(p.measurement.simulated for p in points[-2:])


def test_int8_refuses_an_untraceable_block_naming_the_layer():
    model = build_model("timm:mobilevit_xxs", 3, 3, 32).eval()  # MobileViT blocks branch on the feature map's size
    with pytest.raises(Int8ConversionError, match=r"cannot trace .* at layer 'stages.2.1' \(MobileVitBlock\)"):
        INT8_BACKENDS.get("fx").static(model, [torch.randn(2, 3, 32, 32)], "x86")


def test_kd_trains_a_cnn_student_from_a_vit_teacher(vit_checkpoint, tmp_path):
    out = tmp_path / "student"
    points = task("distill", teacher=vit_checkpoint, student="cnn_s", out=str(out),
                  train=TrainConfig(epochs=1, batch_size=16))
    teacher, student = points
    assert teacher.role == "teacher" and student.role == "student" and student.measurement.model == "cnn_s"
    meta = read_meta(out)
    assert meta.mean == [0.5, 0.5, 0.5] and meta.image_size == 32  # it saw the teacher's inputs, and keeps them
    loaded, _ = load_checkpoint(out)
    assert loaded(dataset_of(meta).test.tensors()[0]).shape == (9, 3)


@pytest.fixture(scope="session")
def effnet_checkpoint(image_folder, tmp_path_factory) -> str:
    torch.manual_seed(2)
    buf = io.BytesIO()
    torch.save(build_model(EFFNET, 3, 3, 32).state_dict(), buf)
    return import_weights(buf.getvalue(), "effnet.pt", EFFNET, image_folder, image_size=32,
                          root=tmp_path_factory.mktemp("uploads"))


@pytest.mark.parametrize("which", ["vit", "effnet"])
def test_the_whatif_on_uploaded_named_models_answers_at_once_with_an_estimate_that_converges_to_the_measurement(
        which, vit_checkpoint, effnet_checkpoint):
    from engine.methods import whatif as W
    from engine.methods import whatif_live as L

    checkpoint = {"vit": vit_checkpoint, "effnet": effnet_checkpoint}[which]
    engine = W.WhatIf(checkpoint, eval_samples=9, seed=0, latency=False, warm=False)
    live = L.LiveWhatIf(engine, profile=False, sensitivity=False, adaptive=0, first_step=3, chunk=3)
    try:
        for position in ((0.5, "unstructured", 32, "per_channel"), (0.3, "unstructured", 4, "per_tensor")):
            answer = live.move(*position)
            assert answer.answered_ms < 300 and answer.estimate.label == "estimate" and answer.result is None
            assert live.wait(answer.key, 60).state == "done"
            measured = live.answer(answer.key)
            assert measured.estimate.label == "measured"
            assert measured.result.accuracy == engine.evaluate(*position).accuracy  # the same forward, all 9 images
    finally:
        live.close()


def test_the_uploaded_efficientnet_loses_channels_squeeze_excitation_included(effnet_checkpoint, tmp_path):
    points = task("prune.structured", checkpoint=effnet_checkpoint, ratios=(0.0, 0.3), out=str(tmp_path / "p"))
    before, after = points[0].measurement, points[1].measurement
    assert after.params_total < 0.9 * before.params_total and after.macs < before.macs
    pruned, meta = load_checkpoint(points[1].artifact)  # rebuilt from the stored shapes
    assert pruned(dataset_of(meta).test.tensors()[0]).shape == (9, 3)


def test_the_uploaded_efficientnet_is_fake_quantized(effnet_checkpoint):
    fake = task("quantize.fake", checkpoint=effnet_checkpoint, bits=(8,), save=False)[-1]
    assert fake.level == 8 and fake.measurement.simulated and fake.measurement.bits == 8.0


def test_the_uploaded_efficientnet_teaches_a_cnn_student_at_its_own_inputs(effnet_checkpoint, tmp_path):
    teacher, student = task("distill", teacher=effnet_checkpoint, student="cnn_s", out=str(tmp_path / "s"),
                            train=TrainConfig(epochs=1, batch_size=16))
    assert teacher.measurement.model == EFFNET and student.measurement.model == "cnn_s"
    meta = read_meta(tmp_path / "s")
    assert meta.image_size == 32 and meta.mean == pytest.approx([0.485, 0.456, 0.406])
