"""What-if slider response time (server side), against the 300 ms p95 target for cnn_l on mnist5k.

Trains the default teacher (cnn_l, 2 epochs on mnist5k) unless --checkpoint names one, builds the page's
engine (`engine.methods.whatif.WhatIf`, as `st.cache_resource` keeps it) and times random slider moves through it,
as a user makes them: each move sets one control (sparsity 0-99 %, weight bits 2-32, or the scale
granularity) to a random value, starting from 0 % / 32 bits. Printed: the engine's construction (once
per checkpoint and subset: load, sort magnitudes, fold BatchNorm, time the dense model, evaluate the
checkpoint), the first (cold) move on its own, then p50 and p95 wall time of the moves and the fraction
answered from the memo, with the CPU time per computed move and the load average. On a busy machine the
wall times mostly measure the other processes: `--threads 1` runs torch on one thread and reports that
thread's CPU time, which they barely disturb (with two threads, waiting threads spin and inflate it). `--channels-moves N` times N moves in structured-channels mode too (each new ratio
is a Torch-Pruning trace), reported separately.

    .venv/bin/python bench/bench_whatif.py [--checkpoint DIR] [--moves 50] [--eval-samples 250]
                                           [--channels-moves 20] [--threads N] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.context import RunContext  # noqa: E402
from engine.deploy import qmaths as maths  # noqa: E402
from engine.methods import whatif as W  # noqa: E402
from engine.methods.tasks import run_task  # noqa: E402
from engine.methods.train import TrainTask
from engine.model.train import TrainConfig  # noqa: E402

TARGET_MS = 300.0
CPU_CLOCK = time.process_time  # every thread of the process; time.thread_time with --threads 1


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p95 of 50 moves is the 48th smallest)."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


def moves(rng: random.Random, n: int, mode: str, max_sparsity: int) -> list[tuple[float, str, int, str]]:
    """n positions, each one control away from the previous (start: 0 %, 32 bits, per-channel)."""
    sparsity, bits, granularity = 0, maths.FLOAT_BITS, "per_channel"
    out = []
    for _ in range(n):
        control = rng.choice(("sparsity", "sparsity", "bits", "bits", "granularity"))
        if control == "sparsity":
            sparsity = rng.randint(0, max_sparsity)
        elif control == "bits":
            bits = rng.randint(maths.MIN_BITS, maths.MAX_BITS)
        else:
            granularity = "per_tensor" if granularity == "per_channel" else "per_channel"
        out.append((sparsity / 100, mode, bits, granularity))
    return out


def time_moves(engine: W.WhatIf, positions: list) -> tuple[list[float], list[float], list[bool]]:
    walls, cpus, hits = [], [], []
    for p in positions:
        t0, c0 = time.perf_counter(), CPU_CLOCK()
        engine.evaluate(*p)
        walls.append((time.perf_counter() - t0) * 1000)
        cpus.append((CPU_CLOCK() - c0) * 1000)
        hits.append(engine.last_hit)
    return walls, cpus, hits


def report(name: str, walls: list[float], cpus: list[float], hits: list[bool]) -> None:
    computed = [c for c, h in zip(cpus, hits) if not h]
    p50, p95 = percentile(walls, 0.5), percentile(walls, 0.95)
    print(f"{name}: {len(walls)} moves  p50 {p50:.0f} ms  p95 {p95:.0f} ms  max {max(walls):.0f} ms  "
          f"memo hits {sum(hits)}/{len(hits)} ({sum(hits) / len(hits):.0%})  "
          f"{'thread' if CPU_CLOCK is time.thread_time else 'process'} CPU per computed move (median) {statistics.median(computed) if computed else 0:.0f} ms  "
          f"[target p95 <= {TARGET_MS:.0f} ms: {'met' if p95 <= TARGET_MS else 'NOT met'}]")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a float cnn_l checkpoint (default: train one, 2 epochs on mnist5k)")
    p.add_argument("--moves", type=int, default=50)
    p.add_argument("--eval-samples", type=int, default=W.DEFAULT_EVAL_SAMPLES)
    p.add_argument("--channels-moves", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    args = p.parse_args()
    global CPU_CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
        if args.threads == 1:
            CPU_CLOCK = time.thread_time

    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = str(Path(tempfile.mkdtemp(prefix="bench-whatif-")) / "cnn_l")
        t0 = time.perf_counter()
        run_task("train", TrainTask(dataset="mnist5k", model="cnn_l", out=checkpoint, latency=False,
                                    train=TrainConfig(epochs=2)), RunContext())
        print(f"trained cnn_l on mnist5k, 2 epochs: {time.perf_counter() - t0:.0f} s -> {checkpoint}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; cores: {os.cpu_count()}; "
          f"torch threads: {torch.get_num_threads()}")

    t0 = time.perf_counter()
    engine = W.WhatIf(checkpoint, eval_samples=args.eval_samples, seed=0)
    print(f"engine built in {time.perf_counter() - t0:.2f} s ({engine.subset_caption()}; checkpoint accuracy "
          f"there {engine.baseline.accuracy:.4f}; dense b1 latency {engine.dense_latency_ms:.2f} ms)")

    rng = random.Random(args.seed)
    positions = moves(rng, args.moves, "unstructured", 99)
    cold, cold_cpu, _ = time_moves(engine, positions[:1])
    print(f"first (cold) move {positions[0]}: {cold[0]:.0f} ms wall, {cold_cpu[0]:.0f} ms CPU")
    walls, cpus, hits = time_moves(engine, positions[1:])
    report("unstructured (global magnitude) + bits", [cold[0], *walls], [cold_cpu[0], *cpus], [False, *hits])

    if args.channels_moves:
        positions = moves(rng, args.channels_moves, "channels", 90)
        walls, cpus, hits = time_moves(engine, positions)
        report("structured channels + bits", walls, cpus, hits)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
