"""Plan: search for compressed variants the store does not hold yet, under an accuracy, size and latency budget.

The space (one value list per axis, so a grid over it is well defined): a structured channel ratio (L1 filter
norm, `prune.structured`), an unstructured global sparsity (one magnitude threshold, `prune.global_unstructured`),
fine-tuning epochs after pruning (every layer, zeros held, `finetune`) and a uniform weight width (2..8 bits
simulated, 32 = float, `quantize.fake`), applied in that order: prune -> fine-tune -> quantize. Distillation is not
part of the space.

1. **Estimates.** An Optuna multi-objective sampler (NSGA-II or TPE, seeded) proposes candidates; each is scored by
   `Proxy`, the what-if engine's pieces (engine/methods/whatif.py: the same channel cut, global magnitude masks,
   BatchNorm folding and symmetric min-max fake quantization) applied in memory to the baseline and evaluated on a
   fixed seeded subset of the test split, without training. Its size is the deployed storage of that model
   (exact up to fine-tuning, which keeps zeros at zero); its latency, when a latency budget is set, is a brief
   timing of the channel-cut float model (zeros and simulated bits run through the same dense kernels). An
   estimate ignores fine-tuning until a real run measures its effect: the accuracy is then corrected by what the
   confirmed runs at that many epochs recovered (`Calibration`: a share of the estimated drop once a run with a
   real drop was fine-tuned, learned per way of pruning (channels, sparsity, both), else the mean gap). The
   store's own measured variants of the baseline made as the planner makes them (`stored_results`) take the
   proxy's place at their positions, calibrate it like confirmed runs, and are never run again. Every estimate is
   logged to the plan run's metric history (keys `estimate_*`, step = the trial number) and kept in the plan's
   state file, and is labelled an estimate everywhere it shows.
2. **Real runs.** Between rounds of estimates the planner picks the most promising candidate not yet run
   (`pick`): first the one that best meets the budget on its estimate alone, then, alternately, the most
   aggressive one the estimate's error margin leaves possible and the one expected to add the most hypervolume
   to the measured front (`expected_gain`; a fine-tuned candidate whose recovery no run of its kind measured yet
   is averaged over every share it might recover), so the runs spread along the front; never one at least as
   aggressive on every axis as a candidate a real run (or a stored point) already showed breaking the accuracy
   budget. Each is run as a recipe (engine/run/recipes.py) of up to
   four stages, one child run each, so a unit already in the store (the same channel cut of the same checkpoint,
   say) is reused by its key. The real-run budget (`max_runs`) counts candidates that ran at least one new unit.
3. **The answer.** `engine.analysis.recommend.recommend` over the store's points: the best *confirmed*,
   reloadable checkpoint descended from the baseline that meets the budget (an estimate never is).

The plan's state (every trial's estimate and every confirmed candidate) is saved as `plan.json` in its output
folder after each step; running the same plan again (same baseline, space, budget and seed: the same folder by
default) re-adds those trials to the sampler and reuses the confirmed candidates, so a cancelled or finished plan
resumes where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from engine.analysis.recommend import Budget, Recommendation, descendants, recommend
from engine.analysis.tables import Lineage, norm_path, point_records, same_checkpoint
from engine.analysis.tradeoffs import pareto_front
from engine.core.config import Config, check_range, param
from engine.core.context import RunContext
from engine.core.errors import Cancelled, ConfigError, UserError
from engine.core.point import Point
from engine.core.progress import Progress
from engine.deploy import qmaths as maths
from engine.deploy import timing
from engine.deploy.measure import measure_latency, prunable_weights, storage
from engine.deploy.quantized import fold_batchnorm
from engine.methods.prune.masks import apply_masks
from engine.methods.tasks import open_checkpoint, register_task
from engine.methods.whatif import channel_cut, eval_indices, magnitude_ranking, quantize_weights
from engine.model.checkpoint import read_meta
from engine.model.data import DEFAULT_ROOT
from engine.model.outputs import CHECKPOINT_ROOT, safe_name
from engine.model.train import scores
from engine.run.executors import make_executor
from engine.run.jobs import StoreContext
from engine.run.recipes import Recipe, UnitResult, run_recipe

PLAN_TASK = "plan"
STATE_FILE = "plan.json"
STATE_VERSION = 1
SAMPLERS = ("nsga2", "tpe")
AXES = ("channel_ratio", "sparsity", "finetune_epochs", "bits")  # the order the steps apply in
GRANULARITY = "per_channel"  # the quantizer of both the estimate and the real run: symmetric min-max per channel
# a brief timing of a channel cut, on a machine other processes may share, is trusted to within this factor when
# choosing what to run (a real run's own timing then decides)
LATENCY_SLACK = 1.3
RECOVERY_MIN_DROP = 2.0  # points an estimate must drop before its confirmed run says what fine-tuning recovers
# the front's hypervolume counts accuracy down to this many points under the baseline (or twice the budget's drop)
FRONT_DEPTH_POINTS = 10.0
RECOVERY_STEPS = 10  # shares a fine-tuning's unknown recovery is averaged over when choosing what to run


# ---------------------------------------------------------------- the task's config


@dataclass
class PlanTask(Config):
    checkpoint: str = param("", "the float baseline checkpoint to compress (required)", role="input")
    max_drop: float = param(1.0, "accuracy points you accept to lose against the baseline (1 = one point)",
                            lo=0, hi=100)
    max_size_bytes: float | None = param(None, "at most this size as deployed, in bytes", lo=0, lo_open=True)
    min_smaller: float | None = param(None, "at least this many times smaller than the baseline", lo=0, lo_open=True)
    max_latency_ms: float | None = param(None, "at most this batch-1 latency on this machine (ms)", lo=0,
                                         lo_open=True)
    min_faster: float | None = param(None, "at least this many times faster than the baseline at batch 1", lo=0,
                                     lo_open=True)
    max_runs: int = param(6, "real runs (candidates trained and measured) the plan may spend", lo=1, hi=10_000)
    trials: int = param(60, "candidates the sampler proposes and the proxy estimates", lo=1, hi=100_000)
    sampler: str = param("nsga2", "Optuna's multi-objective sampler: nsga2 or tpe", choices=SAMPLERS)
    seed: int = param(0, "seeds the sampler and the estimate's evaluation subset", lo=0, hi=2**32 - 1)
    eval_samples: int = param(500, "test images each estimate is scored on (a fixed seeded subset)", lo=10,
                              hi=1_000_000)
    channel_ratios: tuple[float, ...] = param((0.0, 0.25, 0.5), "structured channel ratios to search")
    sparsities: tuple[float, ...] = param((0.0, 0.5, 0.7, 0.9), "global unstructured sparsities to search")
    bits: tuple[int, ...] = param((2, 3, 4, 6, 8, 32), "weight widths to search (2..8 simulated; 32 = float)")
    finetune_epochs: tuple[int, ...] = param((0, 1), "fine-tuning epochs after pruning to search (0 = none)")
    finetune_lr: float = param(0.01, "fine-tuning learning rate", lo=0, hi=10, lo_open=True)
    finetune_samples: int | None = param(None, "fine-tune on this many training images (default all)", lo=1,
                                         hi=10**9)
    out: str = param("", "the plan's folder: its state file and every unit's checkpoint (default "
                         "checkpoints/plans/<model>-<dataset>-<plan key>)", role="output")
    overwrite: bool = param(False, "kept for recipes, which set it on every unit: a plan's folder is always resumed, "
                                   "never replaced", role="output", cli=False)
    data_root: str = param(DEFAULT_ROOT, "where torchvision datasets live", role="machine")
    latency: bool | None = param(None, "time the real runs (default: only when a latency budget is set)",
                                 role="runner")

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint must name the baseline checkpoint directory")
        for name, values, lo, hi in (("channel_ratios", self.channel_ratios, 0.0, 0.95),
                                     ("sparsities", self.sparsities, 0.0, 0.99),
                                     ("finetune_epochs", self.finetune_epochs, 0, 1000)):
            if not values:
                raise ConfigError(f"{name} must list at least one value")
            for v in values:
                check_range(name, v, lo, hi)
        if not self.bits:
            raise ConfigError("bits must list at least one width")
        for b in self.bits:
            if not (maths.MIN_BITS <= b <= 8 or b == maths.FLOAT_BITS):
                raise ConfigError(f"bits must each be in [{maths.MIN_BITS}, 8] or 32 (float), got {b}")
        self.budget()  # the budget's own checks

    def budget(self) -> Budget:
        return Budget(max_drop=self.max_drop, max_size_bytes=self.max_size_bytes, min_smaller=self.min_smaller,
                      max_latency_ms=self.max_latency_ms, min_faster=self.min_faster)

    @property
    def timed(self) -> bool:
        return self.max_latency_ms is not None or self.min_faster is not None

    def times_runs(self) -> bool:
        return self.timed if self.latency is None else self.latency

    def space(self) -> dict[str, list]:
        """Each axis's values, in AXES order, deduplicated and sorted."""
        return {"channel_ratio": sorted({float(v) for v in self.channel_ratios}),
                "sparsity": sorted({float(v) for v in self.sparsities}),
                "finetune_epochs": sorted({int(v) for v in self.finetune_epochs}),
                "bits": sorted({int(v) for v in self.bits})}

    def key(self) -> str:
        """What makes two plans the same plan (and share a state file): the baseline, the space, the budget, the
        sampler, the seed and the proxy's subset; not the number of trials or runs (a plan may be given more)."""
        doc = {"checkpoint": os.path.realpath(self.checkpoint), "space": self.space(), "budget": self.budget().to_dict(),
               "sampler": self.sampler, "seed": self.seed, "eval_samples": self.eval_samples,
               "finetune": [self.finetune_lr, self.finetune_samples], "latency": self.times_runs()}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def plan_out_dir(cfg: PlanTask, root: str | Path = CHECKPOINT_ROOT) -> str:
    """The plan's folder: its `out`, else <root>/plans/<model>-<dataset>-<first 12 hex of its key> (so a rerun of
    the same plan finds its state)."""
    if cfg.out:
        return cfg.out
    meta = read_meta(cfg.checkpoint)
    return str(Path(root) / "plans" / f"{safe_name(meta.arch)}-{safe_name(meta.dataset.split(':', 1)[0])}-"
                                      f"{cfg.key()[:12]}")


