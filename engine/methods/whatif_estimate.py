"""What-if estimates: the accuracy at a slider position not yet measured, from the positions that were.

Pure functions of what is known about one checkpoint on one evaluation subset (`Known` rows: positions the
What-if measured, stored runs of the checkpoint, and the sum of per-layer quantization sensitivities). The
estimator is deliberately simple, so that its error bar can be argued for and its error measured
(bench/bench_scale.py):

1. **measured**: a position measured on the whole subset is answered as measured (its Wilson interval).
2. **along one axis**: where measured positions bracket the query along one slider (sparsity at fixed bits
   and scales, or bits, in log2, at fixed sparsity), linear interpolation between the two nearest. The
   error bar is the endpoints' own half-widths, blended, plus ``2 t (1 - t) |a_hi - a_lo|``: zero at a
   measured position, widest half-way, as wide as half the gap there.
3. **additive**: elsewhere, the drops add: from the nearest measured anchor ``(s', b')`` of the same mode and
   scales, ``a(s, b) = a(s', b') + [P(s) - P(s')] + [Q(b) - Q(b')]`` where ``P`` is the float pruning curve
   (bits 32) and ``Q`` the quantization curve of the unpruned model, both interpolated as in 2. The anchor
   with no pruning and float weights is the checkpoint itself, so with no 2-D position measured this is
   the plain additive model. The error bar adds the terms' half-widths in quadrature and an interaction
   term ``min(|dP|, |dQ|) + max(|dP|, |dQ|) / 4``: the additive model is exact when only one axis moves
   from a measured anchor on parallel curves, and least trustworthy when both move far.

Every answer is clipped to ``[floor, 1]`` (the floor: just under chance) and says how it was made.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from engine.core.intervals import wilson, wilson_half_width  # noqa: F401 - wilson is read as E.wilson (whatif_live)

FLOAT_BITS = 32
SOURCES = ("measured", "stored run", "sensitivity")


@dataclass(frozen=True)
class Known:
    """One fact about the checkpoint: the accuracy at a position, with the half-width of its 95 % interval."""

    sparsity: float
    mode: str  # "unstructured" or "channels"
    bits: int
    granularity: str  # "per_channel" / "per_tensor"; ignored at 32 bits
    accuracy: float
    half_width: float
    samples: int  # images it was measured on (0 for a prior)
    source: str = "measured"  # one of SOURCES


@dataclass(frozen=True)
class Estimate:
    """The estimated accuracy at a position, with its error bar; `measured` when it is a measurement."""

    accuracy: float
    low: float
    high: float
    basis: str  # how it was made, in words
    measured: bool = False

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def label(self) -> str:
        return "measured" if self.measured else "estimate"


def _grain(granularity: str, bits: int) -> str:
    return granularity if bits < FLOAT_BITS else "float"


def _same_row(k: Known, mode: str, bits: int, grain: str) -> bool:
    """k lies on the sparsity axis through (mode, bits, grain): same bits and scales, same mode unless unpruned."""
    return k.bits == bits and _grain(k.granularity, k.bits) == grain and (k.mode == mode or k.sparsity == 0)


def _same_column(k: Known, sparsity: float, mode: str, grain: str) -> bool:
    """k lies on the bits axis through (sparsity, mode, grain): float weights belong to every grain's column."""
    return (abs(k.sparsity - sparsity) < 1e-9 and (k.mode == mode or sparsity == 0)
            and (k.bits >= FLOAT_BITS or k.granularity == grain))


def _points(rows: Iterable[Known], coord) -> list[tuple[float, float, float]]:
    """(x, accuracy, half-width) sorted by x; where several facts share an x, a measurement on this subset wins,
    then the narrowest interval."""
    best: dict[float, tuple[tuple, float, float]] = {}
    for k in rows:
        x = round(coord(k), 9)
        rank = (SOURCES.index(k.source), k.half_width)
        if x not in best or rank < best[x][0]:
            best[x] = (rank, k.accuracy, k.half_width)
    return sorted((x, a, h) for x, (_, a, h) in best.items())


