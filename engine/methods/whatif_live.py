"""A What-if that answers at once: an estimate now, a measurement growing behind it.

`LiveWhatIf` wraps a `WhatIf` engine (engine/methods/whatif.py) with one background thread. A slider move
(`move`) answers in milliseconds with an *estimate* (engine/methods/whatif_estimate.py) made from what is
known about the checkpoint, and hands the thread a **progressive measurement** of the new position: the
first images of the subset's seeded random order, then twice as many each step while the slider rests,
each step with its Wilson 95 % interval, until the whole subset is done and the result is remembered. A
new move cancels the stale measurement (`engine.core.progress.CancelToken`), which stops at its next chunk
and keeps what it counted, so coming back resumes it.

When nothing is being refined the thread **profiles** the checkpoint, once, coarse to fine: the checkpoint
itself, a grid of positions along each slider (and a few 2-D ones) on the whole subset, and the per-layer
quantization sensitivities (each layer alone at a few widths, on a smaller part of the subset), which run
through the mixed-precision search's prefix activation cache (engine/methods/quant/prefix_cache.py: a layer's
candidates run from the state just before it). Each finished profile position is a fact the estimator
uses. The thread never touches the page; the page polls `status`, `refinement` and `sensitivity`.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch

from engine.core.errors import UserError
from engine.core.progress import CancelToken
from engine.deploy import qmaths as maths
from engine.deploy.quantized import fold_batchnorm
from engine.methods import whatif_estimate as E
from engine.methods.quant.common import LayerWeights
from engine.methods.quant.prefix_cache import CandidateEvaluator
from engine.methods.whatif import OBSERVER, SYMMETRIC, WhatIf, check_position, position_key

FIRST_STEP = 25  # images in a measurement's first step; each next step doubles what is counted
CHUNK = 25  # images per forward inside a step: how often a stale measurement can notice it was cancelled
SENSITIVITY_BITS = (4, 2)  # widths each layer is tried at, alone
SENSITIVITY_SAMPLES = 100  # images the per-layer sensitivities are measured on (the first of the subset's order)
SENSITIVITY_MEMORY = 256 << 20  # bytes of kept activations for the prefix cache
ADAPTIVE = 60  # positions the profile may add where the estimates' error bars are widest (whatif_estimate.next_to_measure)
ADAPTIVE_TOLERANCE = 0.02  # ... until no error bar is wider than the measurements' own by more than half of this
# the profile, coarse to fine: positions along each slider, then a few 2-D ones (sparsity, mode, bits, scales)
PROFILE_COARSE = [(0.0, "unstructured", 32, "per_channel"), (0.5, "unstructured", 32, "per_channel"),
                  (0.0, "unstructured", 4, "per_channel"), (0.8, "unstructured", 32, "per_channel"),
                  (0.0, "unstructured", 2, "per_channel"), (0.9, "unstructured", 32, "per_channel"),
                  (0.0, "unstructured", 4, "per_tensor"), (0.99, "unstructured", 32, "per_channel"),
                  (0.0, "unstructured", 3, "per_channel"), (0.7, "unstructured", 32, "per_channel")]
PROFILE_FINE = [(0.95, "unstructured", 32, "per_channel"), (0.0, "unstructured", 6, "per_channel"),
                (0.0, "unstructured", 2, "per_tensor"), (0.6, "unstructured", 32, "per_channel"),
                (0.85, "unstructured", 32, "per_channel"), (0.0, "unstructured", 6, "per_tensor"),
                (0.0, "unstructured", 3, "per_tensor"), (0.3, "unstructured", 32, "per_channel"),
                (0.0, "unstructured", 5, "per_channel"), (0.0, "unstructured", 8, "per_channel"),
                (0.0, "unstructured", 5, "per_tensor"), (0.0, "unstructured", 8, "per_tensor"),
                (0.75, "unstructured", 32, "per_channel"), (0.93, "unstructured", 32, "per_channel"),
                (0.97, "unstructured", 32, "per_channel"),
                (0.5, "unstructured", 4, "per_channel"), (0.8, "unstructured", 4, "per_channel"),
                (0.5, "unstructured", 3, "per_channel"), (0.8, "unstructured", 3, "per_channel"),
                (0.7, "unstructured", 5, "per_channel"), (0.9, "unstructured", 4, "per_channel"),
                (0.5, "unstructured", 4, "per_tensor"), (0.8, "unstructured", 6, "per_tensor"),
                (0.2, "channels", 32, "per_channel"), (0.4, "channels", 32, "per_channel"),
                (0.6, "channels", 32, "per_channel"), (0.1, "channels", 32, "per_channel"),
                (0.3, "channels", 32, "per_channel"), (0.5, "channels", 32, "per_channel"),
                (0.8, "channels", 32, "per_channel")]


@dataclass
class Counted:
    """One position's measurement so far: sums over the first `n` images of the subset's seeded order."""

    n: int = 0
    correct: int = 0
    top5: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0  # compute time spent on it


@dataclass(frozen=True)
class Refinement:
    """What the page shows of a position's progressive measurement."""

    key: tuple
    n: int  # images counted so far
    total: int  # the subset's size: done when n == total
    accuracy: float | None
    low: float | None  # Wilson 95 % interval
    high: float | None
    state: str  # "queued", "running", "paused" (a job runs), "done", "cancelled", "failed"
    message: str = ""
    elapsed_s: float = 0.0  # since the move that asked for it

    @property
    def done(self) -> bool:
        return self.state == "done"


