"""What every distillation method shares: the registry, the setup it receives and the frozen teacher.

A method is one `Distiller` subclass in its own file (as in mdistiller), registered by name with
its config class (fields declared with `param(...)`); the registration also enters it in
`engine.methods.registry`, which the `distill` command, `distill-methods` and the app's forms read. It
answers one call, `step(batch) -> (logits, {term: loss})`, which `engine.model.train.fit` sums and
optimises. `model` is what fit trains and evaluates, `extra_modules` are its learned helpers
(adapters, projectors, embeddings, peer students), and `finish()` returns the students it delivers. A method's extra needs (sample indices, epochs) come through the
`Batch`, so the loop never special-cases a method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from engine.core.config import Config, param
from engine.core.registry import Registry
from engine.methods.distill.features import FeatureHooks, feature_shapes, pair_layers
from engine.methods.registry import register_method
from engine.model.data import Dataset, Split
from engine.model.train import Batch, TrainConfig
from engine.model.zoo import ModelSpec

# teacher outputs over the training split are cached up to this size (logits and features)
CACHE_LIMIT_BYTES = 256 * 2**20


@dataclass
class DistillSetup:
    """What a method is built from."""

    student: nn.Module  # the student to train (fresh, or from a checkpoint)
    teacher: nn.Module  # the teacher checkpoint's model; the method freezes it
    student_spec: ModelSpec
    teacher_spec: ModelSpec
    data: Dataset  # the data fit trains on (data.train may be a subset)
    train: TrainConfig
    device: torch.device
    new_student: Callable[[int], nn.Module]  # another student of the same architecture, initialised from a seed
    teacher_width: float = 1.0  # the teacher checkpoint's width multiplier (a student carrying its head records it)


class Distiller:
    """One method: its config in, `step(batch) -> (logits, {term: loss})` out."""

    name: ClassVar[str] = ""
    config: ClassVar[type[Config]]

    def __init__(self, cfg: Config, setup: DistillSetup):
        self.cfg = cfg
        self.setup = setup
        self.student = setup.student
        self.extra_modules: list[nn.Module] = []
        self._attached: list[FeatureHooks | FrozenTeacher] = []  # hooks to remove when training ends

    @property
    def model(self) -> nn.Module:
        """The module fit trains and evaluates (its logits are the student's predictions)."""
        return self.student

    def step(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def hooks(self, model: nn.Module, paths: Sequence[str], of: str = "output") -> FeatureHooks:
        """Feature hooks on the student (or a peer), removed by finish()."""
        h = FeatureHooks(model, paths, of)
        self._attached.append(h)
        return h

    def frozen_teacher(self, paths: Sequence[str] = (), of: str = "output", cache: bool | None = None
                       ) -> FrozenTeacher:
        """The teacher, frozen, with hooks on `paths`; cached unless the inputs change (augmentation)."""
        s = self.setup
        cache = not s.train.augment if cache is None else cache
        t = FrozenTeacher(s.teacher, s.data.train, s.device, paths=paths, of=of, cache=cache)
        self._attached.append(t)
        return t

    def finish(self) -> list[nn.Module]:
        """Called once after training: removes hooks and returns the trained students (eval mode)."""
        for a in self._attached:
            a.remove()
        return [self.student.eval()]


DISTILLERS: Registry[type[Distiller]] = Registry("distillation method")


def register_distiller(name: str):
    """Registers a Distiller class under `name`; its docstring's first line (the paper) describes it."""

    def add(cls: type[Distiller]) -> type[Distiller]:
        cls.name = name
        DISTILLERS.register(name)(cls)
        register_method("distill", name, cls.config, paper_of(cls), task="distill")
        return cls

    return add


def paper_of(cls: type[Distiller]) -> str:
    return (cls.__doc__ or cls.name).strip().splitlines()[0]


# ---------------------------------------------------------------- configs shared by several methods


def temperature_param(default: float, help: str) -> Any:  # noqa: A002 - param()'s own word
    """A softmax temperature setting, in (0, 100]."""
    return param(default, help, lo=0, hi=100, lo_open=True)


def weight_param(default: float, help: str) -> Any:  # noqa: A002
    """The weight of a loss term, in [0, 1,000,000]."""
    return param(default, help, lo=0, hi=1_000_000)


@dataclass
class FeatureLayers(Config):
    """Which layers to distil between: module paths, or empty for the models' feature stages."""

    student_layers: tuple[str, ...] = param((), "student module paths to distil from, e.g. features.1,features.2 "
                                                "(default: the feature stages)")
    teacher_layers: tuple[str, ...] = param((), "teacher module paths, paired in order with student_layers "
                                                "(default: the feature stages)")


# ---------------------------------------------------------------- the frozen teacher


class FrozenTeacher:
    """The teacher in eval mode with gradients off, and its outputs for a batch.

    With `cache=True` (the training inputs never change: no augmentation, no mixing), the logits
    and the hooked features for the whole training split are computed once, if they fit in
    CACHE_LIMIT_BYTES, and looked up by `Batch.index`: an optimisation, the numbers are the same.
    """

    def __init__(self, teacher: nn.Module, train: Split, device: torch.device, *, paths: Sequence[str] = (),
                 of: str = "output", cache: bool = True):
        self.module = teacher.eval().requires_grad_(False).to(device)
        self.device = device
        self.hooks = FeatureHooks(teacher, paths, of) if paths else None
        self._cache: list[Tensor] | None = None
        if cache:
            self._cache = self._precompute(train)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and features for inputs x (no cache)."""
        self.module.eval()
        logits = self.module(x.to(self.device))
        return logits, self.hooks.take() if self.hooks else []

    def batch(self, b: Batch) -> tuple[Tensor, list[Tensor]]:
        """Logits and features for a training batch, from the cache when there is one."""
        if self._cache is None:
            return self(b.x)
        idx = b.index.to(self.device)
        logits, *feats = (t[idx] for t in self._cache)
        return logits, feats

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def _precompute(self, train: Split) -> list[Tensor] | None:
        x_all = train.tensors()[0]
        first = self(x_all[:2])
        per_sample = sum(t[0].numel() * t.element_size() for t in (first[0], *first[1]))
        if per_sample * len(train) > CACHE_LIMIT_BYTES:
            return None
        parts: list[list[Tensor]] = []
        for start in range(0, len(train), 256):
            logits, feats = self(x_all[start : start + 256])
            parts.append([logits, *feats])
        return [torch.cat(col) for col in zip(*parts)]

    def remove(self) -> None:
        if self.hooks is not None:
            self.hooks.remove()
        self._cache = None


# ---------------------------------------------------------------- feature pairs


def paired_features(setup: DistillSetup, layers: FeatureLayers, default: str = "all"
                    ) -> tuple[list[tuple[str, str]], list[tuple], list[tuple]]:
    """The (student, teacher) layer pairs and their per-sample shapes; bad names fail here, before training."""
    pairs = pair_layers(setup.student_spec, setup.teacher_spec, layers.student_layers, layers.teacher_layers, default)
    example = setup.data.train.tensors()[0][:2]
    s_shapes = feature_shapes(setup.student, [s for s, _ in pairs], example)
    t_shapes = feature_shapes(setup.teacher, [t for _, t in pairs], example)
    return pairs, s_shapes, t_shapes


def classifier_inputs(setup: DistillSetup) -> tuple[tuple, tuple]:
    """Per-sample shapes of what goes into the student's and the teacher's classifiers (the embeddings)."""
    example = setup.data.train.tensors()[0][:2]
    s = feature_shapes(setup.student, [setup.student_spec.classifier], example, of="input")[0]
    t = feature_shapes(setup.teacher, [setup.teacher_spec.classifier], example, of="input")[0]
    return s, t