# ---------------------------------------------------------------- a candidate


@dataclass(frozen=True)
class Candidate:
    channel_ratio: float
    sparsity: float
    finetune_epochs: int
    bits: int

    @classmethod
    def normal(cls, channel_ratio: float, sparsity: float, finetune_epochs: int, bits: int) -> Candidate:
        """Fine-tuning only follows pruning: with nothing pruned it is dropped (the baseline was trained already)."""
        pruned = channel_ratio > 0 or sparsity > 0
        return cls(float(channel_ratio), float(sparsity), int(finetune_epochs) if pruned else 0, int(bits))

    @property
    def key(self) -> str:
        return f"c{self.channel_ratio:g}-s{self.sparsity:g}-e{self.finetune_epochs}-b{self.bits}"

    @property
    def identity(self) -> bool:
        """The baseline itself: nothing pruned, float weights."""
        return self.channel_ratio == 0 and self.sparsity == 0 and self.bits >= maths.FLOAT_BITS

    def as_dict(self) -> dict:
        return {a: getattr(self, a) for a in AXES}

    def describe(self) -> str:
        words = []
        if self.channel_ratio:
            words.append(f"{self.channel_ratio:.0%} channels")
        if self.sparsity:
            words.append(f"{self.sparsity:.0%} sparse")
        if self.finetune_epochs:
            words.append(f"fine-tuned {self.finetune_epochs} ep")
        words.append(f"{self.bits}-bit" if self.bits < maths.FLOAT_BITS else "float")
        return ", ".join(words)

    def at_least_as_aggressive(self, other: Candidate) -> bool:
        """Prunes as much or more and keeps as few or fewer bits and epochs on every axis."""
        return (self.channel_ratio >= other.channel_ratio and self.sparsity >= other.sparsity
                and self.bits <= other.bits and self.finetune_epochs <= other.finetune_epochs)


def grid(space: dict[str, list]) -> list[Candidate]:
    """Every distinct candidate of the space but the baseline itself, in a fixed order."""
    seen: dict[str, Candidate] = {}
    for c in space["channel_ratio"]:
        for s in space["sparsity"]:
            for e in space["finetune_epochs"]:
                for b in space["bits"]:
                    cand = Candidate.normal(c, s, e, b)
                    if not cand.identity:
                        seen.setdefault(cand.key, cand)
    return list(seen.values())


