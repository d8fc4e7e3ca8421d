"""Quantized models as they are deployed: BatchNorm folded into convolutions, and activations
fake-quantized at a width within calibrated ranges. Both the quantization methods and the packed
checkpoint format (engine/deploy/formats.py) build on these."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from engine.deploy import qmaths as maths
from engine.deploy.measure import prunable_weights


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def module_calls(graph: fx.Graph) -> dict[str, int]:
    """How many times the traced forward calls each module (a module called twice shares its weights)."""
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv path, bn path) where a BatchNorm2d reads only a Conv2d's output and each is used once."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - untraceable models fall back to adjacent layers in Sequentials
        pairs = []
        for name, m in model.named_modules():
            if isinstance(m, nn.Sequential):
                kids = list(m.named_children())
                for (a, ma), (b, mb) in zip(kids, kids[1:]):
                    if isinstance(ma, nn.Conv2d) and isinstance(mb, nn.BatchNorm2d):
                        pairs.append((f"{name}.{a}" if name else a, f"{name}.{b}" if name else b))
        return pairs
    modules = dict(model.named_modules())
    calls = module_calls(graph)
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), nn.Conv2d)
                and len(src.users) == 1 and calls[src.target] == 1 and calls[node.target] == 1):
            pairs.append((src.target, node.target))
    return pairs


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of the model in eval mode with each BatchNorm folded into its convolution.

    Layer paths are kept (the conv gains a bias; the BatchNorm becomes an Identity), so a per-layer
    bit assignment names the same layers as the trained model.
    """
    model = copy.deepcopy(model).eval().cpu()
    for conv_path, bn_path in _conv_bn_pairs(model):
        fused = fuse_conv_bn_eval(model.get_submodule(conv_path), model.get_submodule(bn_path))
        _set_module(model, conv_path, fused)
        _set_module(model, bn_path, nn.Identity())
    return model


ACT_SAMPLE = 1 << 20  # values kept per layer for the percentile and mse observers


class ActivationQuant:
    """Fake-quantizes the input of every Conv/Linear layer to `bits` (per tensor) within calibrated
    ranges [lo, hi] per layer. Use as a context manager around evaluation."""

    def __init__(self, model: nn.Module, bits: int, ranges: dict[str, tuple[Tensor, Tensor]], *, symmetric: bool):
        maths.check_bits("activation_bits", bits)
        self.model, self.bits, self.symmetric, self.ranges = model, bits, symmetric, ranges
        self._handles: list = []

    @classmethod
    def calibrate(cls, model: nn.Module, bits: int, batches: list[Tensor], *, symmetric: bool, observer: str,
                  percentile: float) -> ActivationQuant:
        """Ranges observed on the inputs each layer sees over `batches`."""
        maths.check_bits("activation_bits", bits)
        ranges: dict[str, tuple[Tensor, Tensor]] = {}
        samples: dict[str, list[Tensor]] = {}
        layers = prunable_weights(model)

        def keep(name: str):
            def hook(_m: nn.Module, args: tuple) -> None:
                flat = args[0].detach().flatten()
                step = max(1, flat.numel() // (ACT_SAMPLE // max(1, len(batches))))
                samples.setdefault(name, []).append(flat[::step])
                lo, hi = torch.aminmax(flat)
                old = ranges.get(name)
                ranges[name] = (lo, hi) if old is None else (torch.minimum(old[0], lo), torch.maximum(old[1], hi))

            return hook

        handles = [m.register_forward_pre_hook(keep(n)) for n, m in layers]
        try:
            with torch.inference_mode():
                for x in batches:
                    model(x)
        finally:
            for h in handles:
                h.remove()
        if observer != "minmax":
            for name, chunks in samples.items():
                ranges[name] = maths.observe(torch.cat(chunks), observer, bits, symmetric, None, percentile)
        return cls(model, bits, ranges, symmetric=symmetric)

    def meta(self) -> dict:
        """What a packed checkpoint's meta.quant records about it (the ranges go in the weights file)."""
        return {"bits": self.bits, "symmetric": self.symmetric}

    def __enter__(self) -> ActivationQuant:
        if self.bits >= maths.FLOAT_BITS:
            return self
        qmin, qmax = maths.int_range(self.bits, self.symmetric)
        for name, m in prunable_weights(self.model):
            if name not in self.ranges:
                continue
            scale, zp = maths.scale_zero_point(*self.ranges[name], self.bits, self.symmetric)

            def hook(_m: nn.Module, args: tuple, scale=scale, zp=zp) -> tuple:
                return (maths.fake_quantize(args[0], scale, zp, qmin, qmax), *args[1:])

            self._handles.append(m.register_forward_pre_hook(hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
