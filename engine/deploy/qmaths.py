"""The pure maths of uniform quantization: integer ranges, scales, fake quantization, observers.

Uniform affine quantization as in Jacob et al., "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference" (CVPR 2018):

    q = clamp(round(x / s) + z, qmin, qmax)        x_hat = (q - z) * s

Symmetric quantization uses the narrow signed range [-(2^(b-1) - 1), 2^(b-1) - 1] with z = 0, so
+max and -max are both representable (2 bits is then ternary); asymmetric uses [0, 2^b - 1] with a
zero point. `fake_quantize` rounds exactly as `torch.fake_quantize_per_tensor_affine` and
`torch.fake_quantize_per_channel_affine` do (round half to even of x * (1 / s)); the tests pin that.

An observer turns a tensor into the range [lo, hi] that the grid must cover: `minmax`, `percentile`
(clips outliers), or `mse` (the clipping that minimises the reconstruction error, a grid search as
in Banner et al., "Post-training 4-bit quantization of convolution networks for rapid-deployment",
NeurIPS 2019). 32 bits means float: nothing is quantized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.core.errors import ConfigError

MIN_BITS, MAX_BITS = 2, 32
FLOAT_BITS = 32  # a width of 32 leaves the tensor in float
OBSERVERS = ("minmax", "percentile", "mse")
GRANULARITIES = ("per_channel", "per_tensor")
SWEEP_BITS = (2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 26, 32)  # the standard sweep of the greedy path-following study
MSE_GRID = 100  # clipping ratios tried by the mse observer, evenly from 1.0 down to MSE_MIN_RATIO
MSE_MIN_RATIO = 0.01  # low enough to clip a single far outlier
MSE_CHUNK = 1 << 24  # candidate values the mse observer holds at once
QUANTILE_MAX = 1 << 24  # torch.quantile's input limit; larger tensors are subsampled evenly


def check_bits(name: str, bits: object, lo: int = MIN_BITS, hi: int = MAX_BITS) -> None:
    """A bit width must be a whole number in [lo, hi]."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
        raise ConfigError(f"{name} must be a whole number of bits in [{lo}, {hi}], got {bits!r}")


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """(qmin, qmax) of the integer grid."""
    check_bits("bits", bits)
    if symmetric:
        half = 2 ** (bits - 1) - 1
        return -half, half
    return 0, 2**bits - 1


def scale_zero_point(lo: Tensor, hi: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    """Scale (float32) and zero point (int64) that map [lo, hi] (widened to hold 0) onto the grid."""
    qmin, qmax = int_range(bits, symmetric)
    lo = torch.clamp(lo.float(), max=0.0)
    hi = torch.clamp(hi.float(), min=0.0)
    tiny = torch.finfo(torch.float32).eps
    if symmetric:
        scale = torch.clamp(torch.maximum(-lo, hi) / qmax, min=tiny)
        return scale, torch.zeros_like(scale, dtype=torch.int64)
    scale = torch.clamp((hi - lo) / (qmax - qmin), min=tiny)
    zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).to(torch.int64)
    return scale, zero_point


def _broadcast(t: Tensor, x: Tensor, axis: int | None) -> Tensor:
    if axis is None:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int,
                  axis: int | None = None) -> Tensor:
    """Quantize then dequantize; `axis` is the channel axis for per-channel scales (None = per tensor)."""
    s = _broadcast(scale, x, axis)
    z = _broadcast(zero_point, x, axis).to(x.dtype)
    q = torch.clamp(torch.round(x * (1.0 / s)) + z, qmin, qmax)
    return (q - z) * s


def _per_channel_rows(x: Tensor, axis: int | None) -> Tensor:
    """x as [channels, values] for per-channel statistics, or [1, values] per tensor."""
    if axis is None:
        return x.reshape(1, -1)
    return x.transpose(0, axis).reshape(x.shape[axis], -1)