def one_axis_candidates(space: dict[str, list]) -> list[Candidate]:
    """Each axis alone at each of its values (pruning with the most fine-tuning): the curves a what-if slider
    draws, which the sampler is seeded with so that no value of the space goes unseen."""
    most, widest = max(space["finetune_epochs"]), max(space["bits"])
    # the sampler's own values (it refuses others); Candidate.normal drops fine-tuning where nothing is pruned
    raw = [Candidate(0.0, 0.0, most, b) for b in space["bits"]]
    raw += [Candidate(0.0, s, most, widest) for s in space["sparsity"]]
    raw += [Candidate(c, 0.0, most, widest) for c in space["channel_ratio"]]
    unique: dict[str, Candidate] = {}
    for c in raw:
        normal = Candidate.normal(*(getattr(c, a) for a in AXES))
        if not normal.identity:
            unique.setdefault(normal.key, c)
    return list(unique.values())


# ---------------------------------------------------------------- the proxy: the what-if engine's pieces


class Proxy:
    """A baseline held in memory to score candidates without training (see the module docstring)."""

    def __init__(self, checkpoint: str, eval_samples: int, seed: int, data_root: str = DEFAULT_ROOT,
                 latency: bool = False) -> None:
        model, meta, data = open_checkpoint(checkpoint, data_root)
        self.arch = meta.arch
        self.original = model.eval()
        x, y = data.test.tensors()
        idx = eval_indices(len(y), eval_samples, seed)
        self.x, self.y = x[idx], y[idx]
        self.samples = len(self.y)
        self.example = x[:1].contiguous()
        self.latency = latency
        self._cuts: dict[float, tuple[nn.Module, float | None]] = {}
        self._memo: dict[tuple, dict] = {}
        self.base = self.score(0.0, 0.0, maths.FLOAT_BITS)

    def _cut(self, ratio: float) -> tuple[nn.Module, float | None]:
        if ratio not in self._cuts:
            model = channel_cut(self.original, ratio, self.example, self.arch) if ratio > 0 else self.original
            lat = None
            if self.latency:
                lat = measure_latency(model, self.example, batch_sizes=(1,), policy=timing.QUICK)["latency_ms_b1"]
            self._cuts[ratio] = (model, lat)
        return self._cuts[ratio]

    def score(self, channel_ratio: float, sparsity: float, bits: int) -> dict:
        """accuracy on the subset, size_bytes as deployed and (when timed) latency_ms_b1 of one position."""
        key = (round(channel_ratio, 4), round(sparsity, 4), int(bits))
        if key in self._memo:
            return self._memo[key]
        started = time.perf_counter()
        cut, lat = self._cut(key[0])
        model = copy.deepcopy(cut).eval()
        with torch.no_grad():
            if sparsity > 0:
                apply_masks(model, magnitude_ranking(model).masks(sparsity))
            groups: dict[str, int] = {}
            if bits < maths.FLOAT_BITS:
                model = fold_batchnorm(model)
                weights = {n: m.weight.detach().clone() for n, m in prunable_weights(model)}
                codes = quantize_weights(model, weights, bits, GRANULARITY)
                groups = {n: c.scale.numel() for n, c in codes.items()}
            logits = model(self.x)
        acc = scores(logits, self.y)["accuracy"]
        size = storage(model, min(int(bits), maths.FLOAT_BITS), groups)["size_bytes"]
        out = {"accuracy": acc, "size_bytes": float(size), "latency_ms_b1": lat,
               "compute_ms": (time.perf_counter() - started) * 1000}
        self._memo[key] = out
        return out

    def half_width(self, accuracy: float) -> float:
        """The 95 % half-width, in points, of an accuracy measured on the subset (normal approximation, at least
        one image's worth)."""
        p = min(max(accuracy, 0.0), 1.0)
        return 100 * max(1.96 * math.sqrt(p * (1 - p) / self.samples), 1 / self.samples)


# ---------------------------------------------------------------- estimates, calibration, the front


@dataclass
class Calibration:
    """What the proxy misses, learned from this plan's confirmed runs, per fine-tuning epoch count.

    The proxy scores a candidate without training, so it cannot see what fine-tuning recovers; and it scores on a
    subset. Two corrections, in points:
    - with fine-tuning (epochs > 0) and a confirmed run whose estimate dropped at least RECOVERY_MIN_DROP points:
      fine-tuning recovers a share of the estimated drop, `share` = the median over those runs (those that pruned
      the same way, `pruning_kind`, when there are any) of (confirmed - estimate) / (baseline - estimate), clipped
      to [0, 1]; an estimate's accuracy is raised by share x its drop. A channel cut the proxy sees at 9 % is then
      credited with what fine-tuning gave a 40 % sparsity estimate until a channel cut of its own is measured,
      rather than with a constant gap measured on a mild candidate;
    - otherwise the mean gap (confirmed - estimate) at that epoch count, as a constant (the subset's bias)."""

    gaps: dict[int, list[float]] = field(default_factory=dict)
    shares: dict[int, list[tuple[str | None, float]]] = field(default_factory=dict)  # epochs -> (kind, share)

    def add(self, epochs: int, gap_points: float, drop_points: float | None = None, kind: str | None = None) -> None:
        """One confirmed run: its gap (confirmed - estimate) and the estimate's drop from the baseline, in points;
        `kind` (`pruning_kind`) says what it pruned."""
        self.gaps.setdefault(int(epochs), []).append(float(gap_points))
        if int(epochs) > 0 and drop_points is not None and drop_points >= RECOVERY_MIN_DROP:
            self.shares.setdefault(int(epochs), []).append((kind, min(1.0, max(0.0, gap_points / drop_points))))

    def share(self, epochs: int, kind: str | None = None) -> float | None:
        """The median share recovered at this many epochs: over runs that pruned the same way (`kind`) when there
        are any (a channel cut recovers differently from a sparsity), else over all."""
        values = self.shares.get(int(epochs), [])
        same = [v for k, v in values if kind is not None and k == kind]
        values = same or [v for _, v in values]
        return statistics.median(values) if values else None

    def measured(self, epochs: int, kind: str) -> bool:
        """Whether a run that pruned this way was fine-tuned this long with a real drop (its share is known)."""
        return any(k == kind for k, _ in self.shares.get(int(epochs), []))

    def shift(self, epochs: int, drop_points: float = 0.0, kind: str | None = None) -> float:
        """Points to add to an estimate `drop_points` below the baseline, at this many fine-tuning epochs."""
        share = self.share(epochs, kind)
        if share is not None:
            return share * max(0.0, drop_points)
        values = self.gaps.get(int(epochs))
        return sum(values) / len(values) if values else 0.0


