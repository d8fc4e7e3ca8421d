"""What every quantization method shares: run settings, the deployable (BatchNorm-folded) form of
a model, per-layer weight quantization with a cache, activation fake-quant, and the one entry point.

Every method quantizes the model as it would be deployed: BatchNorm folded into the preceding
convolution (a deployed model stores only the folded weights), so the weights quantized, measured
and sized are the folded ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Point
from engine.core.progress import Progress
from engine.deploy import formats
from engine.deploy import qmaths as maths
from engine.deploy.measure import ModelForm, measure_latency, prunable_weights
from engine.deploy.quantized import ActivationQuant
from engine.methods.base import CheckpointRun, checkpoint_method, method_params, started
from engine.methods.tasks import measure_point
from engine.model.checkpoint import CheckpointMeta, write_checkpoint
from engine.model.data import Dataset
from engine.model.train import scores

# ---------------------------------------------------------------- configs


@dataclass
class QuantRun(CheckpointRun):
    """Settings every quantization task has: which checkpoint, how it is measured, and a seed."""

    seed: int = param(0, "seeds calibration sampling and training", lo=0, hi=2**32 - 1)

    # what the saved model holds: quantized weights (a chain's last step), or float ones another method may start
    # from (equalization); a recipe reads it to allow a stage to feed another
    output_weights: ClassVar[str] = "quantized"

    def method_params(self) -> dict:
        """The settings that describe the method (what a point's `params` records)."""
        return method_params(self)


@dataclass
class SimulatedRun(QuantRun):
    """Settings of the weight quantizer used by the simulated (fake-quant) methods."""

    granularity: str = param("per_channel", "per_channel (one scale per output channel) or per_tensor",
                             choices=maths.GRANULARITIES)
    symmetric: bool = param(True, "symmetric grid with zero point 0 (--no-symmetric or --asymmetric: min..max "
                                  "with a zero point)")
    observer: str = param("minmax", "how the range is chosen", choices=maths.OBSERVERS)
    percentile: float = param(99.99, "the percentile observer's clipping point", lo=50, hi=100, lo_open=True)

    def quantizer(self) -> dict:
        """Keyword arguments for `maths.quantize_tensor`."""
        return {"symmetric": self.symmetric, "per_channel": self.granularity == "per_channel",
                "observer": self.observer, "percentile": self.percentile}

    def scheme(self) -> str:
        """The quantizer in words, e.g. 'per-channel symmetric minmax'."""
        obs = f"percentile {self.percentile:g}" if self.observer == "percentile" else self.observer
        return (f"{self.granularity.replace('_', '-')} {'symmetric' if self.symmetric else 'asymmetric'} {obs}")

    def scheme_meta(self) -> dict:
        """The quantizer as a packed checkpoint's meta.quant records it."""
        return {"granularity": self.granularity, "symmetric": self.symmetric, "observer": self.observer,
                "percentile": self.percentile}


def asymmetric_alias(parser, flags: dict) -> None:
    """The family's CLI hook: --asymmetric, the README's spelling of --no-symmetric."""
    if "--asymmetric" not in flags and "--symmetric" in flags:
        parser.add_argument("--asymmetric", dest=flags["--symmetric"].dest, action="store_const", const=False,
                            default=None, help="same as --no-symmetric")


def check_bits_list(name: str, bits: tuple[int, ...], lo: int = maths.MIN_BITS, hi: int = maths.MAX_BITS) -> None:
    if not bits:
        raise ConfigError(f"{name} must list at least one bit width in [{lo}, {hi}]")
    for b in bits:
        maths.check_bits(name, b, lo, hi)
    if len(set(bits)) != len(bits):
        raise ConfigError(f"{name} lists a bit width twice: {list(bits)}")


# ---------------------------------------------------------------- where variants go


@dataclass
class Output:
    """What a run started from and where it saves its variants (root None: nothing is saved)."""

    root: Path | None = None  # the claimed output directory
    meta: CheckpointMeta | None = None  # the input checkpoint's meta: each variant's meta derives from it
    input_checkpoint: str = ""
    arch_shapes: dict | None = None  # the input's layer shapes, when its layers were resized

    def save(self, ctx: RunContext, sub: str, weights: bytes, *, method: str, params: dict, level: float | None,
             level_name: str, weights_format: str, quant: dict) -> str:
        """Writes one variant as a checkpoint directory (root / sub) and returns it; '' when not saving."""
        if self.root is None or self.meta is None:
            return ""
        directory = self.root / sub if sub else self.root
        if self.arch_shapes:
            quant = {**quant, "arch_shapes": self.arch_shapes}
        meta = self.meta.derived(family="quantize", method=method, params=params,
                                 input_checkpoint=self.input_checkpoint, level=level, level_name=level_name,
                                 weights_format=weights_format, quant=quant)
        directory.mkdir(parents=True, exist_ok=not sub)
        write_checkpoint(directory, weights, meta)
        ctx.log_artifact(str(directory), "checkpoint")
        return str(directory)


# ---------------------------------------------------------------- registration and the one entry point

MethodFn = Callable[[nn.Module, Dataset, QuantRun, RunContext, Output], list[Point]]
RUNNERS: dict[type[QuantRun], MethodFn] = {}  # config class -> the method, for `quantize`


def quant_method(name: str, config: type[QuantRun], description: str):
    """Registers a method: in the family's registry (the CLI, the listing, the forms), as the task
    `quantize.<name>` the job runner runs, and for `quantize(model, data, config)`.

    `fn(model, data, config, ctx, output)` gets the float model as trained; the task opens the
    checkpoint and, for configs with SaveOptions, claims the output directory first.
    """

    def add(fn: MethodFn) -> MethodFn:
        task = f"quantize.{name}"
        RUNNERS[config] = fn

        def run_from_checkpoint(cfg: QuantRun, ctx: RunContext) -> list[Point]:
            with started(cfg, task=task, tag=f"quantize-{name}", describe={"task": task}) as run:
                shapes = formats.arch_shapes(run.model) if run.root is not None and run.meta.layer_shapes == "shape" \
                    else None
                return fn(run.model, run.data, cfg, ctx, Output(run.root, run.meta, cfg.checkpoint, shapes))

        checkpoint_method("quantize", name, config, description)(run_from_checkpoint)
        return fn

    return add


def quantize(model: nn.Module, data: Dataset, config: QuantRun, ctx: RunContext | None = None,
             output: Output | None = None) -> list[Point]:
    """Runs the quantization method that `config`'s type names on an in-memory model (saving nothing
    unless `output` says where)."""
    fn = RUNNERS.get(type(config))
    if fn is None:
        names = ", ".join(c.__name__ for c in RUNNERS)
        raise ConfigError(f"no quantization method takes a {type(config).__name__}; configs are: {names}")
    return fn(model, data, config, ctx or RunContext(), output or Output(input_checkpoint=config.checkpoint))


# ---------------------------------------------------------------- the deployable form


# ---------------------------------------------------------------- weights at any width


class LayerWeights:
    """The float weights of every Conv/Linear layer of a model, and their integer codes made once per
    (layer, bits), so a sweep or a search quantizes each weight once and only copies tensors after."""

    def __init__(self, model: nn.Module, quantizer: dict):
        self.model = model
        self.quantizer = quantizer
        self.layers = dict(prunable_weights(model))
        self.float = {n: m.weight.detach().clone() for n, m in self.layers.items()}
        self.sizes = {n: w.numel() for n, w in self.float.items()}
        self._codes: dict[tuple[str, int], maths.Codes] = {}
        self._values: dict[tuple[str, int], Tensor] = {}

    def codes(self, name: str, bits: int) -> maths.Codes:
        key = (name, bits)
        if key not in self._codes:
            self._codes[key] = maths.quantize_codes(self.float[name], bits, **self.quantizer)
        return self._codes[key]

    def set_codes(self, name: str, codes: maths.Codes) -> None:
        """Replaces a layer's codes at `codes.bits` with codes chosen elsewhere (AdaRound's rounding of
        the same grid): `quantized`, `apply` and `all_codes` then use them."""
        if codes.codes.shape != self.float[name].shape:
            raise ValueError(f"{name}: codes of shape {tuple(codes.codes.shape)} for a weight of shape "
                             f"{tuple(self.float[name].shape)}")
        self._codes[(name, codes.bits)] = codes
        self._values.pop((name, codes.bits), None)

    def quantized(self, name: str, bits: int) -> Tensor:
        """The weight as the model computes with it at `bits` (the float weight at 32)."""
        if bits >= maths.FLOAT_BITS:
            return self.float[name]
        key = (name, bits)
        if key not in self._values:
            self._values[key] = self.codes(name, bits).dequantize()
        return self._values[key]

    def assignment(self, bits: dict[str, int] | int) -> dict[str, int]:
        return {n: bits if isinstance(bits, int) else bits.get(n, maths.FLOAT_BITS) for n in self.layers}

    def apply(self, bits: dict[str, int] | int) -> None:
        """Loads the weights quantized to `bits` (one width, or per layer; missing layers stay float)."""
        with torch.no_grad():
            for name, b in self.assignment(bits).items():
                self.layers[name].weight.copy_(self.quantized(name, b))

    def all_codes(self, bits: dict[str, int] | int) -> dict[str, maths.Codes]:
        """The codes of every layer below 32 bits (what a packed checkpoint stores)."""
        return {n: self.codes(n, b) for n, b in self.assignment(bits).items() if b < maths.FLOAT_BITS}

    def groups(self, bits: dict[str, int] | int) -> dict[str, int]:
        per_channel = self.quantizer["per_channel"]
        return {n: maths.scale_groups(self.float[n], b, per_channel) for n, b in self.assignment(bits).items()}

    def average_bits(self, bits: dict[str, int]) -> float:
        return maths.average_bits(bits, self.sizes)


# ---------------------------------------------------------------- activations


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


# ---------------------------------------------------------------- the point of a simulated model


def simulated_point(ctx: RunContext, model: nn.Module, data: Dataset, weights: LayerWeights,
                    bits: dict[str, int] | int, cfg: SimulatedRun, output: Output, *, method: str, stage: str,
                    sub: str, level: float | None, level_name: str, latency: dict | bool, backend: str,
                    acts: ActivationQuant | None = None, params: dict | None = None, **extra) -> Point:
    """Measures the model with its weights at `bits` (loaded here) as the packed checkpoint it is saved as.

    The packed weights are serialised in memory whether or not they are saved, so `file_bytes` is
    the size of the low-bit file; the saved checkpoint reloads to exactly this point's accuracy."""
    weights.apply(bits)
    assignment = weights.assignment(bits)
    ranges = acts.ranges if acts is not None and acts.bits < maths.FLOAT_BITS else None
    blob = formats.packed_bytes(model, weights.all_codes(assignment), ranges)
    params = cfg.method_params() if params is None else params
    quant = formats.packed_quant_meta(assignment, cfg.scheme_meta(), backend,
                                      acts.meta() if ranges is not None else None)
    artifact = output.save(ctx, sub, blob, method=method, params=params, level=level, level_name=level_name,
                           weights_format="packed", quant=quant)
    runner = formats.ActivationQuantRunner(model, acts) if ranges is not None else None
    form = ModelForm(runner=runner, backend=backend, weight_bits=assignment, quant_groups=weights.groups(assignment),
                     simulated=True, artifact=blob)
    return measure_point(ctx, model, data, form=form, latency=latency, family="quantize", method=method,
                         stage=stage, params=params, level=level, level_name=level_name,
                         input_checkpoint=output.input_checkpoint, artifact=artifact, **extra)


def baseline_point(ctx: RunContext, model: nn.Module, data: Dataset, cfg: QuantRun, output: Output, *,
                   method: str, latency: dict | bool, **extra) -> Point:
    """The float model (BatchNorm folded) the run compares against: stage baseline at 32 bits, not
    saved again (its input checkpoint holds it)."""
    return measure_point(ctx, model, data, latency=latency, family="quantize", method=method, stage="baseline",
                         params=cfg.method_params(), level=maths.FLOAT_BITS, level_name="bits",
                         input_checkpoint=output.input_checkpoint, **extra)