def minmax_range(x: Tensor, axis: int | None = None) -> tuple[Tensor, Tensor]:
    rows = _per_channel_rows(x.detach().float(), axis)
    lo, hi = torch.aminmax(rows, dim=1)
    return (lo[0], hi[0]) if axis is None else (lo, hi)


def percentile_range(x: Tensor, percentile: float, axis: int | None = None) -> tuple[Tensor, Tensor]:
    """The (100 - p)-th and p-th percentiles, so the rarest outliers are clipped."""
    rows = _per_channel_rows(x.detach().float(), axis)
    if rows.shape[1] * rows.shape[0] > QUANTILE_MAX:
        step = math.ceil(rows.shape[1] * rows.shape[0] / QUANTILE_MAX)
        rows = rows[:, ::step]
    q = torch.tensor([1 - percentile / 100, percentile / 100])
    lo, hi = torch.quantile(rows, q, dim=1)
    return (lo[0], hi[0]) if axis is None else (lo, hi)


def mse_range(x: Tensor, bits: int, symmetric: bool, axis: int | None = None) -> tuple[Tensor, Tensor]:
    """The min-max range shrunk by the ratio (per channel) that gives the lowest squared error."""
    rows = _per_channel_rows(x.detach().float(), axis)  # [channels, values]
    lo, hi = torch.aminmax(rows, dim=1)
    qmin, qmax = int_range(bits, symmetric)
    ratios = torch.linspace(1.0, MSE_MIN_RATIO, MSE_GRID)
    errors = []
    # all ratios at once, in chunks that keep the candidates under MSE_CHUNK values
    per_chunk = max(1, MSE_CHUNK // max(1, rows.numel()))
    for chunk in ratios.split(per_chunk):
        r = chunk.view(-1, 1)  # [ratios, 1] against [channels]
        s, z = scale_zero_point(lo * r, hi * r, bits, symmetric)
        s, z = s.unsqueeze(-1), z.unsqueeze(-1).float()
        q = torch.clamp(torch.round(rows * (1.0 / s)) + z, qmin, qmax)
        errors.append((((q - z) * s - rows) ** 2).mean(dim=-1))  # [ratios, channels]
    best = ratios[torch.cat(errors).argmin(dim=0)]  # the first (largest) ratio among equals
    lo, hi = lo * best, hi * best
    return (lo[0], hi[0]) if axis is None else (lo, hi)


def observe(x: Tensor, observer: str, bits: int, symmetric: bool, axis: int | None = None,
            percentile: float = 99.99) -> tuple[Tensor, Tensor]:
    """The range [lo, hi] (per channel along `axis`, or per tensor) an observer picks for x."""
    if observer == "minmax":
        return minmax_range(x, axis)
    if observer == "percentile":
        return percentile_range(x, percentile, axis)
    if observer == "mse":
        return mse_range(x, bits, symmetric, axis)
    raise ConfigError(f"observer must be one of {', '.join(OBSERVERS)}; got {observer!r}")


@dataclass(frozen=True)
class Codes:
    """A tensor quantized to integers: x_hat = (codes - zero_point) * scale, per channel along `axis`."""

    codes: Tensor  # int64, the tensor's shape, each in [qmin, qmax]
    scale: Tensor  # float32, [groups] (1 group per tensor, or one per channel along axis)
    zero_point: Tensor  # int64, [groups]
    axis: int | None  # the channel axis, or None per tensor
    bits: int
    qmin: int

    def dequantize(self) -> Tensor:
        return dequantize(self.codes, self.scale, self.zero_point, self.axis)


def quantize_codes(x: Tensor, bits: int, *, symmetric: bool = True, per_channel: bool = True,
                   observer: str = "minmax", percentile: float = 99.99) -> Codes:
    """The integer codes of x at `bits` (channels along axis 0 when per_channel), with their qparams.

    The codes are rounded as `fake_quantize` rounds, then clamped in integers (at 25 bits and more a
    float32 bound is not exact), so `dequantize` of the codes is what every method evaluates and
    what a packed checkpoint reloads, bit for bit."""
    check_bits("bits", bits, MIN_BITS, FLOAT_BITS - 1)
    axis = 0 if per_channel and x.dim() > 1 else None
    lo, hi = observe(x, observer, bits, symmetric, axis, percentile)
    scale, zero_point = scale_zero_point(lo, hi, bits, symmetric)
    qmin, qmax = int_range(bits, symmetric)
    s = _broadcast(scale, x, axis)
    z = _broadcast(zero_point, x, axis).to(x.dtype)
    q = torch.clamp(torch.round(x.detach() * (1.0 / s)) + z, qmin, qmax).to(torch.int64).clamp(qmin, qmax)
    return Codes(q, scale.reshape(-1), zero_point.reshape(-1), axis, bits, qmin)


def dequantize(codes: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None) -> Tensor:
    """(codes - zero_point) * scale in float32, computed exactly as `fake_quantize` computes it."""
    q = codes.to(torch.float32)
    if axis is None:
        return (q - zero_point.reshape(()).to(torch.float32)) * scale.reshape(())
    return (q - _broadcast(zero_point, q, axis).to(torch.float32)) * _broadcast(scale, q, axis)


def quantize_tensor(x: Tensor, bits: int, *, symmetric: bool = True, per_channel: bool = True,
                    observer: str = "minmax", percentile: float = 99.99) -> Tensor:
    """x fake-quantized to `bits` (channels along axis 0 when per_channel); 32 bits returns x."""
    check_bits("bits", bits)
    if bits >= FLOAT_BITS:
        return x
    return quantize_codes(x, bits, symmetric=symmetric, per_channel=per_channel, observer=observer,
                          percentile=percentile).dequantize()


def scale_groups(weight: Tensor, bits: int, per_channel: bool) -> int:
    """How many (scale, zero point) pairs a quantized weight stores: one per output channel or one."""
    if bits >= FLOAT_BITS:
        return 0
    return weight.shape[0] if per_channel and weight.dim() > 1 else 1


def reconstruction_error(x: Tensor, x_hat: Tensor) -> float:
    """Mean squared error of a quantized copy, relative to the tensor's mean square (0 = exact)."""
    return float(((x_hat - x) ** 2).mean() / (x**2).mean().clamp_min(1e-30))


def average_bits(bits: dict[str, int], sizes: dict[str, int]) -> float:
    """Mean width over layers weighted by their weight counts (what `measure` calls `bits`)."""
    total = sum(sizes[k] for k in bits)
    return sum(bits[k] * sizes[k] for k in bits) / total if total else float(FLOAT_BITS)


class RoundSTE(torch.autograd.Function):
    """round() whose gradient is passed straight through (Bengio et al. 2013, "Estimating or
    Propagating Gradients Through Stochastic Neurons")."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001 - autograd signature
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        return grad


def fake_quantize_ste(x: Tensor, bits: int, *, symmetric: bool = True, per_channel: bool = True,
                      observer: str = "minmax", percentile: float = 99.99) -> Tensor:
    """Fake quantization for training: the forward is `quantize_tensor`; the gradient flows through
    rounding unchanged and is zero where clamping saturates (the usual STE)."""
    if bits >= FLOAT_BITS:
        return x
    axis = 0 if per_channel and x.dim() > 1 else None
    with torch.no_grad():
        lo, hi = observe(x, observer, bits, symmetric, axis, percentile)
        scale, zero_point = scale_zero_point(lo, hi, bits, symmetric)
    qmin, qmax = int_range(bits, symmetric)
    s = _broadcast(scale, x, axis)
    z = _broadcast(zero_point, x, axis).to(x.dtype)
    q = RoundSTE.apply(x * (1.0 / s)) + z
    # inside the grid the gradient is 1 (boundaries included, as torch's fake-quant ops do); outside, 0
    q = torch.where((q >= qmin) & (q <= qmax), q, torch.clamp(q, qmin, qmax).detach())
    return (q - z) * s
