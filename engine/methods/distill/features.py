"""Intermediate features by module path, captured with forward hooks (in torchdistill's style).

A loss never reaches into a model: it names layers (`features.1`, `layer3`) or takes the model's
feature stages (`ModelSpec.stages`), and `FeatureHooks` hands back what those modules produced in
the last forward pass. This works for every architecture in the zoo without per-model code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from engine.core.config import check_choice
from engine.core.errors import ConfigError, UserError
from engine.model.zoo import ModelSpec, get_module


class FeatureHooks:
    """Records the output (or the input) of each named module during every forward pass."""

    def __init__(self, model: nn.Module, paths: Sequence[str], of: str = "output"):
        check_choice("of", of, ("output", "input"))
        self.paths = list(paths)
        self.of = of
        self._store: dict[str, Tensor] = {}
        modules = [get_module(model, p) for p in self.paths]  # a ConfigError names a missing layer
        self._handles = []
        for path, module in zip(self.paths, modules):
            if of == "output":
                self._handles.append(module.register_forward_hook(self._keep_output(path)))
            else:
                self._handles.append(module.register_forward_pre_hook(self._keep_input(path)))

    def _keep_output(self, path: str):
        def hook(module: nn.Module, args, output) -> None:
            self._store[path] = _tensor(path, output)

        return hook

    def _keep_input(self, path: str):
        def hook(module: nn.Module, args) -> None:
            self._store[path] = _tensor(path, args[0] if args else None)

        return hook

    def take(self) -> list[Tensor]:
        """The captured features in the order of `paths`; forgets them (they hold the graph)."""
        missing = [p for p in self.paths if p not in self._store]
        if missing:
            raise UserError(f"layer {', '.join(missing)} did not run in the forward pass; pick layers the model uses")
        feats = [self._store[p] for p in self.paths]
        self._store.clear()
        return feats

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._store.clear()


def _tensor(path: str, value) -> Tensor:
    if not isinstance(value, Tensor):
        raise UserError(f"layer '{path}' gives a {type(value).__name__}, not a tensor; pick another layer")
    return value


@torch.no_grad()
def feature_shapes(model: nn.Module, paths: Sequence[str], example: Tensor, of: str = "output") -> list[tuple]:
    """Per-sample shapes of the named features, from one forward pass in eval mode."""
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    hooks = FeatureHooks(model, paths, of)
    try:
        model.eval()
        model(example.to(device))
        return [tuple(f.shape[1:]) for f in hooks.take()]
    finally:
        hooks.remove()
        model.train(was_training)


def pair_layers(student: ModelSpec, teacher: ModelSpec, student_layers: Sequence[str] = (),
                teacher_layers: Sequence[str] = (), default: str = "all") -> list[tuple[str, str]]:
    """(student layer, teacher layer) pairs to distil between.

    Named layers are used as given. A side left empty takes its model's feature stages; the two
    lists are aligned from the deepest end, so a 3-stage student pairs with the last 3 stages of a
    4-stage teacher. `default` picks among stage pairs when no layer was named: all of them, the
    last (deepest) or the middle one (the FitNets hint).
    """
    check_choice("default", default, ("all", "last", "middle"))
    s = list(student_layers) or list(student.stages)
    t = list(teacher_layers) or list(teacher.stages)
    if student_layers and teacher_layers and len(s) != len(t):
        raise ConfigError(f"student_layers names {len(s)} layers but teacher_layers names {len(t)}; "
                          f"give the same number, paired in order")
    k = min(len(s), len(t))
    if (student_layers and len(s) > k) or (teacher_layers and len(t) > k):
        raise ConfigError(f"{len(s) if student_layers else len(t)} layers were named but the other model has only "
                          f"{k} stages; name the layers of both models (student_layers and teacher_layers)")
    if k == 0:
        raise ConfigError(f"no feature layers to distil between {student.name} and {teacher.name}; "
                          f"name them with student_layers and teacher_layers")
    pairs = list(zip(s[len(s) - k:], t[len(t) - k:]))
    if student_layers or teacher_layers or default == "all":
        return pairs
    return [pairs[-1]] if default == "last" else [pairs[len(pairs) // 2]]
