"""The timing protocol: latency paired with a reference, in rotated rounds, with contention checked.

A single median taken whenever a job happens to run measures the machine's load as much as the model
(the same checkpoint measured 1 ms and 146 ms at batch 1 on a busy 2-core machine). So every latency
this tool records is taken this way:

1. **Forms side by side.** The forms to compare (a variant and its baseline, or one form alone) are
   timed in the same process in `rounds`; in each round every form runs one *block* of back-to-back
   forward passes (about `block_seconds` long, at least `min_calls`), and the order of the forms is
   rotated from round to round, so no form always runs first after another (the one that follows a
   bigger model finds the caches refilled and runs 15-30 % slower).
2. **Contention checked per round.** Around each round the protocol reads the CPU time this process
   used, the machine's busy and steal time (/proc/stat) and the wall time. The CPU the *rest* of the
   machine used during the round, in cores (`other_cores`), and the steal fraction say whether someone
   else shared the CPU. A round with `other_cores > max_other_cores` or `steal > max_steal` is
   disturbed: it is thrown away, the protocol waits `wait_s` and runs it again, within `budget_s`.
   Where /proc/stat does not describe this process's CPUs (a container shown the host's CPUs), the
   main thread's CPU time against the wall time stands in (`thread_ratio < min_thread_ratio`).
3. **Enough rounds, decided by the interval.** After `rounds` clean rounds, more are run (up to
   `max_rounds`, within `budget_s`) while the widest 95 % interval is wider than `target_spread`
   (hi / lo): a speed-up's, or without a reference each form's median over rounds. On a steady machine
   `rounds` suffice; on a virtual machine whose speed drifts unseen (the host's load, the CPU's clock
   changing between AVX-512 and AMX code) the extra rounds narrow the interval.
4. **Statistics over clean rounds.** Each form's latency is the median of its per-call times over the
   clean rounds, with p10 and p90. A variant's speed-up is the median over clean rounds of the
   reference's block median divided by the variant's (a ratio taken under the same conditions), with
   a 95 % bootstrap interval over the rounds.
5. **Quality.** `clean` when every round counted was clean and the interval is at most `max_spread`
   wide; `noisy: <reason>` when the budget ran out before `rounds` clean rounds were had (the numbers
   then come from all rounds, and say so), or when clean rounds still disagree (`noisy: the rounds
   disagree (variant's speed-up 2.10x to 3.40x; ...)`: a disturbance the CPU counters do not show). A
   noisy timing is never silently averaged in: the point carries the flag.
6. **Threads chosen, not inherited**: torch's intra-op threads are set to `threads` for the timing
   (default: the physical cores this process may use, `engine.core.machine`) and restored after; the
   count is recorded with the timing.

`time_forms` is the one entry point; `engine.deploy.measure.measure` calls it for every point.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from engine.core.errors import ConfigError
from engine.core.machine import fingerprint, usable_cpus

HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Policy:
    """How hard the protocol tries (see the module docstring)."""

    rounds: int = 7  # clean rounds wanted per batch size, at least
    max_rounds: int = 21  # clean rounds at most: more are run while the interval is wider than target_spread
    target_spread: float = 1.10  # interval hi / lo a timing stops at (any speed-up; else each form's median)
    max_spread: float = 1.5  # an interval still wider than this is "noisy: the rounds disagree"
    block_seconds: float = 0.04  # one form's block of calls in a round, about
    min_calls: int = 3  # calls per block, at least
    max_calls: int = 200
    warmup_calls: int = 3  # per form, before the first round (after one untimed call)
    max_other_cores: float = 0.35  # CPU the rest of the machine may use during a round, in cores
    max_steal: float = 0.05  # fraction of the round's CPU time the hypervisor may steal
    min_thread_ratio: float = 0.7  # the fallback signal: main thread CPU time / wall time
    wait_s: float = 0.25  # pause before running a disturbed round again
    budget_s: float = 4.0  # per batch size: after this, take what there is and mark it noisy
    bootstrap: int = 1000  # resamples for the speed-up's interval
    seed: int = 0  # rotation and bootstrap randomness

    def __post_init__(self) -> None:
        if self.rounds < 3:
            raise ConfigError(f"rounds must be at least 3 (an interval needs them), got {self.rounds}")
        if self.max_rounds < self.rounds:
            raise ConfigError(f"max_rounds ({self.max_rounds}) must be at least rounds ({self.rounds})")
        if not 1.0 <= self.target_spread <= self.max_spread:
            raise ConfigError(f"spreads must satisfy 1 <= target_spread <= max_spread, got {self.target_spread}, "
                              f"{self.max_spread}")
        if self.min_calls < 1 or self.max_calls < self.min_calls:
            raise ConfigError(f"calls per block must be 1 <= min_calls <= max_calls, got {self.min_calls}, "
                              f"{self.max_calls}")


QUICK = Policy(rounds=3, max_rounds=3, block_seconds=0.02, budget_s=4.0, bootstrap=200)  # what-ifs, capability
# the test suite's points (tests/conftest.py sets COMPRESSION_LAB_TIMING=smoke): the same protocol, three short rounds
# and a one-second budget, so a test that stores a point does not time like a point a user reads
SMOKE = Policy(rounds=3, max_rounds=3, block_seconds=0.01, budget_s=1.0, bootstrap=200)
POLICIES = {"default": Policy(), "quick": QUICK, "smoke": SMOKE}
POLICY_ENV = "COMPRESSION_LAB_TIMING"


def default_policy() -> Policy:
    """The policy a point is timed with when its caller names none: `Policy()`, unless the environment variable
    COMPRESSION_LAB_TIMING names another of POLICIES (the test suite sets `smoke`)."""
    name = os.environ.get(POLICY_ENV, "default") or "default"
    if name not in POLICIES:
        raise ConfigError(f"{POLICY_ENV}={name!r} is not a timing policy; use one of {', '.join(POLICIES)}")
    return POLICIES[name]


# ---------------------------------------------------------------- contention


@dataclass
class Snapshot:
    wall: float
    process_cpu: float  # seconds of CPU this process used (all its threads)
    thread_cpu: float  # seconds of CPU this thread used
    busy: float | None  # seconds of CPU the machine was busy (all CPUs /proc/stat shows), None if unknown
    steal: float | None


def _proc_stat() -> tuple[float | None, float | None, int]:
    """(busy seconds, steal seconds, CPUs listed) from /proc/stat, or (None, None, 0)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None, None, 0
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    v = [float(x) for x in lines[0].split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    steal = v[7] if len(v) > 7 else 0.0
    return busy / HZ, steal / HZ, cpus


def snapshot() -> Snapshot:
    busy, steal, _ = _proc_stat()
    return Snapshot(time.perf_counter(), time.process_time(), time.thread_time(), busy, steal)


def proc_stat_is_ours() -> bool:
    """Whether /proc/stat's CPUs are the ones this process runs on (a VM or a bare machine), so that its
    busy time minus ours is what others used; in a container shown the host's CPUs it is not."""
    _, _, listed = _proc_stat()
    return 0 < listed <= usable_cpus()


@dataclass
class Disturbance:
    other_cores: float | None  # CPU the rest of the machine used, in cores (None: not known here)
    steal: float | None  # fraction of the round's CPU time stolen
    thread_ratio: float  # this thread's CPU time / wall time

    def reason(self, policy: Policy, use_proc: bool) -> str:
        """'' when the round is clean, else why not, in words."""
        if use_proc and self.other_cores is not None and self.other_cores > policy.max_other_cores:
            return f"other processes used {self.other_cores:.2f} cores"
        if self.steal is not None and self.steal > policy.max_steal:
            return f"the hypervisor stole {100 * self.steal:.0f} % of the CPU"
        if not use_proc and self.thread_ratio < policy.min_thread_ratio:
            return f"this thread ran {100 * self.thread_ratio:.0f} % of the wall time"
        return ""


def disturbance(a: Snapshot, b: Snapshot) -> Disturbance:
    wall = max(b.wall - a.wall, 1e-9)
    mine = b.process_cpu - a.process_cpu
    other = steal = None
    if a.busy is not None and b.busy is not None:
        other = max(0.0, (b.busy - a.busy) - mine) / wall
        total = (b.busy - a.busy) + (b.steal - a.steal)
        steal = (b.steal - a.steal) / total if total > 0 else 0.0
    return Disturbance(other, steal, (b.thread_cpu - a.thread_cpu) / wall)


# ---------------------------------------------------------------- results


@dataclass
class FormTiming:
    median_ms: float
    p10_ms: float
    p90_ms: float
    calls: int  # timed calls the statistics rest on


@dataclass
class Speedup:
    median: float  # reference time / this form's time, median over rounds
    lo: float  # 95 % bootstrap interval over the rounds
    hi: float


@dataclass
class Timing:
    """One batch size's timing of every form (see the module docstring)."""

    batch: int
    forms: dict[str, FormTiming]
    speedups: dict[str, Speedup]  # per form other than the reference
    quality: str  # "clean" or "noisy: <reason>"
    rounds: int  # rounds the statistics rest on
    disturbed: int  # rounds thrown away (and run again)
    threads: int
    machine: str
    reasons: list[str] = field(default_factory=list)  # why each disturbed round was thrown away

    @property
    def clean(self) -> bool:
        return self.quality == "clean"


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def bootstrap_median(values: list[float], n: int, rng: random.Random) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the median of `values`."""
    if len(values) < 2:
        return values[0], values[0]
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return quantile(meds, 0.025), quantile(meds, 0.975)


# ---------------------------------------------------------------- the protocol


def round_ratios(rounds: list[dict[str, list[float]]], reference: str, name: str) -> list[float]:
    """Per round: the reference's block median over `name`'s (its speed-up in that round)."""
    return [statistics.median(rnd[reference]) / statistics.median(rnd[name]) for rnd in rounds]


def widest(rounds: list[dict[str, list[float]]], names: list[str], reference: str | None, rng: random.Random,
           n: int) -> tuple[float, str]:
    """The widest 95 % interval among the timing's answers, as hi / lo, and what it is in words: every
    speed-up's when there is a reference, else every form's per-round median."""
    if len(rounds) < 2:
        return math.inf, "one round"
    out = (0.0, "")
    for name in names:
        if name == reference:
            continue
        if reference is not None:
            lo, hi = bootstrap_median(round_ratios(rounds, reference, name), n, rng)
            what = f"{name}'s speed-up {lo:.2f}x to {hi:.2f}x"
        else:
            lo, hi = bootstrap_median([statistics.median(rnd[name]) for rnd in rounds], n, rng)
            what = f"{name} {lo:.3g} to {hi:.3g} ms"
        spread = hi / lo if lo > 0 else math.inf
        if spread > out[0]:
            out = (spread, what)
    return out


def default_threads() -> int:
    """The physical cores this process may use (engine.core.machine), at least 1."""
    fp = fingerprint()
    return max(1, min(int(fp.get("physical_cores") or 1), usable_cpus()))


def _block(fn: Callable[[Tensor], object], x: Tensor, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def time_forms(forms: Mapping[str, Callable[[Tensor], object]], x: Tensor, *, reference: str | None = None,
               policy: Policy | None = None, threads: int | None = None) -> Timing:
    """Times every form on input `x` by the protocol (module docstring); `reference` names the form the
    others' speed-ups are against (None: no speed-ups)."""
    if not forms:
        raise ConfigError("nothing to time")
    if reference is not None and reference not in forms:
        raise ConfigError(f"reference {reference!r} is not among the forms timed: {', '.join(forms)}")
    policy = policy or default_policy()
    names = list(forms)
    rng = random.Random(policy.seed)
    check_rng = random.Random(policy.seed + 1)  # the stopping rule's bootstraps leave `rng`'s sequence alone
    threads = threads or default_threads()
    before = torch.get_num_threads()
    use_proc = proc_stat_is_ours()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            calls = {}
            for name, fn in forms.items():  # warm up, and size each block to about block_seconds
                fn(x)
                t = min(_block(fn, x, policy.warmup_calls))
                calls[name] = int(min(policy.max_calls, max(policy.min_calls, policy.block_seconds * 1000 / max(t, 1e-3))))
            clean: list[dict[str, list[float]]] = []
            noisy: list[dict[str, list[float]]] = []
            reasons: list[str] = []
            start = time.perf_counter()
            r = 0
            while len(clean) < policy.rounds or (
                    len(clean) < policy.max_rounds and time.perf_counter() - start < policy.budget_s
                    and widest(clean, names, reference, check_rng, 200)[0] > policy.target_spread):
                k = r % len(names)
                order = names[k:] + names[:k]
                if len(names) > 2 and (r // len(names)) % 2:
                    rng.shuffle(order)
                r += 1
                a = snapshot()
                got = {name: _block(forms[name], x, calls[name]) for name in order}
                why = disturbance(a, snapshot()).reason(policy, use_proc)
                if not why:
                    clean.append(got)
                    continue
                noisy.append(got)
                reasons.append(why)
                if time.perf_counter() - start > policy.budget_s:
                    break
                time.sleep(policy.wait_s)
    finally:
        torch.set_num_threads(before)
    if len(clean) >= policy.rounds:
        quality, used = "clean", clean
        spread, what = widest(clean, names, reference, rng, policy.bootstrap)
        if spread > policy.max_spread:
            quality = (f"noisy: the rounds disagree ({what}; {len(clean)} clean rounds within "
                       f"{policy.budget_s:g} s)")
    else:
        quality = (f"noisy: {len(clean)} of {policy.rounds} rounds clean within {policy.budget_s:g} s "
                   f"({reasons[-1]})")
        used = clean + noisy
    out = {}
    for name in names:
        every = [t for rnd in used for t in rnd[name]]
        out[name] = FormTiming(statistics.median(every), quantile(every, 0.1), quantile(every, 0.9), len(every))
    speedups = {}
    if reference is not None:
        for name in names:
            if name == reference:
                continue
            ratios = round_ratios(used, reference, name)
            lo, hi = bootstrap_median(ratios, policy.bootstrap, rng)
            speedups[name] = Speedup(statistics.median(ratios), lo, hi)
    return Timing(batch=int(x.shape[0]), forms=out, speedups=speedups, quality=quality, rounds=len(used),
                  disturbed=len(reasons), threads=threads, machine=fingerprint()["id"], reasons=reasons)


def batch_of(example: Tensor, b: int) -> Tensor:
    """`b` samples made from `example` (repeated when it holds fewer)."""
    reps = math.ceil(b / example.shape[0])
    return example.repeat(reps, *([1] * (example.dim() - 1)))[:b].contiguous()
