"""Where and on what a model is evaluated: the device (the GPU when one is present) and a seeded subset
of a split.

`choose_device("auto")` is the GPU when torch sees one, else the CPU; both give the same accuracy up to float
rounding (a logit tie may break differently). `eval_indices` is a fixed random subset of a split, drawn with a
seed, so the same images are scored at every level of a sweep, at every step of a search, and by anyone who
draws it again. `subset_split` gives a dataset whose split is that subset, with a note when the subset asked for
is the whole split.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from engine.core.config import check_choice, check_range
from engine.core.errors import ConfigError
from engine.model.data import Dataset

DEVICES = ("auto", "cpu", "cuda")


def choose_device(device: str = "auto") -> torch.device:
    """'auto': the GPU when one is present, else the CPU (the same numbers up to float rounding); or as named."""
    check_choice("device", device, DEVICES)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but torch sees no GPU; use auto or cpu")
    return torch.device(device)


def eval_indices(n: int, samples: int, seed: int) -> Tensor:
    """A fixed random subset of range(n): `samples` positions (all when samples >= n), seeded, in order."""
    check_range("eval_samples", samples, 1)
    if samples >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(n, generator=g)[:samples]).values


def subset_split(data: Dataset, samples: int, seed: int, split: str = "test") -> tuple[Dataset, str]:
    """`data` with `split` cut to `eval_indices(len, samples, seed)`, and a note ("" unless the subset asked for
    holds the whole split, which is then used as it is)."""
    n = len(data.split(split).y)
    idx = eval_indices(n, samples, seed)
    if len(idx) == n:
        return data, f"eval_samples {samples} >= the {n} images of the {split} split: the whole split is evaluated"
    return dataclasses.replace(data, **{split: data.split(split).subset(idx)}), ""