def pruning_kind(cand: Candidate | dict) -> str:
    """What a candidate prunes, as the calibration tells recoveries apart: channels, sparsity, both or none."""
    c, s = (cand.channel_ratio, cand.sparsity) if isinstance(cand, Candidate) else \
        (cand["channel_ratio"], cand["sparsity"])
    return {(True, True): "both", (True, False): "channels", (False, True): "sparsity"}.get((c > 0, s > 0), "none")


def pareto(rows: list[dict], acc_key: str = "accuracy", size_key: str = "size_bytes") -> list[dict]:
    """The rows no other row beats on both accuracy (higher) and size (smaller), smallest first
    (engine.analysis.tradeoffs.pareto_front decides)."""
    on = pareto_front([r[size_key] for r in rows], [r[acc_key] for r in rows], x_better="min", y_better="max")
    return sorted((r for r, keep in zip(rows, on, strict=True) if keep), key=lambda r: (r[size_key], -r[acc_key]))


def hypervolume(points: list[tuple[float, float]], base_size: float, floor_accuracy: float) -> float:
    """The area (accuracy points x fraction of the baseline's size saved) that a front of (accuracy %, size bytes)
    points dominates, from the reference (floor accuracy, the baseline's size). 2-D, exact."""
    pts = sorted(((s / base_size, a) for a, s in points if a > floor_accuracy and s < base_size))
    area, best = 0.0, floor_accuracy
    # from the smallest size up: the strip up to the next size is as high as the best accuracy so far
    for i, (size, acc) in enumerate(pts):
        best = max(best, acc)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else 1.0
        area += (nxt - size) * (best - floor_accuracy)
    return area


def fits(row: dict, budget: Budget, base: dict, slack_points: float = 0.0, slack_latency: float = 1.0) -> bool:
    """Whether a row (an estimate or a confirmed result: accuracy in %, size_bytes, latency_ms_b1) meets the budget,
    with `slack_points` more accuracy drop and `slack_latency` times more latency allowed. One function, so the
    planner's own check can be switched."""
    if base["accuracy"] - row["accuracy"] > budget.max_drop + slack_points + 1e-9:
        return False
    if budget.max_size_bytes is not None and row["size_bytes"] > budget.max_size_bytes:
        return False
    if budget.min_smaller is not None and base["size_bytes"] / row["size_bytes"] < budget.min_smaller - 1e-9:
        return False
    lat, base_lat = row.get("latency_ms_b1"), base.get("latency_ms_b1")
    lat = None if lat is None else lat / slack_latency
    if budget.max_latency_ms is not None and (lat is None or lat > budget.max_latency_ms):
        return False
    slow = lat is None or not base_lat or base_lat / lat < budget.min_faster - 1e-9 if budget.min_faster else False
    return not slow


def objective_key(row: dict, budget: Budget) -> tuple:
    """Smaller is better: the smallest size (or, with only a latency budget, the lowest latency), then accuracy."""
    if budget.objective == "speed":
        return (row.get("latency_ms_b1") or math.inf, -row["accuracy"])
    return (row["size_bytes"], -row["accuracy"])


# ---------------------------------------------------------------- what the store already measured of the baseline

# the methods of the planner's four steps, in the order they apply (a stored chain in another order, or with any
# other method, is not a position of the space)
STEP_METHODS = ("structured", "global_unstructured", "finetune", "fake")


def stored_results(points: pd.DataFrame, base_id: int, dataset: str, cfg: PlanTask) -> dict[str, dict]:
    """The store's measured points descended from the baseline (the point `base_id`'s artifact) on `dataset` that
    sit at a position of the planner's steps: made by a channel cut, a global magnitude sparsity, a fine-tuning
    like the plan's (every layer, its learning rate and images) and a per-channel fake quantization, each at most
    once and in that order. Keyed by candidate key (the newest point per position); each is shaped like a
    confirmed result, `source` "stored run". A position need not be a value of the space: a stored sweep's level
    between two of its values still says where the accuracy broke."""
    if points.empty:
        return {}
    measured = points[~points["estimate"].fillna(False).astype(bool)] if "estimate" in points else points
    base_rows = measured[measured["point_id"] == base_id]
    if base_rows.empty:
        return {}
    root = norm_path(base_rows.iloc[0]["artifact"])
    rows = measured[descendants(measured, root, dataset) & measured["accuracy"].notna()
                    & measured["size_bytes"].notna()]
    if rows.empty:
        return {}
    lineage = Lineage(measured)
    by_id = {r["point_id"]: r for r in point_records(measured)}
    out: dict[str, dict] = {}
    for r in sorted(point_records(rows), key=lambda r: r["point_id"]):
        steps = [r]
        path = norm_path(r.get("input_checkpoint"))
        while not same_checkpoint(path, root) and len(steps) <= len(STEP_METHODS):
            producer = lineage.producer(path)
            if producer is None:
                break
            steps.append(by_id.get(producer.get("point_id"), producer))
            path = norm_path(producer.get("input_checkpoint"))
        cand = _candidate_of(steps[::-1], cfg) if same_checkpoint(path, root) else None
        if cand is None or cand.identity:
            continue
        lat = r.get("latency_ms_b1")
        out[cand.key] = {"candidate": cand.as_dict(), "status": "finished", "source": "stored run",
                         "accuracy": 100 * float(r["accuracy"]), "size_bytes": float(r["size_bytes"]),
                         "latency_ms_b1": None if lat is None else float(lat), "artifact": r.get("artifact"),
                         "run_id": r.get("run_id"), "point_id": int(r["point_id"]), "ran_units": 0}
    return out


