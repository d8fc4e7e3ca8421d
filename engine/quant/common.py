"""What every quantization method shares: run settings, the deployable (BatchNorm-folded) form of
a model, per-layer weight quantization with a cache, activation fake-quant, and the one entry point.

Every method quantizes the model as it would be deployed: BatchNorm folded into the preceding
convolution (a deployed model stores only the folded weights), so the weights quantized, measured
and sized are the folded ones.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from engine.config import Config, check_choice, check_range
from engine.context import RunContext
from engine.data import DEFAULT_ROOT, Dataset
from engine.errors import ConfigError
from engine.measure import measure_latency, prunable_weights
from engine.progress import Progress
from engine.quant import maths
from engine.tasks import open_checkpoint, register_task
from engine.train import scores

# ---------------------------------------------------------------- configs


@dataclass
class QuantRun(Config):
    """Settings every quantization task has: which checkpoint, and whether to time it."""

    checkpoint: str = ""  # checkpoint directory to quantize
    data_root: str = DEFAULT_ROOT  # where torchvision datasets live
    latency: bool = True  # time the model that runs (off for quick runs: latency fields are empty)
    seed: int = 0  # seeds calibration sampling and training

    def method_params(self) -> dict:
        """The settings that describe the method (what a point's `params` records)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("checkpoint", "data_root", "latency")}


@dataclass
class SimulatedRun(QuantRun):
    """Settings of the weight quantizer used by the simulated (fake-quant) methods."""

    granularity: str = "per_channel"  # per_channel (one scale per output channel) | per_tensor
    symmetric: bool = True  # symmetric (zero point 0) or asymmetric (min..max with a zero point)
    observer: str = "minmax"  # how the range is chosen: minmax | percentile | mse
    percentile: float = 99.99  # the percentile observer's clipping point

    def validate(self) -> None:
        check_choice("granularity", self.granularity, maths.GRANULARITIES)
        check_choice("observer", self.observer, maths.OBSERVERS)
        check_range("percentile", self.percentile, 50, 100, lo_open=True)

    def quantizer(self) -> dict:
        """Keyword arguments for `maths.quantize_tensor`."""
        return {"symmetric": self.symmetric, "per_channel": self.granularity == "per_channel",
                "observer": self.observer, "percentile": self.percentile}

    def scheme(self) -> str:
        """The quantizer in words, e.g. 'per-channel symmetric minmax'."""
        obs = f"percentile {self.percentile:g}" if self.observer == "percentile" else self.observer
        return (f"{self.granularity.replace('_', '-')} {'symmetric' if self.symmetric else 'asymmetric'} {obs}")


def check_bits_list(name: str, bits: tuple[int, ...], lo: int = maths.MIN_BITS, hi: int = maths.MAX_BITS) -> None:
    if not bits:
        raise ConfigError(f"{name} must list at least one bit width in [{lo}, {hi}]")
    for b in bits:
        maths.check_bits(name, b, lo, hi)
    if len(set(bits)) != len(bits):
        raise ConfigError(f"{name} lists a bit width twice: {list(bits)}")


# ---------------------------------------------------------------- the one entry point


@dataclass(frozen=True)
class QuantMethod:
    name: str  # the CLI's --method name
    task: str  # the registered task name (and each point's `method`)
    config: type[QuantRun]
    run: Callable[[nn.Module, Dataset, QuantRun, RunContext], list[dict]]
    description: str


METHODS: dict[str, QuantMethod] = {}


def quant_method(name: str, config: type[QuantRun], description: str):
    """Registers a method under its CLI name, and the task `quantize.<name>` the job runner runs.

    `fn(model, data, config, ctx)` gets the float model as trained; the task opens the checkpoint.
    """

    def add(fn: Callable[[nn.Module, Dataset, QuantRun, RunContext], list[dict]]):
        task = f"quantize.{name}"
        METHODS[name] = QuantMethod(name, task, config, fn, description)

        @register_task(task, config, description)
        def run_from_checkpoint(cfg: QuantRun, ctx: RunContext) -> list[dict]:
            if not cfg.checkpoint:
                raise ConfigError("checkpoint must name a checkpoint directory")
            model, _, data = open_checkpoint(cfg.checkpoint, cfg.data_root)
            return fn(model, data, cfg, ctx)

        return fn

    return add


def quantize(model: nn.Module, data: Dataset, config: QuantRun, ctx: RunContext | None = None) -> list[dict]:
    """Runs the quantization method that `config`'s type names on an in-memory model."""
    for method in METHODS.values():
        if type(config) is method.config:
            return method.run(model, data, config, ctx or RunContext())
    names = ", ".join(m.config.__name__ for m in METHODS.values())
    raise ConfigError(f"no quantization method takes a {type(config).__name__}; configs are: {names}")


def point_extras(cfg: QuantRun) -> dict:
    return {"checkpoint": cfg.checkpoint} if cfg.checkpoint else {}


# ---------------------------------------------------------------- the deployable form


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


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
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
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


# ---------------------------------------------------------------- weights at any width


class LayerWeights:
    """The float weights of every Conv/Linear layer of a model, and quantized copies made once per
    (layer, bits), so a sweep or a search quantizes each weight once and only copies tensors after."""

    def __init__(self, model: nn.Module, quantizer: dict):
        self.model = model
        self.quantizer = quantizer
        self.layers = dict(prunable_weights(model))
        self.float = {n: m.weight.detach().clone() for n, m in self.layers.items()}
        self.sizes = {n: w.numel() for n, w in self.float.items()}
        self._cache: dict[tuple[str, int], Tensor] = {}

    def quantized(self, name: str, bits: int) -> Tensor:
        key = (name, bits)
        if key not in self._cache:
            self._cache[key] = maths.quantize_tensor(self.float[name], bits, **self.quantizer)
        return self._cache[key]

    def assignment(self, bits: dict[str, int] | int) -> dict[str, int]:
        return {n: bits if isinstance(bits, int) else bits.get(n, maths.FLOAT_BITS) for n in self.layers}

    def apply(self, bits: dict[str, int] | int) -> None:
        """Loads the weights quantized to `bits` (one width, or per layer; missing layers stay float)."""
        with torch.no_grad():
            for name, b in self.assignment(bits).items():
                self.layers[name].weight.copy_(self.quantized(name, b))

    def groups(self, bits: dict[str, int] | int) -> dict[str, int]:
        per_channel = self.quantizer["per_channel"]
        return {n: maths.scale_groups(self.float[n], b, per_channel) for n, b in self.assignment(bits).items()}

    def average_bits(self, bits: dict[str, int]) -> float:
        return maths.average_bits(bits, self.sizes)


# ---------------------------------------------------------------- activations


ACT_SAMPLE = 1 << 20  # values kept per layer for the percentile and mse observers


class ActivationQuant:
    """Fake-quantizes the input of every Conv/Linear layer to `bits` (per tensor), with ranges
    calibrated once on the given batches. Use as a context manager around evaluation."""

    def __init__(self, model: nn.Module, bits: int, batches: list[Tensor], *, symmetric: bool, observer: str,
                 percentile: float):
        maths.check_bits("activation_bits", bits)
        self.model, self.bits, self.symmetric = model, bits, symmetric
        self.ranges: dict[str, tuple[Tensor, Tensor]] = {}
        samples: dict[str, list[Tensor]] = {}
        layers = prunable_weights(model)

        def keep(name: str):
            def hook(_m: nn.Module, args: tuple) -> None:
                flat = args[0].detach().flatten()
                step = max(1, flat.numel() // (ACT_SAMPLE // max(1, len(batches))))
                samples.setdefault(name, []).append(flat[::step])
                lo, hi = torch.aminmax(flat)
                old = self.ranges.get(name)
                self.ranges[name] = (lo, hi) if old is None else (torch.minimum(old[0], lo), torch.maximum(old[1], hi))

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
                self.ranges[name] = maths.observe(torch.cat(chunks), observer, bits, symmetric, None, percentile)
        self._handles: list = []

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


def calibration_batches(data: Dataset, batches: int, batch_size: int, seed: int) -> list[Tensor]:
    """`batches` batches of normalised training images drawn at random (the calibration split)."""
    check_range("calib_batches", batches, 1, 10_000)
    split = data.calibration(batches * batch_size, seed)
    return [x for x, _ in split.batches(batch_size)][:batches]


# ---------------------------------------------------------------- evaluation and words


def evaluate_tensors(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> dict[str, float]:
    """accuracy, top5 and loss of `model` on tensors already normalised (no re-normalisation per call)."""
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(x[i : i + batch_size]).float() for i in range(0, len(y), batch_size)])
    return scores(logits, y)


def float_latency(model: nn.Module, data: Dataset, enabled: bool) -> dict | bool:
    """The float model's latency, timed once, for every simulated point of a run (or False: not timed)."""
    if not enabled:
        return False
    return measure_latency(model, data.test.tensors()[0][:32])


def simulated_backend(weights: str, activation_bits: int | None = None) -> str:
    """What actually runs for a simulated point: the float model, with fake-quantized values."""
    acts = f" + int{activation_bits} activations" if activation_bits and activation_bits < maths.FLOAT_BITS else ""
    return f"fp32 eager (simulated {weights} weights{acts}; no low-bit kernel ran)"


def report(ctx: RunContext, fraction: float, message: str, **metrics: float) -> None:
    """Progress, then a cancellation check: every method calls this between evaluations."""
    ctx.progress(Progress(min(1.0, fraction), message, metrics=metrics))
    ctx.cancel.raise_if_cancelled()
