"""AdaRound: learned up-or-down rounding of each weight, layer by layer, on calibration data.

Nagel, Amjad, van Baalen, Louizos & Blankevoort, "Up or Down? Adaptive Rounding for Post-Training
Quantization" (ICML 2020). The grid (scale, zero point) is round-to-nearest's; only the rounding
changes: each weight's code is floor(W/s) + z + h(V), where h is the rectified sigmoid of a learned
V, pushed to exactly 0 or 1 by the regulariser sum(1 - |2h(V) - 1|^beta) while beta is annealed from
20 to 2 after a warm start, and V minimises the squared error of the layer's output on calibration
inputs. The final codes are floor(W/s) + z + [h(V) >= 0.5], so each differs from nearest by at most 1.

The constants and schedule follow the two reference implementations: zeta 1.1, gamma -0.1, V
initialised so that h(V) is the weight's fractional part, regularisation weight 0.01, beta 20 -> 2
(AIMET's cosine decay) after a 20 % warm start, Adam, a batch of 32 calibration samples per step, and
the reconstruction loss sum over channels, mean over the rest (Qualcomm AIMET `aimet_torch/adaround`,
Xilinx/AMD Brevitas `learned_round`). AIMET takes 10,000 steps at lr 1e-3 and Brevitas 1,000 at 0.1;
the default here is 500 at 1e-2 (steps x rate 5, against AIMET's 10 and Brevitas' 100; 500 steps at
1e-3 move V by 0.5 at most, so few weights can leave nearest). The paper calibrates on 1,024 images; the
default here is 256 (8 x 32; every layer's inputs and targets are held in memory). As in AIMET, each layer's input comes
from the model quantized so far (earlier layers already AdaRounded) and its target is the float
model's output of that layer on the float input, so later layers correct earlier layers' error; where a
ReLU or ReLU6 takes the layer's output directly, both outputs go through it before the loss (AIMET's
`act_func`), so errors the activation erases cost nothing.

BatchNorm is folded first, as every quantization method here does. Quantization is simulated: each
width is a variant saved as a `packed` checkpoint at round-to-nearest's scales, and the point says
simulated; latency is the float model's, timed once.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Point
from engine.deploy import qmaths as maths
from engine.deploy.quantized import fold_batchnorm
from engine.methods.quant.common import (
    LayerWeights,
    Output,
    SimulatedRun,
    baseline_point,
    check_bits_list,
    float_latency,
    quant_method,
    report,
    simulated_backend,
    simulated_point,
)
from engine.model.data import Dataset, calibration_batches
from engine.model.outputs import SaveOptions, level_dir

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch: h reaches exactly 0 and 1
BATCH = 32  # calibration samples per optimisation step (AIMET's BATCH_SIZE)
CAPTURE_BATCH = 256  # images per forward pass when collecting a layer's inputs and outputs
CANCEL_EVERY = 50  # optimisation steps between cancellation checks


@dataclass
class AdaRoundConfig(SaveOptions, SimulatedRun):
    bits: tuple[int, ...] = param((4,), "weight widths, each in [2, 8]; each is one AdaRound variant")
    calib_batches: int = param(8, "batches of calibration images (the layers' inputs and targets)", lo=1,
                               hi=10_000)
    calib_batch_size: int = param(32, "images per calibration batch", lo=1, hi=4096)
    iterations: int = param(500, "Adam steps per layer (the paper uses 10,000; 500 keeps a CPU run short)",
                            lo=1, hi=1_000_000)
    reg_weight: float = param(0.01, "weight of the rounding regulariser against the reconstruction loss", lo=0,
                              hi=1e6)
    beta_start: float = param(20.0, "the regulariser's exponent when annealing starts", lo=0, hi=1e3,
                              lo_open=True)
    beta_end: float = param(2.0, "the regulariser's exponent at the last step", lo=0, hi=1e3, lo_open=True)
    warm_start: float = param(0.2, "share of the steps with no regulariser", lo=0, hi=1, hi_open=True)
    lr: float = param(1e-2, "Adam's learning rate for V (AIMET: 0.001 over 10,000 steps; Brevitas: 0.1 over "
                            "1,000)", lo=0, hi=10, lo_open=True)
    include_activation: bool = param(True, "reconstruct the output after the ReLU/ReLU6 that follows a layer, "
                                           "as AIMET does (--no-include-activation: the layer's own output)")

    def validate(self) -> None:
        check_bits_list("bits", self.bits, hi=8)
        if self.beta_end > self.beta_start:
            raise ConfigError(f"beta_end must not exceed beta_start (beta is annealed downwards); got "
                              f"beta_start {self.beta_start:g}, beta_end {self.beta_end:g}")


# ---------------------------------------------------------------- the maths


def rectified_sigmoid(v: Tensor, zeta: float = ZETA, gamma: float = GAMMA) -> Tensor:
    """h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1) (Nagel et al. 2020, eq. 23)."""
    return torch.clamp(torch.sigmoid(v) * (zeta - gamma) + gamma, 0.0, 1.0)


def initial_v(rest: Tensor, zeta: float = ZETA, gamma: float = GAMMA) -> Tensor:
    """The V whose h(V) is `rest` (the weight's fractional part on the grid, in [0, 1)), so the soft
    weight starts equal to the float weight."""
    return -torch.log((zeta - gamma) / (rest - gamma) - 1.0)


def rounding_regularizer(h: Tensor, beta: float) -> Tensor:
    """sum(1 - |2h - 1|^beta): 0 when every h is 0 or 1, largest at h = 0.5 (eq. 24)."""
    return (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()


def beta_at(step: int, steps: int, warm_start: float, beta_start: float, beta_end: float) -> float | None:
    """The regulariser's exponent at `step` of `steps`: None during the warm start (no regulariser),
    then a cosine decay from beta_start to beta_end (AIMET's schedule)."""
    warm = warm_start * steps
    if step < warm:
        return None
    progress = (step - warm) / max(steps - warm, 1e-12)
    return beta_end + 0.5 * (beta_start - beta_end) * (1.0 + math.cos(progress * math.pi))


def reconstruction_loss(out: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over the channel axis (dim 1), averaged over samples and positions."""
    return ((out - target) ** 2).sum(dim=1).mean()


def _per_channel(t: Tensor, like: Tensor, axis: int | None) -> Tensor:
    """A scale or zero point shaped to broadcast against the weight (channels along axis 0)."""
    if axis is None:
        return t.reshape(())
    return t.reshape([-1] + [1] * (like.dim() - 1))


def output_error(layer_fn: Callable[[Tensor, Tensor], Tensor], weight: Tensor, inputs: Tensor,
                 targets: Tensor, batch: int = CAPTURE_BATCH) -> float:
    """The layer's output error with `weight`, relative to the targets' mean square (0 = exact)."""
    err = ref = 0.0
    with torch.no_grad():
        for x, t in zip(inputs.split(batch), targets.split(batch)):
            err += float(((layer_fn(x, weight) - t) ** 2).sum())
            ref += float((t**2).sum())
    return err / max(ref, 1e-30)


@dataclass
class Rounding:
    """What AdaRound chose for one layer: the codes, and how they compare with nearest."""

    codes: maths.Codes
    flipped: int  # weights rounded the other way from nearest
    error_nearest: float  # relative output error on the calibration inputs with nearest's codes
    error_adaround: float  # ... with AdaRound's codes


def optimize_rounding(weight: Tensor, nearest: maths.Codes, qmax: int,
                      layer_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor, targets: Tensor, *,
                      iterations: int, reg_weight: float = 0.01, beta_range: tuple[float, float] = (20.0, 2.0),
                      warm_start: float = 0.2, lr: float = 1e-2, batch: int = BATCH, seed: int = 0,
                      check: Callable[[], None] | None = None) -> Rounding:
    """AdaRound for one layer: learns V on (input, target output) pairs and returns the hard codes
    clamp(floor(W/s) + z + [h(V) >= 0.5], qmin, qmax) at `nearest`'s scale and zero point.

    `layer_fn(x, w)` is the layer computed with weight w; `check` is called every CANCEL_EVERY steps
    (to raise on cancellation)."""
    if len(inputs) != len(targets) or len(inputs) == 0:
        raise ValueError(f"need as many inputs as targets (at least one); got {len(inputs)} and {len(targets)}")
    qmin = nearest.qmin
    s = _per_channel(nearest.scale, weight, nearest.axis)
    z = _per_channel(nearest.zero_point, weight, nearest.axis).to(torch.float32)
    scaled = weight.detach().float() * (1.0 / s)  # as quantize_codes scales, so floor/ceil bracket nearest
    down = torch.floor(scaled)
    v = nn.Parameter(initial_v(scaled - down))
    optimizer = torch.optim.Adam([v], lr=lr)
    generator = torch.Generator().manual_seed(seed)

    def soft_weight() -> Tensor:
        return (torch.clamp(down + rectified_sigmoid(v) + z, qmin, qmax) - z) * s

    for step in range(iterations):
        if check is not None and step % CANCEL_EVERY == 0:
            check()
        idx = torch.randint(len(inputs), (min(batch, len(inputs)),), generator=generator)
        loss = reconstruction_loss(layer_fn(inputs[idx], soft_weight()), targets[idx])
        beta = beta_at(step, iterations, warm_start, *beta_range)
        if beta is not None:
            loss = loss + reg_weight * rounding_regularizer(rectified_sigmoid(v), beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        up = (rectified_sigmoid(v) >= 0.5).to(torch.float32)
        codes = torch.clamp(down + up + z, qmin, qmax).to(torch.int64)
    chosen = maths.Codes(codes, nearest.scale, nearest.zero_point, nearest.axis, nearest.bits, qmin)
    return Rounding(chosen, flipped=int((codes != nearest.codes).sum()),
                    error_nearest=output_error(layer_fn, nearest.dequantize(), inputs, targets),
                    error_adaround=output_error(layer_fn, chosen.dequantize(), inputs, targets))


# ---------------------------------------------------------------- layers' inputs and outputs


class _Captured(Exception):
    """Raised by a capture hook: the rest of the forward pass is not needed."""


def execution_order(model: nn.Module, layers: dict[str, nn.Module], example: Tensor) -> list[str]:
    """The layers' names in the order a forward pass first calls them (unused layers last)."""
    order: list[str] = []
    forward_with_hooks(model, example, [
        m.register_forward_pre_hook(lambda _m, _a, n=name: order.append(n) if n not in order else None)
        for name, m in layers.items()])
    return order + [n for n in layers if n not in order]


def forward_with_hooks(model: nn.Module, example: Tensor, handles: list) -> None:
    """One forward of `example` in eval mode without gradients, then the hooks' `handles` removed."""
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()


def capture(model: nn.Module, layer: nn.Module, images: Tensor, what: str) -> Tensor | None:
    """The `what` ('input' or 'output') of `layer`'s first call for every image; None if it is never
    called. The forward pass stops at the layer, so no later (in-place) op touches what is kept."""
    kept: list[Tensor] = []

    def hook(_m: nn.Module, args: tuple, out: Tensor) -> None:
        kept.append((args[0] if what == "input" else out).detach())
        raise _Captured

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for chunk in images.split(CAPTURE_BATCH):
                with contextlib.suppress(_Captured):
                    model(chunk)
    finally:
        handle.remove()
    return torch.cat(kept) if len(kept) == len(images.split(CAPTURE_BATCH)) else None


ACTIVATIONS: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {
    nn.ReLU: torch.relu, nn.ReLU6: lambda t: torch.clamp(t, 0.0, 6.0)}  # out of place, unlike the model's


def following_activations(model: nn.Module, layers: dict[str, nn.Module], example: Tensor
                          ) -> dict[str, Callable[[Tensor], Tensor]]:
    """The activation function applied directly to each layer's output, where there is one (a ReLU or
    ReLU6 module whose input is the very tensor the layer returned, Identity in between allowed: BatchNorm
    folds to one). AIMET puts it in the reconstruction loss, so errors the activation erases cost nothing."""
    outputs: dict[int, tuple[Tensor, str]] = {}  # the tensor is kept so its id is not reused
    found: dict[str, Callable[[Tensor], Tensor]] = {}

    def record(name: str):
        def hook(_m: nn.Module, _args: tuple, out: Tensor) -> None:  # returns None: the output is unchanged
            if isinstance(out, Tensor):
                outputs.setdefault(id(out), (out, name))
        return hook

    def match(kind: type[nn.Module]):
        def hook(_m: nn.Module, args: tuple) -> None:
            kept = outputs.get(id(args[0])) if args else None
            name = kept[1] if kept is not None and kept[0] is args[0] else None
            if name is not None and name not in found:
                found[name] = ACTIVATIONS[kind]
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in layers.items()]
    handles += [m.register_forward_pre_hook(match(type(m))) for m in model.modules() if type(m) in ACTIVATIONS]
    forward_with_hooks(model, example, handles)
    return found


def layer_function(layer: nn.Module, activation: Callable[[Tensor], Tensor] | None = None
                   ) -> Callable[[Tensor, Tensor], Tensor]:
    """The layer as a function of (input, weight): its own forward with the weight swapped, then the
    activation that follows it, if given."""
    if activation is None:
        return lambda x, w: functional_call(layer, {"weight": w}, (x,))
    return lambda x, w: activation(functional_call(layer, {"weight": w}, (x,)))


# ---------------------------------------------------------------- the method


@quant_method("adaround", AdaRoundConfig, "AdaRound: learned rounding per layer at 2-8 bits (simulated)")
def adaround(model: nn.Module, data: Dataset, cfg: AdaRoundConfig, ctx: RunContext, output: Output) -> list[Point]:
    model = fold_batchnorm(model)
    reference = copy.deepcopy(model)  # stays float: each layer's target output
    latency = float_latency(model, data, cfg.latency)
    images = torch.cat(calibration_batches(data, cfg.calib_batches, cfg.calib_batch_size, cfg.seed))
    weights = LayerWeights(model, cfg.quantizer())
    order = execution_order(model, weights.layers, images[:1])
    activations = following_activations(model, weights.layers, images[:1]) if cfg.include_activation else {}
    ctx.log_event(f"AdaRound at {list(cfg.bits)} bits, {cfg.scheme()}, {len(order)} layers (BatchNorm folded), "
                  f"{len(images)} calibration images, {cfg.iterations} steps per layer; inputs from the model "
                  f"quantized so far, targets from the float model")
    report(ctx, 0.0, "measuring fp32")
    points = [baseline_point(ctx, model, data, cfg, output, method="adaround", latency=latency, scheme=cfg.scheme())]
    total = len(cfg.bits) * len(order)
    for bi, bits in enumerate(cfg.bits):
        weights.apply(maths.FLOAT_BITS)
        qmax = maths.int_range(bits, cfg.symmetric)[1]
        started = time.perf_counter()
        layers: dict[str, dict] = {}
        for li, name in enumerate(order):
            report(ctx, (bi * len(order) + li) / total, f"{bits} bits: AdaRound {name}")
            layer = weights.layers[name]
            nearest = weights.codes(name, bits)
            inputs = capture(model, layer, images, "input")
            targets = capture(reference, reference.get_submodule(name), images, "output")
            activation = activations.get(name)
            if activation is not None and targets is not None:
                targets = activation(targets)
            if inputs is None or targets is None:  # never called in a forward pass: nothing to reconstruct
                ctx.log_event(f"{name} is not called by the model's forward pass; kept at nearest rounding",
                              level="warning")
                with torch.no_grad():
                    layer.weight.copy_(weights.quantized(name, bits))
                continue
            r = optimize_rounding(weights.float[name], nearest, qmax, layer_function(layer, activation), inputs,
                                  targets,
                                  iterations=cfg.iterations, reg_weight=cfg.reg_weight,
                                  beta_range=(cfg.beta_start, cfg.beta_end), warm_start=cfg.warm_start, lr=cfg.lr,
                                  seed=cfg.seed + li, check=ctx.cancel.raise_if_cancelled)
            weights.set_codes(name, r.codes)
            with torch.no_grad():
                layer.weight.copy_(weights.quantized(name, bits))
            layers[name] = {"flipped": r.flipped, "error_nearest": r.error_nearest,
                            "error_adaround": r.error_adaround, "activation_in_loss": activation is not None}
        seconds = time.perf_counter() - started
        flipped = sum(v["flipped"] for v in layers.values())
        count = sum(weights.sizes[n] for n in layers)
        better = sum(v["error_adaround"] < v["error_nearest"] for v in layers.values())
        ctx.log_event(f"{bits} bits: AdaRound took {seconds:.1f} s; {flipped:,} of {count:,} weights rounded the "
                      f"other way from nearest; output error lower than nearest's in {better} of {len(layers)} "
                      f"layers")
        report(ctx, (bi + 1) * len(order) / total, f"measuring {bits}-bit AdaRound")
        points.append(simulated_point(
            ctx, model, data, weights, bits, cfg, output, method="adaround", stage="variant",
            sub=level_dir("bits", bits), level=bits, level_name="bits", latency=latency,
            backend=simulated_backend(f"int{bits} AdaRound"), scheme=cfg.scheme(), rounding="adaround",
            adaround_seconds=seconds, flipped_weights=flipped, flipped_fraction=flipped / max(count, 1),
            layers=layers))
    weights.apply(maths.FLOAT_BITS)
    report(ctx, 1.0, "done")
    return points