@dataclass(frozen=True)
class Answer:
    """A move's instant answer: the estimate (or the measurement, once made) and what else is known at once."""

    key: tuple
    estimate: E.Estimate
    result: object | None  # the WhatIfResult when the position was measured on the whole subset
    size_bytes: int | None  # exact once the position's model is built (or for the checkpoint); else estimated
    size_note: str
    answered_ms: float


@dataclass
class _Move:
    key: tuple
    token: CancelToken
    asked: float = field(default_factory=time.perf_counter)


class LiveWhatIf:
    """Instant estimates and background measurements over one `WhatIf` engine; thread-safe."""

    def __init__(self, engine: WhatIf, *, profile: bool = True, sensitivity: bool = True,
                 sensitivity_bits: tuple[int, ...] = SENSITIVITY_BITS,
                 sensitivity_samples: int = SENSITIVITY_SAMPLES, first_step: int = FIRST_STEP,
                 chunk: int = CHUNK, adaptive: int = ADAPTIVE, paused: Callable[[], bool] | None = None,
                 start: bool = True) -> None:
        self.engine = engine
        # while paused() is true (the app's job runner has work) no forward runs here: torch.fx tracing, which
        # a job may do at any moment (BatchNorm folding, int8 conversion), patches nn.Module.__call__ for the
        # whole process, so a forward in this thread during a trace would break the job's trace
        self.paused = paused or (lambda: False)
        self.first_step, self.chunk = first_step, chunk
        self.sensitivity_bits = tuple(sensitivity_bits)
        self.sensitivity_samples = min(sensitivity_samples, engine.eval_samples)
        self._cv = threading.Condition()
        self._move: _Move | None = None  # the position asked for last, not yet picked up by the thread
        self._current: _Move | None = None
        self._counted: dict[tuple, Counted] = {}
        self._refinements: dict[tuple, Refinement] = {}
        self._stored: list[E.Known] = []
        self._profile = [position_key(*p) for p in (PROFILE_COARSE + PROFILE_FINE)] if profile else \
            [engine.baseline_key]
        self._profile = list(dict.fromkeys(self._profile))
        self.profile_total = len(self._profile)
        self._layers = list(engine.folded_layers) if sensitivity else []
        self.sensitivity_total = len(self._layers)
        self.drops: dict[str, dict[int, float]] = {}  # layer -> bits -> accuracy lost with that layer alone
        self._evaluator: CandidateEvaluator | None = None
        self._sensitivity_base: float | None = None
        self.adaptive_left = adaptive if profile else 0
        self.adaptive_done = 0
        self._proposed: tuple | None = None
        self._refused: set[tuple] = set()
        self.errors: list[str] = []
        self._stop = False
        self.opened_s = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="whatif-live", daemon=True)
        if start:
            self._thread.start()

    # ------------------------------------------------------------ what the page calls (never blocks on a forward)

    def move(self, sparsity: float, mode: str = "unstructured", bits: int = maths.FLOAT_BITS,
             granularity: str = "per_channel") -> Answer:
        """The slider moved: the instant answer, and the new position handed to the thread (the stale one
        cancelled)."""
        started = time.perf_counter()
        sparsity, bits = float(sparsity), int(bits)
        check_position(sparsity, mode, bits, granularity)
        key = position_key(sparsity, mode, bits, granularity)
        with self._cv:
            for stale in (self._move, self._current):
                if stale is not None and stale.key != key:
                    stale.token.cancel()
            refused = key in self._refinements and self._refinements[key].state == "failed"
            running = self._current is not None and self._current.key == key and not self._current.token.cancelled
            waiting = self._move is not None and self._move.key == key
            if not (refused or running or waiting or self.engine.lookup(key) is not None):
                self._move = _Move(key, CancelToken())
                self._set(key, "queued")
            self._cv.notify_all()
        return self.answer(key, started)

    def answer(self, key: tuple, started: float | None = None) -> Answer:
        """What is known about a position now: its measurement, else an estimate."""
        started = time.perf_counter() if started is None else started
        result = self.engine.lookup(key)
        est = self.estimate(*key)
        size, note = self._size(key, result)
        return Answer(key, est, result, size, note, (time.perf_counter() - started) * 1000)

    def estimate(self, sparsity: float, mode: str, bits: int, granularity: str) -> E.Estimate:
        known = self.known()
        floor = min([1 / self.engine.num_classes] + [k.accuracy for k in known if k.source == "measured"])
        return E.estimate(sparsity, mode, bits, granularity, known, floor=floor * 0.9)

    def known(self) -> list[E.Known]:
        """Every fact the estimator may use: the positions measured on the whole subset, stored runs of this
        checkpoint (shifted by the checkpoint's subset-minus-whole-split accuracy once both are known), and the
        per-layer sensitivity prior once every layer is profiled. A part-counted position is no fact: its
        progressive measurement is shown beside the estimate, not mixed into it."""
        out = [E.Known(r.sparsity, r.mode, r.bits, r.granularity, r.accuracy,
                       E.wilson_half_width(r.accuracy, r.eval_samples), r.eval_samples)
               for r in self.engine.remembered()]
        with self._cv:
            stored = list(self._stored)
        base = self.engine.baseline
        stored_base = next((k.accuracy for k in stored if k.sparsity == 0 and k.bits >= maths.FLOAT_BITS), None)
        shift = base.accuracy - stored_base if base is not None and stored_base is not None else 0.0
        out.extend(dataclasses.replace(k, accuracy=min(1.0, max(0.0, k.accuracy + shift))) for k in stored)
        if base is not None and len(self.drops) == self.sensitivity_total and self.drops:
            for b in self.sensitivity_bits:
                prior = E.sensitivity_prior(base.accuracy, self.drops, b, self.sensitivity_samples)
                if prior is not None:
                    out.append(prior)
        return out

    def refinement(self, key: tuple) -> Refinement | None:
        with self._cv:
            return self._refinements.get(key)

    def status(self) -> dict:
        """The background work so far: profile positions measured, layers profiled, errors."""
        with self._cv:
            left = len(self._profile)
        return {"profile_done": self.profile_total - left, "profile_total": self.profile_total,
                "sensitivity_done": len(self.drops), "sensitivity_total": self.sensitivity_total,
                "adaptive_done": self.adaptive_done,
                "idle": not self._has_work() and self._move is None and self._current is None,
                "device": str(self.engine.device), "errors": list(self.errors)}

    def sensitivity(self) -> pd.DataFrame:
        """One row per layer profiled: the accuracy lost with that layer alone at each width (on the first
        `sensitivity_samples` images of the subset)."""
        rows = [{"layer": layer, **{f"drop at {b} bits": d.get(b) for b in self.sensitivity_bits}}
                for layer, d in list(self.drops.items())]
        return pd.DataFrame(rows)

    def add_stored(self, curves: pd.DataFrame) -> int:
        """Takes this checkpoint's stored points (rows of `whatif.checkpoint_points`) as facts where their
        position is a slider position: the checkpoint itself, whatif runs, global magnitude pruning at float
        width and `fake` quantization of the unpruned model. Their accuracy is on the whole test split, shifted
        by (subset - whole split) of the checkpoint once both are known. Returns how many were taken."""
        facts = stored_facts(curves, self.engine.test_samples)
        with self._cv:
            self._stored = facts
        return len(facts)

    def wait(self, key: tuple, timeout: float) -> Refinement | None:
        """Blocks until the position's measurement is done or stopped (for scripts and tests, not pages)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            r = self.refinement(key)
            if r is not None and r.state in ("done", "cancelled", "failed"):
                return r
            time.sleep(0.01)
        return self.refinement(key)

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.status()["idle"]:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        with self._cv:
            self._stop = True
            for m in (self._move, self._current):
                if m is not None:
                    m.token.cancel()
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    # ------------------------------------------------------------ the thread

    def _has_work(self) -> bool:
        return bool(self._profile) or len(self.drops) < len(self._layers) or self.adaptive_left > 0

    def _time_dense(self) -> None:
        try:
            self.engine.time_dense()
        except Exception as e:  # noqa: BLE001 - latency stays "not timed"; the page shows why
            self.errors.append(f"timing the dense model: {type(e).__name__}: {e}")

    def _run(self) -> None:
        timed = False
        while True:
            if not timed and self.engine.baseline is not None and self._move is None:  # after the checkpoint's
                # own measurement, while no move waits
                self._time_dense()
                timed = True
            with self._cv:
                while not self._stop and (self._is_paused() or (self._move is None and not self._has_work())):
                    self._cv.wait(timeout=0.5)
                if self._stop:
                    return
                move, self._move = self._move, None
                self._current = move
            phase = "move" if move is not None else "profile" if self._profile else \
                "layer" if len(self.drops) < len(self._layers) else "adaptive"
            try:
                if phase == "move":
                    self._measure(move.key, move.token, move.asked)
                elif phase == "profile":
                    key = self._profile[0]
                    if self._measure(key, None, time.perf_counter()):
                        self._drop_profile(key)
                elif phase == "layer":
                    self._profile_layer(self._layers[len(self.drops)])
                else:
                    self._refine_profile()
            except Exception as e:  # noqa: BLE001 - the thread outlives a position this model refuses (a cut that
                # removes a whole layer, a layer the prefix cache cannot run); the page lists the message
                self.errors.append(f"{phase}: {e}" if isinstance(e, UserError) else f"{phase}: {type(e).__name__}: {e}")
                if phase == "move":
                    self._set(move.key, "failed", str(e))
                elif phase == "profile":
                    self._drop_profile(self._profile[0])
                elif phase == "layer":
                    with self._cv:
                        self.drops[self._layers[len(self.drops)]] = {}
                else:
                    self.adaptive_left -= 1
                    if self._proposed is not None:
                        self._refused.add(self._proposed)
            finally:
                with self._cv:
                    self._current = None

    def _drop_profile(self, key: tuple) -> None:
        with self._cv:
            if self._profile and self._profile[0] == key:
                self._profile.pop(0)

    def _refine_profile(self) -> None:
        """One more profile position where the estimate's error bar is widest (or none: done)."""
        key = E.next_to_measure(self.known(), ADAPTIVE_TOLERANCE, skip=self._refused)
        if key is None:
            self.adaptive_left = 0
            return
        key = position_key(*key)
        self._proposed = key
        if self._measure(key, None, time.perf_counter()):
            self.adaptive_left -= 1
            self.adaptive_done += 1

    def _is_paused(self) -> bool:
        try:
            return bool(self.paused())
        except Exception:  # noqa: BLE001 - a runner that cannot say is taken as idle
            return False

    def _preempted(self, token: CancelToken | None) -> bool:
        """A move's measurement stops when cancelled; a profile position as soon as a move is waiting; both
        while paused (a move's measurement resumes where it stopped)."""
        if self._stop or self._is_paused():
            return True
        if token is not None:
            return token.cancelled
        return self._move is not None

    def _measure(self, key: tuple, token: CancelToken | None, asked: float) -> bool:
        """Counts the position on growing prefixes of the subset until done (True) or preempted (False)."""
        engine, total = self.engine, self.engine.eval_samples
        if engine.lookup(key) is not None:
            self._set(key, "done", asked=asked)
            return True
        with self._cv:
            c = self._counted.setdefault(key, Counted())
        with engine._lock:
            started = time.perf_counter()
            model, fields = engine.prepare(key)
            c.seconds += time.perf_counter() - started
            while c.n < total:
                target = min(total, max(self.first_step, 2 * c.n))
                while c.n < target:
                    if self._preempted(token):
                        if token is not None and token.cancelled:
                            self._set(key, "cancelled", asked=asked)
                        elif token is not None:  # paused: picked up again once the jobs are done
                            self._set(key, "paused", "paused while a job runs", asked=asked)
                            with self._cv:
                                if self._move is None:
                                    self._move = _Move(key, token, asked)
                        return False
                    started = time.perf_counter()
                    stop = min(target, c.n + self.chunk)
                    s = engine.score_range(model, c.n, stop)
                    with self._cv:
                        c.correct += s["correct"]
                        c.top5 += s["top5"]
                        c.loss_sum += s["loss_sum"]
                        c.n = stop
                    c.seconds += time.perf_counter() - started
                if c.n < total:
                    self._set(key, "running", asked=asked)
            scores = {"accuracy": _mean(c.correct, total), "top5": _mean(c.top5, total), "loss": c.loss_sum / total}
            engine.remember(key, {**fields, **scores}, c.seconds)
        with self._cv:
            self._counted.pop(key, None)
        self._set(key, "done", asked=asked)
        return True

    def _set(self, key: tuple, state: str, message: str = "", asked: float | None = None) -> None:
        total = self.engine.eval_samples
        result = self.engine.lookup(key)
        with self._cv:
            c = self._counted.get(key)
            if result is not None:
                n, correct = total, round(result.accuracy * total)
            elif c is not None:
                n, correct = c.n, c.correct
            else:
                n, correct = 0, 0
            lo, hi = E.wilson(correct, n) if n else (None, None)
            elapsed = time.perf_counter() - asked if asked is not None else 0.0
            self._refinements[key] = Refinement(key, n, total, correct / n if n else None, lo, hi, state, message,
                                                elapsed)

    def _profile_layer(self, layer: str) -> None:
        """One layer's sensitivity at each width, from the prefix cache's state just before that layer."""
        if self._evaluator is None:
            model = copy.deepcopy(fold_batchnorm(self.engine.original)).to(self.engine.device).eval()
            weights = LayerWeights(model, {"symmetric": SYMMETRIC, "per_channel": True, "observer": OBSERVER})
            n = self.sensitivity_samples
            self._evaluator = CandidateEvaluator(model, weights, self.engine.x[:n], self.engine.y[:n],
                                                 memory_bytes=SENSITIVITY_MEMORY)
            self._sensitivity_base = self._evaluator.evaluate(self._float_assignment())["accuracy"]
        base = self._float_assignment()
        results = self._evaluator.evaluate_changes(base, [(layer, b) for b in self.sensitivity_bits])
        drops = {b: self._sensitivity_base - r["accuracy"] for b, r in zip(self.sensitivity_bits, results)}
        with self._cv:
            self.drops[layer] = drops
        if len(self.drops) == len(self._layers):
            self._evaluator = None  # its kept activations are no longer needed

    def _float_assignment(self) -> dict[str, int]:
        return {name: maths.FLOAT_BITS for name in self._evaluator.weights.layers}

    # ------------------------------------------------------------ sizes at once

    def _size(self, key: tuple, result) -> tuple[int | None, str]:
        if result is not None:
            return result.size_bytes, "measured"
        c = self.refinement(key)
        if c is not None and c.n > 0:
            loaded = self.engine.loaded_fields(key)
            if loaded is not None:
                return loaded["size_bytes"], "measured"
        sparsity, mode, bits, _ = key
        ref = self.engine.reference["size_bytes"]
        if mode == "unstructured" and bits >= maths.FLOAT_BITS and sparsity == 0:
            return ref, "measured"
        # a weight stored dense costs `bits` per value, sparse (1 - s) * bits plus a one-bit mask (measure.storage
        # keeps the smaller); a channel cut keeps about (1 - r)^2 of the conv weights, dense
        if mode == "channels":
            fraction = (1 - sparsity) ** 2 * bits / maths.FLOAT_BITS
        else:
            fraction = min(bits, (1 - sparsity) * bits + 1) / maths.FLOAT_BITS
        return int(ref * fraction), "estimated until measured"


def _mean(count: int, n: int) -> float:
    """count / n in float32, as `scores` takes a mean, so a counted accuracy equals a one-forward one exactly."""
    return (torch.tensor(float(count), dtype=torch.float32) / n).item()


def stored_facts(curves: pd.DataFrame, test_samples: int) -> list[E.Known]:
    """Slider positions among stored points (see `LiveWhatIf.add_stored`), as facts on the whole test split."""
    if curves is None or curves.empty:
        return []
    out = []
    for row in curves.itertuples(index=False):
        method, level, name = getattr(row, "method", ""), getattr(row, "level", None), getattr(row, "level_name", "")
        acc = getattr(row, "accuracy", None)
        if acc is None or acc != acc:
            continue
        if getattr(row, "stage", "") == "baseline" and method == "train":
            position = (0.0, "unstructured", 32, "per_channel")
        elif method == "global_unstructured" and name == "sparsity" and level == level:
            position = (float(level), "unstructured", 32, "per_channel")
        else:
            continue
        out.append(E.Known(*position, float(acc), E.wilson_half_width(float(acc), test_samples), test_samples,
                           "stored run"))
    return out