def _candidate_of(steps: list[dict], cfg: PlanTask) -> Candidate | None:
    """The candidate a chain of points (baseline side first) made, or None when the chain is not one of the
    planner's: another method, an order the planner never runs, or a step done otherwise than the plan's."""
    values: dict[str, Any] = {"channel_ratio": 0.0, "sparsity": 0.0, "finetune_epochs": 0, "bits": maths.FLOAT_BITS}
    at = -1
    for p in steps:
        method, params = p.get("method"), p.get("params") or {}
        if method not in STEP_METHODS or STEP_METHODS.index(method) <= at:
            return None
        at = STEP_METHODS.index(method)
        if method == "finetune":
            train = params.get("train") or {}
            if (params.get("mode") != "all" or train.get("lr") != cfg.finetune_lr
                    or params.get("samples") != cfg.finetune_samples or not train.get("epochs")):
                return None
            values["finetune_epochs"] = int(train["epochs"])
            continue
        if p.get("level") is None:
            return None
        if method == "fake":
            if (params.get("granularity", GRANULARITY) != GRANULARITY or params.get("equalize")
                    or params.get("bias_correction")
                    or (params.get("activation_bits") or maths.FLOAT_BITS) < maths.FLOAT_BITS):
                return None
            values["bits"] = int(p["level"])
        else:
            values["channel_ratio" if method == "structured" else "sparsity"] = float(p["level"])
    return Candidate.normal(**values)


# ---------------------------------------------------------------- the state file


@dataclass
class PlanState:
    """What a plan has done so far, saved as JSON in its folder (resume reads it back)."""

    key: str
    baseline: dict = field(default_factory=dict)  # accuracy (%), size_bytes, latency_ms_b1, point_id, proxy accuracy
    trials: list[dict] = field(default_factory=list)  # number, candidate (dict), estimate (raw proxy) per trial
    confirmed: dict[str, dict] = field(default_factory=dict)  # candidate key -> result of its real run
    recommendation: dict | None = None
    status: str = "running"  # running | finished | cancelled
    # candidate key -> a measured point the store held at that position before this plan (stored_results)
    stored: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path, key: str) -> PlanState:
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            return cls(key)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read the plan state {path}: {e}; delete it to start the plan afresh") from None
        if doc.get("version") != STATE_VERSION or doc.get("key") != key:
            raise UserError(f"{path} holds another plan (a different baseline, space, budget or seed); give this plan "
                            f"another out folder")
        return cls(key, doc.get("baseline", {}), doc.get("trials", []), doc.get("confirmed", {}),
                   doc.get("recommendation"), doc.get("status", "running"), doc.get("stored", {}))

    def save(self, folder: str | Path) -> None:
        path = Path(folder) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": STATE_VERSION, "key": self.key, "status": self.status, "baseline": self.baseline,
               "trials": self.trials, "confirmed": self.confirmed, "stored": self.stored,
               "recommendation": self.recommendation}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        tmp.replace(path)  # a reader never sees half a file

    @property
    def runs_spent(self) -> int:
        return sum(1 for r in self.confirmed.values() if r.get("ran_units", 0) > 0)


def read_plan_state(folder: str | Path) -> dict | None:
    """The saved state of the plan in `folder` as plain values (for the page), or None when there is none yet."""
    path = Path(folder) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def estimate_rows(state: PlanState | dict, calibration: Calibration | None = None) -> list[dict]:
    """One row per distinct candidate estimated: its axes, the raw proxy numbers, and the estimate (accuracy in %,
    labelled `estimate`): where the store held a measured point at that position before the plan (`stored`), its
    accuracy and size (`basis` "stored run"), else the proxy's, calibrated (`basis` "proxy"). `confirmed` says
    whether this plan's real run measured it."""
    trials = state.trials if isinstance(state, PlanState) else state.get("trials", [])
    confirmed = state.confirmed if isinstance(state, PlanState) else state.get("confirmed", {})
    stored = state.stored if isinstance(state, PlanState) else state.get("stored", {})
    base = state.baseline if isinstance(state, PlanState) else state.get("baseline", {})
    calibration = calibration or calibration_of(confirmed, base, stored)
    rows: dict[str, dict] = {}
    for t in trials:
        cand = Candidate(**t["candidate"])
        if cand.key in rows or cand.identity:
            continue
        est = t["estimate"]
        drop = 100 * (base["proxy_accuracy"] - est["accuracy"])
        kind = pruning_kind(cand)
        row = {"key": cand.key, **cand.as_dict(), "trial": t["number"], "label": "estimate", "basis": "proxy",
               "accuracy": base["accuracy"] - drop + calibration.shift(cand.finetune_epochs, drop, kind),
               "proxy_accuracy": 100 * est["accuracy"], "proxy_drop": drop,
               # fine-tuned, but no run that pruned this way has measured what fine-tuning recovers yet
               "recovery_unknown": cand.finetune_epochs > 0 and not calibration.measured(cand.finetune_epochs, kind),
               "size_bytes": est["size_bytes"],
               "latency_ms_b1": _on_base_clock(est.get("latency_ms_b1"), base),
               "confirmed": cand.key in confirmed, "stored": cand.key in stored}
        known = stored.get(cand.key)
        if known is not None:  # a measured point at this very position beats the training-free proxy
            row.update(basis="stored run", accuracy=known["accuracy"], size_bytes=known["size_bytes"],
                       latency_ms_b1=known.get("latency_ms_b1") or row["latency_ms_b1"])
        rows[cand.key] = row
    return list(rows.values())


def _on_base_clock(latency: float | None, base: dict) -> float | None:
    """A proxy timing scaled by the baseline's stored latency over the proxy's own timing of it, so that an
    estimate and the baseline compare on one clock."""
    if latency is None or not base.get("proxy_latency_ms_b1") or not base.get("latency_ms_b1"):
        return latency
    return latency * base["latency_ms_b1"] / base["proxy_latency_ms_b1"]


def confirmed_rows(state: PlanState | dict) -> list[dict]:
    """One row per candidate a real run measured (finished), labelled `confirmed`: its axes, accuracy (%), size,
    latency, artifact and the estimate shown before it ran."""
    confirmed = state.confirmed if isinstance(state, PlanState) else state.get("confirmed", {})
    return [{"key": key, **r["candidate"], "label": "confirmed", "accuracy": r["accuracy"],
             "size_bytes": r["size_bytes"], "latency_ms_b1": r.get("latency_ms_b1"), "artifact": r.get("artifact"),
             "estimate_accuracy": r.get("shown_estimate"), "run_id": r.get("run_id"), "why": r.get("why", "")}
            for key, r in confirmed.items() if r.get("status") == "finished"]


def plan_folder_of(config: dict) -> str:
    """The folder of a stored plan run, from its recorded config."""
    return plan_out_dir(PlanTask.from_dict(config))


