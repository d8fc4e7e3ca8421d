"""Every dataset entry: embedded ones, torchvision ones from generated on-disk fixtures, image folders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.core.errors import DatasetError
from engine.model.data import DATASETS, availability, load_dataset

N_TRAIN, N_TEST = 200, 50  # per split, 10 classes


def _labels(n: int) -> np.ndarray:
    return np.arange(n) % 10


def test_mnist5k_is_the_embedded_5000_digits_split_stratified(mnist5k):
    assert (len(mnist5k.train), len(mnist5k.val), len(mnist5k.test)) == (3500, 500, 1000)
    assert mnist5k.input_shape == (1, 28, 28) and mnist5k.num_classes == 10
    assert torch.bincount(mnist5k.test.y).tolist() == [100] * 10
    assert torch.bincount(mnist5k.val.y).tolist() == [50] * 10
    x, y = mnist5k.test.tensors()
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.2 and 0.8 < x.std().item() < 1.2  # normalised


def test_splits_are_deterministic_and_disjoint(mnist5k):
    from engine.model.data import _load_mnist5k

    again = _load_mnist5k(Path("."), False, None)
    assert torch.equal(again.train.x, mnist5k.train.x) and torch.equal(again.test.y, mnist5k.test.y)
    rows = lambda s: {bytes(r.numpy()) for r in s.x.reshape(len(s), -1)}  # noqa: E731
    assert not rows(mnist5k.test) & rows(mnist5k.train)


def test_digits_is_embedded_and_small(digits):
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert digits.input_shape == (1, 8, 8)


def test_calibration_subset_comes_from_train_and_is_seeded(mnist5k):
    a, b = mnist5k.calibration(64, seed=1), mnist5k.calibration(64, seed=1)
    assert len(a) == 64 and torch.equal(a.x, b.x)
    assert not torch.equal(a.x, mnist5k.calibration(64, seed=2).x)
    with pytest.raises(DatasetError, match="at least 1"):
        mnist5k.calibration(0)


def test_shuffled_batches_cover_the_split_once(digits):
    ys = torch.cat([y for _, y in digits.train.batches(100, shuffle=True, seed=3)])
    assert sorted(ys.tolist()) == sorted(digits.train.y.tolist())


# ---------------------------------------------------------------- torchvision fixtures in their on-disk formats


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = {3: 2051, 1: 2049}[array.ndim]
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _make_mnist(root: Path, folder: str) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", _labels(n))


def _make_cifar(root: Path, hundred: bool) -> None:
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"

    def batch(n: int) -> dict:
        return {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), key: _labels(n).tolist()}

    if hundred:
        names = {"train": batch(N_TRAIN), "test": batch(N_TEST),
                 "meta": {"fine_label_names": [f"c{i}" for i in range(100)]}}
    else:
        names = {f"data_batch_{i}": batch(N_TRAIN // 5) for i in range(1, 6)}
        names["test_batch"] = batch(N_TEST)
        names["batches.meta"] = {"label_names": [f"c{i}" for i in range(10)]}
    for name, obj in names.items():
        (folder / name).write_bytes(pickle.dumps(obj))


def _make_svhn(root: Path) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        y = _labels(n)
        y = np.where(y == 0, 10, y)  # SVHN stores digit 0 as label 10
        savemat(root / f"{split}_32x32.mat", {"X": rng.integers(0, 255, (32, 32, 3, n), dtype=np.uint8),
                                               "y": y.reshape(-1, 1)})


@pytest.fixture
def no_md5(monkeypatch):
    """The fixtures have the right format but not the real files' checksums."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(svhn, "check_integrity", lambda *a, **k: True)


@pytest.mark.parametrize("name, make, shape", [
    ("mnist", lambda r: _make_mnist(r, "MNIST"), (1, 28, 28)),
    ("fashion_mnist", lambda r: _make_mnist(r, "FashionMNIST"), (1, 28, 28)),
    ("cifar10", lambda r: _make_cifar(r, False), (3, 32, 32)),
    ("cifar100", lambda r: _make_cifar(r, True), (3, 32, 32)),
    ("svhn", _make_svhn, (3, 32, 32)),
])
def test_torchvision_dataset_loads_from_local_root(tmp_path, no_md5, name, make, shape):
    assert availability(name, tmp_path).startswith("not downloaded")
    with pytest.raises(DatasetError, match="--download"):
        load_dataset(name, tmp_path)
    make(tmp_path)
    assert availability(name, tmp_path) == "on disk"
    ds = load_dataset(name, tmp_path)
    assert ds.input_shape == shape
    assert len(ds.train) + len(ds.val) == N_TRAIN and len(ds.test) == N_TEST
    assert ds.num_classes == len(ds.class_names) == (100 if name == "cifar100" else 10)
    assert ds.test.y.tolist() == _labels(N_TEST).tolist()
    x, y = next(ds.train.batches(8))
    assert x.shape == (8, *shape) and x.dtype == torch.float32


