"""Breakpoint detection: where further compression starts to cost accuracy steeply.

Seed 002 (Malihi & Heidemann 2023, "Efficient and Controllable Model Compression through Sequential
Knowledge Distillation and Pruning") plots accuracy against remaining parameters and calls the
breakpoint "a critical threshold where further compression leads to a more rapid decrease in
accuracy relative to the reduction in model size". Three detectors find it on one curve:

- `kneedle`: Kneedle (Satopää et al. 2011, "Finding a 'Kneedle' in a Haystack"), through the
  `kneed` package;
- `slope_ratio`: the first point after which accuracy lost per unit of x removed exceeds k times
  the rate up to it (seed 002's definition, made a rule);
- `tolerance`: the most compressed point whose mean accuracy is within delta of the reference.

A curve is given in order of compression: the uncompressed reference first, then each level more
compressed than the one before; x (remaining parameters, size, bits, latency or the level itself)
must change steadily along it, in either direction. Detectors work on the mean accuracy at each
point and report the spread; every one returns a `BreakpointResult` that says why when there is no
breakpoint (too short, flat, rising, x not monotone). In all three the breakpoint is the last point
before the fall: the most compressed model worth keeping.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.core.config import Config, param
from engine.core.errors import ConfigError, UserError
from engine.core.registry import Registry

# --x name -> the point field it reads, and how an axis is labelled
X_FIELDS = {"params": "params_nonzero", "size": "size_bytes", "bits": "bits", "latency": "latency_ms_b1",
            "level": "level"}
X_LABELS = {"params": "remaining parameters", "size": "size in bytes", "bits": "bits per weight",
            "latency": "latency in ms (batch 1)", "level": "level"}
# level names whose lower values are the more compressed models (for the others, higher is)
LOWER_LEVEL_COMPRESSES = {"bits", "average_bits"}
HIGHER_LEVEL_COMPRESSES = {"sparsity", "channel_ratio", "ratio", "iteration"}


# ---------------------------------------------------------------- the axis


LOG_X_RATIO = 20.0  # the widest x over the narrowest at which a linear axis squeezes the small ones together
LOG_X_CROWD = 0.05  # ... when this share of the range holds ...
LOG_X_SHARE = 0.25  # ... at least this share of the points


def suggest_log_x(values: Sequence[float | None]) -> bool:
    """Whether x reads better on a log axis: every x is positive and they spread over at least LOG_X_RATIO
    times, with at least LOG_X_SHARE of them crowded in the lowest LOG_X_CROWD of the range (pruned
    students near zero parameters beside a teacher's millions). One scale or a point at x <= 0: linear."""
    xs = np.asarray([v for v in values if v is not None], dtype=float)
    xs = xs[np.isfinite(xs)]
    if xs.size < 3 or (xs <= 0).any():
        return False
    lo, hi = float(xs.min()), float(xs.max())
    if hi / lo < LOG_X_RATIO:
        return False
    crowded = xs <= lo + LOG_X_CROWD * (hi - lo)
    return bool(crowded.mean() >= LOG_X_SHARE)


# ---------------------------------------------------------------- the curve


@dataclass
class Curve:
    """Accuracy against x, in order of compression (index 0: the uncompressed reference)."""

    x: list[float]
    mean: list[float]  # mean accuracy at each point
    std: list[float] = field(default_factory=list)  # spread over repeats at each point (0 when one run)
    x_name: str = "x"  # params | size | bits | latency | level (or anything, for arrays)
    x_label: str = ""  # the axis title
    levels: list[float | None] = field(default_factory=list)  # the swept knob at each point
    level_name: str = ""
    params: list[float] = field(default_factory=list)  # remaining parameters at each point (for table3)
    # a point scored on a seeded test subset: the 95 % interval of its accuracy and the images it was scored on
    # (NaN at a point measured on the whole split; all empty when no point was scored on a subset)
    lo: list[float] = field(default_factory=list)
    hi: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.x = [float(v) for v in self.x]
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std] if len(self.std) else [0.0] * len(self.mean)
        for name in ("params", "lo", "hi", "samples"):
            setattr(self, name, [float(v) for v in getattr(self, name)])
        self.levels = [None if v is None else float(v) for v in self.levels]
        for name in ("std", "levels", "params", "lo", "hi", "samples"):
            if getattr(self, name) and len(getattr(self, name)) != len(self.mean):
                raise ValueError(f"{name} must have one value per point ({len(self.mean)}), got "
                                 f"{len(getattr(self, name))}")
        if len(self.x) != len(self.mean):
            raise ValueError(f"x and mean must have the same length, got {len(self.x)} and {len(self.mean)}")
        if not self.params and self.x_name == "params":
            self.params = list(self.x)
        self.x_label = self.x_label or X_LABELS.get(self.x_name, self.x_name)

    def __len__(self) -> int:
        return len(self.mean)

    def subset_bars(self) -> tuple[list[float], list[float], list[str]]:
        """The error bar below and above each point's accuracy, and its words: the 95 % interval where it was
        scored on a test subset, NaN and '' where it was measured on the whole split (no bar)."""
        n = len(self)
        if not self.lo:
            return [math.nan] * n, [math.nan] * n, [""] * n
        minus = [m - lo for m, lo in zip(self.mean, self.lo, strict=True)]
        plus = [hi - m for m, hi in zip(self.mean, self.hi, strict=True)]
        words = [f"subset of {k:,.0f} images, 95 % interval {lo:.4f}–{hi:.4f}" if math.isfinite(lo) else ""
                 for lo, hi, k in zip(self.lo, self.hi, self.samples, strict=True)]
        return minus, plus, words

    def to_dict(self) -> dict[str, Any]:
        return {"x": _floats(self.x), "mean": _floats(self.mean), "std": _floats(self.std), "x_name": self.x_name,
                "x_label": self.x_label, "levels": _floats(self.levels), "level_name": self.level_name,
                "params": _floats(self.params), "lo": _floats(self.lo), "hi": _floats(self.hi),
                "samples": _floats(self.samples)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Curve:
        numbers = ("x", "mean", "std", "params", "lo", "hi", "samples")
        return cls(**{k: _nan_for_none(v) if k in numbers else v for k, v in d.items()})


def curve_from_points(points: Sequence[dict], x: str = "params") -> Curve:
    """A run's points (engine.core.point dicts, as `Store.run_points` returns them) as one curve.

    Points are grouped by `level`: the mean accuracy, and the spread: `accuracy_std` where one
    point stands for the level, else the spread over the repeats (or points) at that level. The
    uncompressed reference is the baseline-stage point, else the least compressed level. x is the
    remaining parameters (params_nonzero) by default, or size_bytes, bits, latency_ms_b1 or the
    level itself; levels are ordered by compression, whichever way x runs. A level that is one point scored
    on a test subset (`eval_subset`) carries that score's 95 % interval (`lo`, `hi`) and its images (`samples`).
    """
    if x not in X_FIELDS:
        raise UserError(f"x must be one of {', '.join(X_FIELDS)}; got {x!r}")
    if any(p.get("layer") is not None for p in points):
        raise UserError("these are per-layer sensitivity points (each level holds one point per layer), not one "
                        "curve; run breakpoint on a sweep (prune or quantize over levels)")
    baseline = [p for p in points if p.get("stage") == "baseline"]
    groups: dict[float | None, list[dict]] = {}
    for p in points:
        if p.get("level") is not None:
            groups.setdefault(float(p["level"]), []).append(p)
    loose_baseline = [p for p in baseline if p.get("level") is None]
    level_name = next((p.get("level_name") for p in points if p.get("level") is not None and p.get("level_name")), "")
    order = sorted(groups, reverse=not _higher_level_compresses(level_name, groups))  # least compressed first
    base_levels = [float(p["level"]) for p in baseline if p.get("level") is not None]
    if base_levels and base_levels[0] in order:  # the baseline's level is the reference, whatever its value
        order.remove(base_levels[0])
        order.insert(0, base_levels[0])
    ordered: list[tuple[float | None, list[dict]]] = [(level, groups[level]) for level in order]
    if loose_baseline and x != "level":
        ordered.insert(0, (None, loose_baseline))
    if not ordered:
        raise UserError("the run has no points with a level: nothing to draw a curve from (is it a sweep?)")
    field_name = X_FIELDS[x]
    xs, means, stds, params, intervals = [], [], [], [], []
    for level, group in ordered:
        intervals.append(_subset_interval(group))
        if field_name == "level":
            xs.append(level)
        else:
            values = [p.get(field_name) for p in group]
            if any(v is None for v in values):
                where = "the reference" if level is None else f"{level_name or 'level'} {level:g}"
                raise UserError(f"{field_name} was not measured at {where} (e.g. a run without latency); "
                                f"choose another --x: {', '.join(X_FIELDS)}")
            xs.append(statistics.fmean(values))
        means.append(statistics.fmean(p["accuracy"] for p in group))
        stds.append(_spread(group))
        nonzero = [p.get("params_nonzero") for p in group]
        params.append(statistics.fmean(nonzero) if all(v is not None for v in nonzero) else math.nan)
    lo, hi, samples = ([list(v) for v in zip(*intervals, strict=True)]
                       if any(math.isfinite(i[0]) for i in intervals) else ([], [], []))
    return Curve(x=xs, mean=means, std=stds, x_name=x, x_label=level_name if x == "level" else "",
                 levels=[level for level, _ in ordered], level_name=level_name, params=params, lo=lo, hi=hi,
                 samples=samples)


def _subset_interval(group: list[dict]) -> tuple[float, float, float]:
    """(lo, hi, images) of a level that is one point scored on a test subset; NaNs for any other."""
    p = group[0]
    if len(group) == 1 and p.get("eval_subset") and p.get("accuracy_lo") is not None and p.get("accuracy_hi") is not None:
        return float(p["accuracy_lo"]), float(p["accuracy_hi"]), float(p.get("eval_samples") or math.nan)
    return math.nan, math.nan, math.nan


def _higher_level_compresses(level_name: str, groups: dict[float, list[dict]]) -> bool:
    if level_name in LOWER_LEVEL_COMPRESSES:
        return False
    if level_name in HIGHER_LEVEL_COMPRESSES or len(groups) < 2:
        return True
    # an unknown knob: the end whose models are smaller is the compressed one
    lo, hi = min(groups), max(groups)
    size = {k: statistics.fmean(p.get("size_bytes") or 0 for p in groups[k]) for k in (lo, hi)}
    return size[hi] <= size[lo]


def _spread(group: list[dict]) -> float:
    if len(group) == 1 and group[0].get("accuracy_std") is not None:
        return float(group[0]["accuracy_std"])
    runs = [p.get("accuracy_runs") for p in group]
    values = [a for r in runs for a in r] if all(runs) else [p["accuracy"] for p in group]
    return statistics.stdev(values) if len(values) > 1 else 0.0


# ---------------------------------------------------------------- results


@dataclass
class BreakpointResult:
    """One detector's answer on one curve, with the detection curve it used (for a figure that
    draws it under the accuracy curve on the same x axis)."""

    detector: str
    found: bool
    reason: str  # why there is (or is no) breakpoint, in a sentence
    x: float | None = None  # the breakpoint's x
    index: int | None = None  # its position in the curve (0: the reference)
    level: float | None = None  # its level, when the curve came from a run
    accuracy: float | None = None  # mean accuracy there
    accuracy_std: float | None = None  # and its spread
    detection_x: list[float] = field(default_factory=list)  # the curve's x, shared with the accuracy curve
    detection_y: list[float] = field(default_factory=list)  # the detector's quantity at each x (NaN: undefined)
    detection_name: str = ""  # what detection_y is: normalised difference, slope ratio, gap to the tolerance
    threshold: float | None = None  # the line detection_y is compared with (None: none)
    params: dict = field(default_factory=dict)  # the detector's settings

    def to_dict(self) -> dict[str, Any]:
        """Plain values for strict JSON: NaN in the detection curve becomes None."""
        return {"detector": self.detector, "found": self.found, "reason": self.reason, "x": _float(self.x),
                "index": self.index, "level": _float(self.level), "accuracy": _float(self.accuracy),
                "accuracy_std": _float(self.accuracy_std), "detection_x": _floats(self.detection_x),
                "detection_y": _floats(self.detection_y), "detection_name": self.detection_name,
                "threshold": _float(self.threshold), "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BreakpointResult:
        d = dict(d)
        for name in ("detection_x", "detection_y"):
            d[name] = _nan_for_none(d.get(name) or [])
        return cls(**d)


def _float(v: Any) -> float | None:
    """A plain float, or None for a missing or non-finite value (strict JSON has no NaN)."""
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _floats(values: Sequence[Any]) -> list[float | None]:
    return [_float(v) for v in values]


def _nan_for_none(values: Sequence[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


# ---------------------------------------------------------------- detectors


@dataclass(frozen=True)
class Detector:
    name: str
    config: type[Config]
    find: Callable[[Curve, Any], BreakpointResult]
    description: str
    detection_name: str  # what its detection curve is
    least: int  # the fewest points it can judge


DETECTORS: Registry[Detector] = Registry("breakpoint detector")


def register_detector(name: str, config: type[Config], description: str, detection_name: str, least: int = 3):
    def add(find: Callable[[Curve, Any], BreakpointResult]) -> Callable[[Curve, Any], BreakpointResult]:
        DETECTORS.register(name)(Detector(name, config, find, description, detection_name, least))
        return find

    return add


def detect(curve: Curve, detector: str = "kneedle", config: Config | dict | None = None) -> BreakpointResult:
    """Runs one registered detector on a curve; `config` is its config, a dict of its fields, or None
    for the defaults. A curve it cannot judge gives found=False and the reason."""
    d = DETECTORS.get(detector)
    if isinstance(config, Config) and not isinstance(config, d.config):
        raise ConfigError(f"the {detector} detector takes a {d.config.__name__}, got a {type(config).__name__}")
    cfg = config if isinstance(config, d.config) else d.config.from_dict(dict(config or {}))
    problem = _unusable(curve, d.least)
    if problem:
        return BreakpointResult(detector, False, problem, detection_x=list(curve.x),
                                detection_y=[math.nan] * len(curve), detection_name=d.detection_name,
                                params=cfg.to_dict())
    result = d.find(curve, cfg)
    if result.index is not None:
        i = result.index
        result.x, result.accuracy, result.accuracy_std = curve.x[i], curve.mean[i], curve.std[i]
        result.level = curve.levels[i] if curve.levels else None
    result.detection_x = list(curve.x)
    result.detection_name = d.detection_name
    result.params = cfg.to_dict()
    return result


def detect_all(curve: Curve, configs: dict[str, Config | dict] | None = None) -> list[BreakpointResult]:
    """Every registered detector on the curve (`configs`: settings by detector name)."""
    configs = configs or {}
    return [detect(curve, name, configs.get(name)) for name in DETECTORS.names()]


def breakpoint_of(x: Sequence[float], mean: Sequence[float], std: Sequence[float] | None = None,
                  detector: str = "kneedle", config: Config | dict | None = None) -> BreakpointResult:
    """`detect` on plain arrays given in order of compression (the reference first)."""
    return detect(Curve(list(x), list(mean), list(std) if std is not None else []), detector, config)


def _unusable(curve: Curve, least: int) -> str:
    """Why a curve cannot be judged at all ('' when it can)."""
    n = len(curve)
    if n < least:
        return (f"too short: {n} point{'s' if n != 1 else ''}; this detector needs at least {least} (the "
                f"reference and {least - 1} compressed level{'s' if least > 2 else ''})")
    bad = [i for i in range(n) if not (math.isfinite(curve.x[i]) and math.isfinite(curve.mean[i]))]
    if bad:
        return f"point {bad[0]} has no {curve.x_label} or no accuracy; every point needs both"
    steps = np.diff(curve.x)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        i = int(np.flatnonzero(np.sign(steps) != np.sign(steps[0]))[0]) if steps[0] != 0 else 0
        change = (f"{curve.x[i]:g} at points {i} and {i + 1}" if curve.x[i] == curve.x[i + 1] else
                  f"{curve.x[i]:g} -> {curve.x[i + 1]:g} from point {i} to {i + 1}")
        return (f"{curve.x_label} does not change steadily with compression ({change}); choose another x "
                f"such as params")
    return ""


def _never_falls(curve: Curve, min_drop: float) -> str:
    """The reason when accuracy never falls min_drop below the reference ('' when it does)."""
    mean = np.asarray(curve.mean)
    loss = mean[0] - mean[1:]
    worst = int(np.argmax(loss)) + 1
    if loss[worst - 1] >= min_drop:
        return ""
    shape = "rises" if mean[-1] > mean[0] + min_drop else "stays flat"
    return (f"no breakpoint: accuracy {shape} (it never falls {min_drop:g} below the reference "
            f"{mean[0]:.4f}; the largest loss is {max(loss[worst - 1], 0):.4f}), so any breakpoint lies beyond the "
            f"most compressed point measured ({curve.x_label} {curve.x[-1]:g})")


@dataclass
class KneedleConfig(Config):
    # kneed's shape words apply to the curve as it is handed over: x grows towards the uncompressed
    # model (remaining parameters as they are; a sparsity axis mirrored), so accuracy rises with x and
    # levels off, a concave increasing curve whose knee is where the fall begins
    curve: str = param("concave", "Kneedle's curve shape, with x growing towards the uncompressed model",
                       choices=("concave", "convex"))
    direction: str = param("increasing", "Kneedle's direction, with x growing towards the uncompressed model",
                           choices=("increasing", "decreasing"))
    sensitivity: float = param(1.0, "Kneedle's S: how far the difference curve must fall after a maximum "
                               "(1 as the paper suggests; larger is more conservative)", lo=0, hi=100)
    online: bool = param(False, "with several knees, take the last Kneedle meets going from the most "
                         "compressed point towards the reference (the first fall), not the first it meets")
    min_drop: float = param(0.01, "the least accuracy loss that counts as a fall (0.01: one point); a curve that "
                            "never falls this far below the reference has no breakpoint", lo=0, hi=1)


@register_detector("kneedle", KneedleConfig, "Kneedle's knee of the accuracy curve (the kneed package)",
                   "normalised difference")
def kneedle(curve: Curve, cfg: KneedleConfig) -> BreakpointResult:
    """Kneedle (Satopää et al. 2011) via kneed.KneeLocator on the mean accuracy."""
    from kneed import KneeLocator

    flat = _never_falls(curve, cfg.min_drop)
    n = len(curve)
    if flat:
        return BreakpointResult("kneedle", False, flat, detection_y=[math.nan] * n)
    # kneed wants ascending x; hand it the curve from the most compressed end, x growing to the reference
    sign = 1.0 if curve.x[0] > curve.x[-1] else -1.0
    xk = (sign * np.asarray(curve.x))[::-1]
    yk = np.asarray(curve.mean)[::-1]
    # every knee kneed meets on its way (online), so a knee with no fall after it can be passed over
    kl = KneeLocator(xk, yk, S=cfg.sensitivity, curve=cfg.curve, direction=cfg.direction, online=True)
    # kneed mirrors these two shapes, so its difference curve and maxima are indexed from the other end
    mirrored = (cfg.direction, cfg.curve) in (("decreasing", "concave"), ("increasing", "convex"))
    difference = np.asarray(kl.y_difference, dtype=float)
    detection = [float(v) for v in (difference if mirrored else difference[::-1])]  # in compression order
    mean = np.asarray(curve.mean)
    knees = [n - 1 - int(np.flatnonzero(xk == knee)[0]) for knee in kl.all_knees]
    # a knee must be followed by a fall: not the most compressed point, nor the foot of a curve that
    # flattens out at chance level (a sigmoid's lower bend, which kneed also meets)
    falls = [i for i in knees if i < n - 1 and mean[i] - mean[i + 1:].min() >= cfg.min_drop]
    if not falls:
        seen = f" (its knees at points {', '.join(map(str, knees))} have no fall after them)" if knees else ""
        return BreakpointResult("kneedle", False, f"no breakpoint: Kneedle finds no knee in this {cfg.direction} "
                                f"{cfg.curve} curve at S={cfg.sensitivity:g}{seen}; try a smaller --sensitivity "
                                f"or another detector", detection_y=detection)
    i = falls[-1] if cfg.online else falls[0]
    peak = np.flatnonzero(kl.maxima_indices == (i if mirrored else n - 1 - i))
    threshold = float(kl.Tmx[peak[0]]) if peak.size else None
    return BreakpointResult("kneedle", True, f"Kneedle's knee: the normalised difference curve peaks here and "
                            f"then falls past its threshold (S={cfg.sensitivity:g})",
                            index=i, detection_y=detection, threshold=threshold)


@dataclass
class SlopeRatioConfig(Config):
    k: float = param(3.0, "how many times steeper than the rate before a point the fall after it must be",
                     lo=1, hi=1000)
    min_drop: float = param(0.01, "the least accuracy loss that counts as a fall (0.01: one point); a curve that "
                            "never falls this far below the reference has no breakpoint", lo=0, hi=1)


@register_detector("slope_ratio", SlopeRatioConfig, "seed 002: the first point after which accuracy lost per unit "
                   "of x removed exceeds k times the rate before it", "slope ratio (after / before)")
def slope_ratio(curve: Curve, cfg: SlopeRatioConfig) -> BreakpointResult:
    """The first compressed point i whose next step loses accuracy at k times the rate from the reference
    to i, after which every point stays at least min_drop below it (a dip that recovers is noise).

    The rate before is floored at "min_drop over the whole x range", so a flat (or rising, noisy) start
    counts as slow rather than making every later drop infinitely steep.
    """
    n = len(curve)
    flat = _never_falls(curve, cfg.min_drop)
    x, mean = np.asarray(curve.x), np.asarray(curve.mean)
    removed = np.abs(x - x[0])  # how much x the compression took away, growing along the curve
    floor = cfg.min_drop / removed[-1]
    ratio = np.full(n, math.nan)
    found = None
    for i in range(1, n - 1):  # the reference has no rate before it
        drop = mean[i] - mean[i + 1]
        after = drop / (removed[i + 1] - removed[i])
        before = (mean[0] - mean[i]) / removed[i]
        ratio[i] = after / max(before, floor)
        lasting = mean[i] - mean[i + 1:].max() >= cfg.min_drop  # every later point stays min_drop below
        if found is None and not flat and ratio[i] >= cfg.k and lasting:
            found = i
    detection = [float(v) for v in ratio]
    if flat:
        return BreakpointResult("slope_ratio", False, flat, detection_y=detection, threshold=cfg.k)
    if found is None:
        return BreakpointResult("slope_ratio", False, f"no breakpoint: accuracy falls, but no step after the first loses "
                                f"at {cfg.k:g} times the rate before it and stays {cfg.min_drop:g} or more down "
                                f"(largest ratio {np.nanmax(ratio):.2f}); the loss is gradual", detection_y=detection,
                                threshold=cfg.k)
    return BreakpointResult("slope_ratio", True, f"the next step loses {mean[found] - mean[found + 1]:.4f} accuracy "
                            f"at {ratio[found]:.1f} times the rate before it (k={cfg.k:g})", index=found,
                            detection_y=detection, threshold=cfg.k)


@dataclass
class ToleranceConfig(Config):
    delta: float = param(0.01, "how much accuracy below the reference is tolerated (0.01: one point)", lo=0, hi=1)
    whole_spread: bool = param(False, "require mean minus spread (not only the mean) to stay within delta")


@register_detector("tolerance", ToleranceConfig, "the most compressed point whose accuracy is within delta of the "
                   "uncompressed model", "gap to the tolerance", least=2)
def tolerance(curve: Curve, cfg: ToleranceConfig) -> BreakpointResult:
    """The most compressed point within delta; the detection curve is how far each point stays above
    reference - delta (negative: outside the tolerance)."""
    mean, std = np.asarray(curve.mean), np.asarray(curve.std)
    low = mean - std if cfg.whole_spread else mean
    gap = low - (mean[0] - cfg.delta)
    detection = [float(v) for v in gap]
    what = "mean minus spread" if cfg.whole_spread else "mean accuracy"
    inside = np.flatnonzero(gap[1:] >= 0) + 1
    if inside.size == len(curve) - 1:
        return BreakpointResult("tolerance", False, f"no breakpoint: every point's {what} stays within {cfg.delta:g} "
                                f"of the reference {mean[0]:.4f}, so it lies beyond the most compressed point "
                                f"measured ({curve.x_label} {curve.x[-1]:g})", detection_y=detection, threshold=0.0)
    if not inside.size:
        return BreakpointResult("tolerance", False, f"no breakpoint: every compressed point's {what} falls more than "
                                f"{cfg.delta:g} below the reference {mean[0]:.4f} (the first by "
                                f"{-gap[1] + cfg.delta:.4f}); measure milder levels", detection_y=detection,
                                threshold=0.0)
    i = int(inside[-1])
    return BreakpointResult("tolerance", True, f"the most compressed point whose {what} is within {cfg.delta:g} "
                            f"of the reference {mean[0]:.4f}", index=i, detection_y=detection, threshold=0.0)


def reported_levels(points: Sequence[dict], x: str = "params") -> list[float]:
    """The levels a sweep reports as its breakpoints: every registered detector at its defaults on the curve
    against `x` (what `python -m engine breakpoint` and the Breakpoints page show first), each level once, in
    order of compression. A sweep that evaluated its levels on a subset measures these again on the whole
    split (engine.methods.prune.sweep, which the run layer hands this function to)."""
    try:
        curve = curve_from_points(points, x=x)
    except UserError:
        return []
    levels = [r.level for r in detect_all(curve) if r.found and r.level is not None]
    return sorted(set(levels), key=curve.levels.index)


# ---------------------------------------------------------------- seed 002, Table 3


def table3(curve: Curve, results: Sequence[BreakpointResult] | None = None) -> list[dict[str, Any]]:
    """Seed 002's Table 3 row for this curve, one per detector: accuracy at the uncompressed point
    and at the breakpoint, remaining parameters before pruning and at the breakpoint, the percentage
    decrease ((before - at) / before * 100) and the compression rate (before / at). Values are None
    where there is no breakpoint or the curve has no parameter counts."""
    results = detect_all(curve) if results is None else results
    before = curve.params[0] if curve.params else None
    reference = (curve.mean[0], curve.std[0]) if len(curve) else (None, None)
    rows = []
    for r in results:
        at = curve.params[r.index] if r.found and r.index is not None and curve.params else None
        usable = before is not None and at is not None and math.isfinite(before) and math.isfinite(at) and at > 0
        rows.append({"detector": r.detector, "found": r.found, "accuracy_before": _float(reference[0]),
                     "accuracy_before_std": _float(reference[1]), "params_before": _float(before),
                     "accuracy_at_breakpoint": _float(r.accuracy) if r.found else None,
                     "accuracy_std_at_breakpoint": _float(r.accuracy_std) if r.found else None,
                     "params_at_breakpoint": _float(at) if r.found else None,
                     "percentage_decrease": 100.0 * (before - at) / before if usable else None,
                     "compression_rate": before / at if usable else None,
                     "x": _float(r.x), "level": _float(r.level)})
    return rows