def calibration_of(confirmed: dict[str, dict], base: dict | None = None,
                   stored: dict[str, dict] | None = None) -> Calibration:
    """The calibration from the confirmed runs and the store's points at positions of the plan (`stored`: each with
    the uncalibrated estimate the proxy gives its position); `base` (the plan's baseline row) gives each estimate's
    drop, without it only the constant gaps are learned."""
    cal = Calibration()
    for r in [*confirmed.values(), *(stored or {}).values()]:
        if r.get("status") == "finished" and r.get("estimate_accuracy") is not None:
            drop = base["accuracy"] - r["estimate_accuracy"] if base else None
            cal.add(r["candidate"]["finetune_epochs"], r["accuracy"] - r["estimate_accuracy"], drop,
                    pruning_kind(r["candidate"]))
    return cal


# ---------------------------------------------------------------- choosing what to run for real


def pick(rows: list[dict], confirmed: dict[str, dict], budget: Budget, base: dict, margin: float,
         turn: int, stored: dict[str, dict] | None = None) -> tuple[dict | None, str]:
    """The next candidate to run for real, and why (see the module docstring). The store's points at positions of
    the plan (`stored`) count as results already measured: never run again, and where one broke the accuracy
    budget (a stored sweep's breakpoint, say) nothing at least as aggressive is run."""
    known = {**(stored or {}), **confirmed}
    failed = [Candidate(**r["candidate"]) for r in known.values()
              if r.get("status") != "finished" or base["accuracy"] - r["accuracy"] > budget.max_drop]
    open_rows = [r for r in rows if not r["confirmed"] and not r.get("stored")
                 and not any(Candidate(**{a: r[a] for a in AXES}).at_least_as_aggressive(f) for f in failed)]
    if not open_rows:
        return None, "no candidate left to run"
    # ties (fine-tuning is invisible to an uncalibrated proxy) go to more fine-tuning, then fewer units to run
    def order(r: dict) -> tuple:
        return (*objective_key(r, budget), -r["finetune_epochs"])

    safe = sorted((r for r in open_rows if fits(r, budget, base)), key=order)
    hopeful = sorted((r for r in open_rows if fits(r, budget, base, margin, LATENCY_SLACK)), key=order)
    confirmed_fit = any(r.get("status") == "finished" and fits(r, budget, base) for r in known.values())
    if not confirmed_fit and safe:
        return safe[0], "the best estimate that meets the budget"
    if turn % 2 == 0 and hopeful:
        return hopeful[0], "the most compressed candidate the estimate's margin leaves possible"
    done = [(d["accuracy"], d["size_bytes"]) for d in known.values() if d.get("status") == "finished"]
    gains = [(g, r) for r in open_rows if (g := expected_gain(r, done, base, budget)) > 1e-12]
    if gains:
        best = max(gains, key=lambda gr: (gr[0], gr[1]["accuracy"]))[1]
        return best, "the candidate expected to add the most to the measured front"
    # nothing is expected above the front's floor: the estimated front's most accurate point nothing measured beats
    front = [r for r in pareto(open_rows)
             if not any(a >= r["accuracy"] and size <= r["size_bytes"] for a, size in done)]
    if front:
        return max(front, key=lambda r: r["accuracy"]), "the estimated front's most accurate point not yet beaten"
    if hopeful:
        return hopeful[0], "the most compressed candidate the estimate's margin leaves possible"
    return None, "no candidate left to run"


def expected_gain(row: dict, done: list[tuple[float, float]], base: dict, budget: Budget) -> float:
    """The hypervolume (accuracy down to FRONT_DEPTH_POINTS, or twice the allowed drop, under the baseline) that
    confirming this estimate is expected to add to the measured front `done` ((accuracy %, size) pairs): so that
    runs spread along the front rather than crowd one budget. The estimate is taken as it is, except where it is
    fine-tuned and no run that pruned the same way has measured what fine-tuning recovers: then the share it
    recovers of its proxy drop is unknown, and the gain is averaged over shares spread evenly from none to all."""
    floor = base["accuracy"] - max(FRONT_DEPTH_POINTS, 2 * budget.max_drop)
    have = hypervolume(done, base["size_bytes"], floor)

    def gain(accuracy: float) -> float:
        return hypervolume([*done, (accuracy, row["size_bytes"])], base["size_bytes"], floor) - have

    if not row.get("recovery_unknown"):
        return gain(row["accuracy"])
    shares = [(i + 0.5) / RECOVERY_STEPS for i in range(RECOVERY_STEPS)]  # the midpoint rule over [0, 1]
    drop = max(0.0, row["proxy_drop"])
    return sum(gain(base["accuracy"] - drop * (1 - s)) for s in shares) / RECOVERY_STEPS


# ---------------------------------------------------------------- one real run: a recipe of up to four stages


def candidate_recipe(cand: Candidate, checkpoint: str, dataset: str, out: str, cfg: PlanTask) -> dict:
    """The recipe that makes the candidate from the baseline: prune channels -> prune weights -> fine-tune ->
    quantize, each stage only when it changes something."""
    latency = cfg.times_runs()
    stages: list[dict] = []
    if cand.channel_ratio > 0:
        stages.append({"name": "channels", "task": "prune.structured",
                       "config": {"ratios": [cand.channel_ratio], "latency": latency}})
    if cand.sparsity > 0:
        stages.append({"name": "sparsity", "task": "prune.global_unstructured",
                       "config": {"sparsities": [cand.sparsity], "latency": latency}})
    if cand.finetune_epochs > 0:
        stages.append({"name": "finetune", "task": "finetune", "config": {
            "latency": latency, "finetune": {"mode": "all", "samples": cfg.finetune_samples,
                                             "train": {"epochs": cand.finetune_epochs, "lr": cfg.finetune_lr,
                                                       "weight_decay": 0.0}}}})
    if cand.bits < maths.FLOAT_BITS:
        stages.append({"name": "quantize", "task": "quantize.fake",
                       "config": {"bits": [cand.bits], "granularity": GRANULARITY, "latency": latency}})
    doc = {"name": f"plan {cand.key}", "dataset": dataset, "model": {"checkpoint": checkpoint}, "out": out,
           "stages": stages}
    if cfg.data_root != DEFAULT_ROOT:
        doc["data_root"] = cfg.data_root
    return doc