def interpolate(x: float, points: list[tuple[float, float, float]]) -> tuple[float, float, str] | None:
    """Linear interpolation of (x, accuracy, half-width) points at x: (accuracy, half-width, 'between'/'at'/
    'beyond'), or None without points. Beyond the ends, the last segment's slope, its half-width growing with
    the distance; a single point is held flat with a half-width of 0.5 per unit of distance."""
    if not points:
        return None
    xs = [p[0] for p in points]
    for px, a, h in points:
        if abs(px - x) < 1e-9:
            return a, h, "at"
    if xs[0] < x < xs[-1]:
        i = next(i for i, px in enumerate(xs) if px > x)
        (x0, a0, h0), (x1, a1, h1) = points[i - 1], points[i]
        t = (x - x0) / (x1 - x0)
        return a0 + t * (a1 - a0), (1 - t) * h0 + t * h1 + 2 * t * (1 - t) * abs(a1 - a0), "between"
    end, nxt = (points[0], points[1] if len(points) > 1 else None) if x < xs[0] else \
        (points[-1], points[-2] if len(points) > 1 else None)
    dist = abs(x - end[0])
    if nxt is None:
        return end[1], end[2] + 0.5 * dist, "beyond"
    slope = (end[1] - nxt[1]) / (end[0] - nxt[0])
    return end[1] + slope * (x - end[0]), end[2] + abs(slope) * dist + 0.5 * abs(end[1] - nxt[1]), "beyond"


def _bits_x(bits: int) -> float:
    return math.log2(bits)


def _clip(value: float, half: float, floor: float, basis: str) -> Estimate:
    value = min(1.0, max(floor, value))
    return Estimate(value, max(0.0, value - half), min(1.0, value + half), basis)


def estimate(sparsity: float, mode: str, bits: int, granularity: str, known: list[Known],
             floor: float = 0.0) -> Estimate:
    """The accuracy at a position from `known` (see the module docstring); `floor` clips it from below."""
    grain = _grain(granularity, bits)
    here = [k for k in known if abs(k.sparsity - sparsity) < 1e-9 and _same_row(k, mode, bits, grain)]
    exact = [k for k in here if k.source == "measured"] or [k for k in here if k.source != "sensitivity"]
    if exact:
        k = min(exact, key=lambda k: k.half_width)
        return Estimate(k.accuracy, max(0.0, k.accuracy - k.half_width), min(1.0, k.accuracy + k.half_width),
                        f"{k.source} on {k.samples:,} images", measured=True)
    row = _points((k for k in known if _same_row(k, mode, bits, grain)), lambda k: k.sparsity)
    col = _points((k for k in known if _same_column(k, sparsity, mode, grain)), lambda k: _bits_x(k.bits))
    tries = []
    along_row = interpolate(sparsity, row)
    if along_row and along_row[2] == "between":
        tries.append((along_row[1], along_row[0], "interpolated along sparsity at these bits"))
    along_col = interpolate(_bits_x(bits), col)
    if along_col and along_col[2] == "between":
        tries.append((along_col[1], along_col[0], "interpolated along bits at this sparsity"))
    additive = _additive(sparsity, mode, bits, grain, known)
    if additive is not None:
        tries.append((additive[1], additive[0], additive[2]))
    if tries:  # the way with the narrowest error bar
        half, value, basis = min(tries)
        return _clip(value, half, floor, basis)
    # nothing but the axis itself: extrapolate along whichever axis has points (wide)
    for axis, found in (("sparsity", along_row), ("bits", along_col)):
        if found:
            return _clip(found[0], found[1], floor, f"extrapolated along {axis}")
    return Estimate(0.5, 0.0, 1.0, "nothing measured yet")


def _additive(sparsity: float, mode: str, bits: int, grain: str,
              known: list[Known]) -> tuple[float, float, str] | None:
    """Drops add, from the nearest anchor measured at this mode and scales (the checkpoint itself at worst)."""
    prune_row = _points((k for k in known if _same_row(k, mode, FLOAT_BITS, "float")), lambda k: k.sparsity)
    quant_col = _points((k for k in known if _same_column(k, 0.0, mode, grain)), lambda k: _bits_x(k.bits))
    p_here, q_here = interpolate(sparsity, prune_row), interpolate(_bits_x(bits), quant_col)
    if p_here is None or q_here is None:
        return None
    anchors = [k for k in known if k.source != "sensitivity" and (k.mode == mode or k.sparsity == 0)
               and (k.bits >= FLOAT_BITS or k.granularity == grain)]
    best = None
    for a in anchors:
        p_a = interpolate(a.sparsity, prune_row)
        q_a = interpolate(_bits_x(a.bits), quant_col)
        dp, dq = p_here[0] - p_a[0], q_here[0] - q_a[0]
        half = math.sqrt(a.half_width ** 2 + p_here[1] ** 2 + q_here[1] ** 2) \
            + min(abs(dp), abs(dq)) + max(abs(dp), abs(dq)) / 4
        key = (half, abs(sparsity - a.sparsity) + abs(_bits_x(bits) - _bits_x(a.bits)) / 4)
        if best is None or key < best[0]:
            where = "the checkpoint" if a.sparsity == 0 and a.bits >= FLOAT_BITS else \
                f"{a.sparsity:.0%}, {a.bits} bits"
            best = (key, a.accuracy + dp + dq, half, f"additive drops from {where}")
    if best is None:
        return None
    return best[1], best[2], best[3]