def test_every_registered_dataset_is_covered():
    assert set(DATASETS.names()) == {"mnist5k", "digits", "mnist5k-hard", "mnist", "fashion_mnist", "cifar10",
                                     "cifar100", "svhn"}


# ---------------------------------------------------------------- image folders


def _png(path: Path, value: int, size: int = 20) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def _folder(root: Path, classes=("sparrow", "wren"), per_class=10, splits=("train",)) -> Path:
    for split in splits:
        for ci, c in enumerate(classes):
            for i in range(per_class):
                _png(root / split / c / f"{i}.png", 40 + 150 * ci + i)
    return root


def test_imagefolder_resizes_and_carves_val_and_test(tmp_path):
    ds = load_dataset(f"imagefolder:{_folder(tmp_path)}", image_size=16)
    assert ds.class_names == ["sparrow", "wren"] and ds.input_shape == (3, 16, 16)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 20
    assert len(ds.test) == 4 and len(ds.val) >= 1


def test_imagefolder_uses_given_test_split(tmp_path):
    root = _folder(tmp_path, splits=("train", "test"), per_class=6)
    ds = load_dataset(f"imagefolder:{root}", image_size=12)
    assert len(ds.test) == 12 and len(ds.train) + len(ds.val) == 12


@pytest.mark.parametrize("setup, message", [
    (lambda r: (r / "train").mkdir(parents=True), "empty"),
    (lambda r: _folder(r, classes=("only",)), "single class"),
    (lambda r: (_folder(r), (r / "train" / "wren" / "bad.png").write_bytes(b"not an image")), "unreadable image"),
    (lambda r: (_folder(r), _folder(r, classes=("sparrow", "eagle"), splits=("test",))), "not in train"),
    (lambda r: r.mkdir(), "no train/"),
])
def test_bad_image_folders_are_named(tmp_path, setup, message):
    root = tmp_path / "birds"
    setup(root)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"imagefolder:{root}", image_size=8)


def _bomb_png(path: Path, side: int = 20000) -> None:
    """A tiny file whose header declares side x side pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path):
    root = _folder(tmp_path / "birds")
    _bomb_png(root / "train" / "wren" / "huge.png")
    with pytest.raises(DatasetError, match=r"huge.png declares more than .* pixels"):
        load_dataset(f"imagefolder:{root}", image_size=8)


def test_too_few_images_per_class_says_how_many_are_needed(tmp_path):
    root = _folder(tmp_path / "birds", per_class=3)
    with pytest.raises(DatasetError, match=r"3 image\(s\) in class 'sparrow'.* needs at least 7 images per class"):
        load_dataset(f"imagefolder:{root}", image_size=8)
    enough = load_dataset(f"imagefolder:{_folder(tmp_path / 'seven', per_class=7)}", image_size=8)
    assert min(len(enough.train), len(enough.val), len(enough.test)) >= 2  # the stated minimum really works
    given = _folder(tmp_path / "more", per_class=6, splits=("train", "test"))
    assert len(load_dataset(f"imagefolder:{given}", image_size=8).val) >= 2  # only val is carved: 6 are enough


def test_a_failed_download_says_so_once_instead_of_asking_for_download(tmp_path, capsys):
    from engine.model.data import DATASETS, _torchvision_loader

    def offline(root: str, train: bool, download: bool):
        for i in range(6):
            print(f"Downloading mirror {i} ... failed")
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    spec = DATASETS.get("mnist")
    loader = _torchvision_loader("mnist", offline, spec.files, (0.5,), (0.5,), False)
    with pytest.raises(DatasetError) as e:
        loader.load(tmp_path, True, None)
    message = str(e.value)
    assert "could not download 'mnist'" in message and "network" in message and "--download" not in message
    assert capsys.readouterr().out == ""  # torchvision's mirror-by-mirror lines are not shown


def test_unknown_dataset_lists_the_names():
    with pytest.raises(Exception, match="choose from: mnist5k"):
        load_dataset("imagenet")