def final_point(results: list[UnitResult]) -> Point | None:
    """The candidate's measured point: the last unit's point whose artifact it hands on (its variant)."""
    if not results:
        return None
    last = results[-1]
    for p in last.points:
        if p.artifact and p.artifact == last.artifact:
            return p
    return next((p for p in reversed(last.points) if p.stage == "variant"), None)


def run_candidate(cand: Candidate, cfg: PlanTask, ctx: StoreContext, executor, dataset: str, out: str) -> dict:
    """Runs the candidate's recipe as children of ctx's run (units already in the store are reused) and returns its
    confirmed result: accuracy (%), size, latency, the point's artifact and run, and how many units really ran."""
    recipe = Recipe.from_dict(candidate_recipe(cand, cfg.checkpoint, dataset, str(Path(out) / "units"), cfg))
    started = time.perf_counter()
    result: dict[str, Any] = {"candidate": cand.as_dict(), "status": "failed"}
    try:
        results = run_recipe(recipe, ctx, executor)
    except UserError as e:  # a unit failed: the candidate is not confirmed, the plan goes on
        result.update(error=str(e), wall_s=time.perf_counter() - started, ran_units=1)
        return result
    point = final_point(results)
    ran = sum(1 for r in results if r.status == "finished")
    if point is None:
        result.update(error="its last unit measured no variant", ran_units=ran)
        return result
    result.update(status="finished", accuracy=100 * point.measurement.accuracy,
                  size_bytes=float(point.measurement.size_bytes), latency_ms_b1=point.measurement.latency_ms_b1,
                  artifact=point.artifact, run_id=point.extra.get("run_id"), ran_units=ran,
                  units=[r.run_id for r in results], wall_s=time.perf_counter() - started)
    return result


# ---------------------------------------------------------------- the baseline's point


def baseline_point(ctx: StoreContext, cfg: PlanTask, dataset: str, out: str, executor) -> dict:
    """The stored point whose artifact is the baseline checkpoint (measured now, as a child run, when the store has
    none): what the budget is measured against and what recommend() starts from."""
    target = os.path.realpath(cfg.checkpoint)
    points = ctx.store.points(expand=False)
    if not points.empty:
        same = points["artifact"].fillna("").astype(str).map(lambda a: bool(a) and os.path.realpath(a) == target)
        rows = points[same & points["accuracy"].notna()]
        if cfg.times_runs():
            rows = rows[rows["latency_ms_b1"].notna()] if "latency_ms_b1" in rows else rows.iloc[0:0]
        if not rows.empty:
            r = rows.sort_values("created_at").iloc[-1]
            return _base_dict(r.to_dict())
    recipe = Recipe.from_dict({"name": "plan baseline", "dataset": dataset, "model": {"checkpoint": cfg.checkpoint},
                               "out": str(Path(out) / "units"),
                               "stages": [{"name": "baseline", "task": "measure",
                                           "config": {"latency": cfg.times_runs()}}],
                               **({"data_root": cfg.data_root} if cfg.data_root != DEFAULT_ROOT else {})})
    run_recipe(recipe, ctx, executor)
    ctx.store.flush()
    points = ctx.store.points(expand=False)
    same = points["artifact"].fillna("").astype(str).map(lambda a: bool(a) and os.path.realpath(a) == target)
    return _base_dict(points[same].sort_values("created_at").iloc[-1].to_dict())


def _base_dict(row: dict) -> dict:
    lat = row.get("latency_ms_b1")
    return {"point_id": int(row["point_id"]), "accuracy": 100 * float(row["accuracy"]),
            "size_bytes": float(row["size_bytes"]),
            "latency_ms_b1": None if lat is None or (isinstance(lat, float) and math.isnan(lat)) else float(lat)}


# ---------------------------------------------------------------- the search