def next_to_measure(known: list[Known], tolerance: float = 0.02, max_sparsity: float = 0.99,
                    modes: tuple[str, ...] = ("unstructured", "channels"), skip: set | None = None) -> tuple | None:
    """Where to measure next to sharpen the estimates most: of the candidate slider positions not measured yet,
    the one whose estimate's error bar is widest beyond the measurements' own (the median half-width of the
    measured facts), while that excess is more than `tolerance` / 2. None when no candidate's is.

    The candidates: the midpoint of every measured segment along a slider line (sparsity at fixed bits and
    scales, or bits, in log2, at fixed sparsity), where interpolation's error bar is widest (half the gap
    between the ends); and every 2-D position crossing a measured pruning level (float weights) with a measured
    width of the unpruned model, where only the additive model answers and its interaction term is largest
    (pruning can change what quantization costs: zeros quantize exactly, and a per-tensor scale sees fewer
    small weights). Sparsity in whole percent, bits whole.
    `skip`: position keys (sparsity, mode, bits, scales; scales 'float' at 32 bits) not to propose."""
    measured = [k for k in known if k.source == "measured"]
    if not measured:
        return None

    def key_of(s: float, mode: str, b: int, g: str) -> tuple:
        return round(s, 4), mode if s > 0 else "unstructured", b, _grain(g, b)

    seen = {key_of(k.sparsity, k.mode, k.bits, k.granularity) for k in measured}
    candidates: dict[tuple, tuple] = {}

    def consider(position: tuple) -> None:
        s, mode, b, g = position
        key = key_of(s, mode, b, g)
        if s <= max_sparsity and key not in seen and key not in (skip or ()):
            candidates.setdefault(key, position)

    lines: dict[tuple, list[Known]] = {}
    for k in measured:
        g = _grain(k.granularity, k.bits)
        for mode in modes:
            if k.mode == mode or k.sparsity == 0:
                lines.setdefault(("row", mode, k.bits, g), []).append(k)
        grains = ("per_channel", "per_tensor") if k.bits >= FLOAT_BITS else (g,)
        for grain in grains:
            lines.setdefault(("col", k.mode if k.sparsity > 0 else "unstructured", round(k.sparsity, 4), grain),
                             []).append(k)
    for (kind, mode, fixed, grain), ks in lines.items():
        if kind == "row":
            xs = sorted({round(k.sparsity, 4) for k in ks})
            for x0, x1 in zip(xs, xs[1:]):
                mid = round((x0 + x1) / 2, 2)
                if x0 < mid < x1:
                    consider((mid, mode, fixed, "per_channel" if grain == "float" else grain))
        else:
            bs = sorted({k.bits for k in ks})
            for b0, b1 in zip(bs, bs[1:]):
                mid = round(2 ** ((_bits_x(b0) + _bits_x(b1)) / 2))
                if b0 < mid < b1:
                    consider((fixed, mode, mid, grain))
    widths = {(k.bits, k.granularity) for k in measured if k.sparsity == 0 and k.bits < FLOAT_BITS}
    for mode in modes:
        for s in sorted({round(k.sparsity, 4) for k in measured if k.sparsity > 0 and k.mode == mode
                         and k.bits >= FLOAT_BITS}):
            for b, g in sorted(widths):
                consider((s, mode, b, g))
    floor = statistics.median(k.half_width for k in measured)
    best: tuple[float, tuple] | None = None
    for position in candidates.values():
        excess = estimate(*position, known).half_width - floor
        if excess > tolerance / 2 and (best is None or excess > best[0]):
            best = (excess, position)
    return None if best is None else best[1]


def sensitivity_prior(baseline: float, drops: dict[str, dict[int, float]], bits: int,
                      per_layer_samples: int) -> Known | None:
    """The unpruned model's accuracy at `bits` as the baseline less the sum of the per-layer drops measured at
    those bits (each layer quantized alone): a first guess for the quantization curve before it is measured,
    its half-width half the summed drop plus the measurement's."""
    per_bits = [d[bits] for d in drops.values() if bits in d]
    if not per_bits or len(per_bits) < len(drops):
        return None
    total = sum(max(0.0, d) for d in per_bits)
    accuracy = max(0.0, baseline - total)
    return Known(0.0, "unstructured", bits, "per_channel", accuracy,
                 0.5 * total + wilson_half_width(baseline, per_layer_samples), per_layer_samples, "sensitivity")