def _sampler(cfg: PlanTask):
    import optuna

    if cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True)
    population = max(4, min(50, cfg.trials // 4))
    return optuna.samplers.NSGAIISampler(seed=cfg.seed, population_size=population)


def _distributions(space: dict[str, list]) -> dict:
    from optuna.distributions import CategoricalDistribution

    return {a: CategoricalDistribution(tuple(space[a])) for a in AXES}


def _values(est: dict, timed: bool) -> list[float]:
    values = [est["accuracy"], est["size_bytes"]]
    if timed:
        values.append(est["latency_ms_b1"] if est.get("latency_ms_b1") is not None else math.inf)
    return values


def plan(cfg: PlanTask, ctx: StoreContext, executor, out: str) -> tuple[PlanState, Recommendation | None]:
    """Runs (or resumes) the plan; see the module docstring. Saves its state in `out` after every step."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    meta = read_meta(cfg.checkpoint)
    if meta.weights_format != "float":
        raise UserError(f"{cfg.checkpoint} holds {meta.weights_format} weights; a plan starts from a float checkpoint")
    state = PlanState.load(out, cfg.key())
    resumed = bool(state.trials or state.confirmed)
    state.status = "running"
    budget = cfg.budget()
    space = cfg.space()
    ctx.log_event(f"plan {cfg.key()[:12]} in {out}: {len(grid(space))} candidates in the space, {cfg.trials} "
                  f"estimates, at most {cfg.max_runs} real runs"
                  + (f"; resuming: {len(state.trials)} estimates and {len(state.confirmed)} runs already done"
                     if resumed else ""))
    ctx.progress(Progress(0.0, "opening the baseline"))
    proxy = Proxy(cfg.checkpoint, cfg.eval_samples, cfg.seed, cfg.data_root, latency=cfg.timed)
    base = baseline_point(ctx, cfg, meta.dataset, out, executor)
    base["proxy_accuracy"] = proxy.base["accuracy"]
    base["proxy_latency_ms_b1"] = proxy.base["latency_ms_b1"]
    if cfg.timed and base.get("latency_ms_b1") is None:
        base["latency_ms_b1"] = proxy.base["latency_ms_b1"]
    state.baseline = base
    state.stored = {}
    for key, r in stored_results(ctx.store.points(expand=False), base["point_id"], meta.dataset, cfg).items():
        if key in state.confirmed:  # this plan's own run (a resumed plan): already a confirmed result
            continue
        c = Candidate(**r["candidate"])
        proxy_acc = proxy.score(c.channel_ratio, c.sparsity, c.bits)["accuracy"]
        # what the proxy alone says at its position: the calibration learns from it as from a confirmed run
        r["estimate_accuracy"] = base["accuracy"] - 100 * (base["proxy_accuracy"] - proxy_acc)
        state.stored[key] = r
    if state.stored:
        ctx.log_event(f"the store already holds {len(state.stored)} measured variant(s) of the baseline made as the "
                      f"planner makes them: they are used in place of the proxy at their positions, calibrate it, "
                      f"and are not run again")
    margin = proxy.half_width(proxy.base["accuracy"]) + 1.0  # the subset's 95 % error and a point for the proxy's own
    study = optuna.create_study(directions=["maximize", "minimize"] + (["minimize"] if cfg.timed else []),
                                sampler=_sampler(cfg))
    dists = _distributions(space)
    for t in state.trials:  # resume: the sampler sees every trial already estimated
        params = {a: t["candidate"][a] for a in AXES}
        if all(params[a] in space[a] for a in AXES):
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                      values=_values(t["estimate"], cfg.timed)))
    if not state.trials:  # the what-if sliders' curves first: each axis alone, so every value is seen once
        for cand in one_axis_candidates(space)[:cfg.trials]:
            study.enqueue_trial(cand.as_dict())
    state.save(out)
    per_round = max(1, cfg.trials // (cfg.max_runs + 1))
    turn = 0
    try:
        while True:
            ctx.cancel.raise_if_cancelled()
            # a round of estimates
            target = min(cfg.trials, len(state.trials) + per_round) if state.runs_spent < cfg.max_runs else cfg.trials
            while len(state.trials) < target:
                ctx.cancel.raise_if_cancelled()
                trial = study.ask(dists)
                cand = Candidate.normal(*(trial.params[a] for a in AXES))
                est = proxy.score(cand.channel_ratio, cand.sparsity, cand.bits)
                study.tell(trial, _values(est, cfg.timed))
                number = len(state.trials)
                state.trials.append({"number": number, "candidate": cand.as_dict(), "estimate": est})
                row = {"estimate_accuracy": 100 * est["accuracy"] - 100 * base["proxy_accuracy"] + base["accuracy"],
                       "estimate_size_bytes": est["size_bytes"], **cand.as_dict()}
                if est.get("latency_ms_b1") is not None:
                    row["estimate_latency_ms_b1"] = est["latency_ms_b1"]
                ctx.log_metrics(row, step=number)
                state.save(out)  # the page draws the front from this file while the plan runs
                ctx.progress(Progress(_fraction(state, cfg), f"estimate {number + 1}/{cfg.trials}: {cand.describe()}"))
            state.save(out)
            if state.runs_spent >= cfg.max_runs:
                break
            rows = estimate_rows(state)
            choice, why = pick(rows, state.confirmed, budget, base, margin, turn, state.stored)
            turn += 1
            if choice is None:
                if len(state.trials) >= cfg.trials:
                    ctx.log_event(f"stopping after {state.runs_spent} real run(s): {why}")
                    break
                continue
            cand = Candidate(**{a: choice[a] for a in AXES})
            ctx.log_event(f"real run {state.runs_spent + 1}/{cfg.max_runs}: {cand.describe()} ({why}; estimate "
                          f"{choice['accuracy']:.2f} %, {choice['size_bytes']:,.0f} B)")
            ctx.progress(Progress(_fraction(state, cfg), f"real run {state.runs_spent + 1}/{cfg.max_runs}: "
                                                         f"{cand.describe()}"))
            uncalibrated = base["accuracy"] - (100 * base["proxy_accuracy"] - choice["proxy_accuracy"])
            result = run_candidate(cand, cfg, ctx, executor, meta.dataset, out)
            result.update(estimate_accuracy=uncalibrated, shown_estimate=choice["accuracy"], why=why)
            state.confirmed[cand.key] = result
            state.save(out)
            if result["status"] == "finished":
                step = len(state.confirmed) - 1
                ctx.log_metrics({"confirmed_accuracy": result["accuracy"], "confirmed_size_bytes": result["size_bytes"],
                                 **({"confirmed_latency_ms_b1": result["latency_ms_b1"]}
                                    if result.get("latency_ms_b1") is not None else {}),
                                 **{f"confirmed_{a}": v for a, v in cand.as_dict().items()}}, step=step)
                ctx.log_event(f"confirmed {cand.describe()}: {result['accuracy']:.2f} % "
                              f"({result['accuracy'] - base['accuracy']:+.2f} points), {result['size_bytes']:,.0f} B; "
                              f"estimate was {choice['accuracy']:.2f} %")
            else:
                ctx.log_event(f"{cand.describe()} did not finish: {result.get('error')}", "warning")
    except Cancelled:
        state.status = "cancelled"
        state.save(out)
        raise
    ctx.store.flush()
    rec = _recommend(ctx, base, budget, state)
    state.status = "finished"
    state.save(out)
    ctx.progress(Progress(1.0, "done"))
    return state, rec


def _fraction(state: PlanState, cfg: PlanTask) -> float:
    return min(0.99, 0.5 * len(state.trials) / cfg.trials + 0.5 * state.runs_spent / cfg.max_runs)


def _recommend(ctx: StoreContext, base: dict, budget: Budget, state: PlanState) -> Recommendation | None:
    rec = recommend(ctx.store.points(expand=False), base["point_id"], budget)
    best = rec.best
    state.recommendation = None if best is None else {
        k: (v.item() if hasattr(v, "item") else v) for k, v in best.items()
        if k in ("point_id", "run_id", "run", "method", "accuracy", "change_points", "size_bytes", "smaller",
                 "latency_ms", "faster", "artifact", "confirmed")}
    if state.recommendation is not None:
        state.recommendation["reason"] = rec.reason
    ctx.log_event(f"recommendation: {rec.reason}")
    return rec


@register_task(PLAN_TASK, PlanTask, "search compression variants under an accuracy/size/latency budget: estimates "
                                    "first, a few real runs, a confirmed recommendation")
def plan_task(cfg: PlanTask, ctx: RunContext) -> list[Point]:
    if not isinstance(ctx, StoreContext):
        raise UserError("a plan runs in a run store (its real runs are child runs): run it with "
                        "engine.run.jobs.run_sync, `python -m engine plan --db FILE` or the job runner")
    out = plan_out_dir(cfg)
    executor = make_executor("local", ctx.store, workers=1)
    try:
        state, _ = plan(cfg, ctx, executor, out)
    finally:
        executor.shutdown()
    return []
