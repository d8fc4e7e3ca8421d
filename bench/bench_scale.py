"""Real-size What-if: instant estimates and progressive measurements on 224-pixel models (issue 26).

For each model (zoo resnet18, zoo resnet50, and a timm model when `timm` is importable and the zoo takes
`timm:` names): a short fine-tune on a synthetic 224-pixel image folder (or `--data imagefolder:PATH`), then

1. the time to open the What-if (`LiveWhatIf` over `WhatIf(warm=False)`: load, sort magnitudes, fold, time the
   dense model) until the first estimate is on screen, and how long the background profile (the checkpoint,
   the slider grid, the per-layer sensitivities through the prefix cache) takes to fill in;
2. 30 random slider moves to positions the profile did not measure: p50/p95 of the instant answer, and of
   the progressive refinement (first step, whole subset); then the estimator's own accuracy: |estimate -
   measured| on those held-out positions (each estimated before its own measurement), the share within 2
   points, and the share inside the estimate's error bar;
3. the real 10-level global magnitude pruning sweep (`prune.global_unstructured`, one-shot, no latency, nothing
   saved): every level on the whole test split (`eval_samples` 0), against `--eval-samples` (the What-if's
   subset size): every level on the seeded subset with its Wilson interval, the reported levels (the first and
   the last) on the whole split as well. Prints the speed-up, whether the reported points agree, how far the
   subset levels are from their whole-split accuracy (and whether it lies inside their interval), and the
   breakpoint level each detector finds on each curve.

Prints the load average and the CPU flags as the other benches do. On a shared machine the times mostly
measure the other processes; the estimator's error does not depend on them.

    .venv/bin/python bench/bench_scale.py [--quick] [--data imagefolder:PATH] [--models resnet18,resnet50]
        [--moves 30] [--eval-samples 250] [--epochs 3] [--image-size 224] [--checkpoint DIR] [--threads N]

--quick: resnet18 only, a smaller synthetic folder (10 classes, 16 train and 20 test images each), 100-image
subset, 10 moves, the profile's coarse grid and 10 adaptive positions.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.analysis import breakpoint as B  # noqa: E402
from engine.core.context import RunContext  # noqa: E402
from engine.deploy import qmaths as maths  # noqa: E402
from engine.methods import whatif as W  # noqa: E402
from engine.methods import whatif_live as L  # noqa: E402
from engine.methods.tasks import run_task  # noqa: E402
from engine.model.checkpoint import read_meta  # noqa: E402

TARGET_MS = 300.0
TOLERANCE = 0.02  # the estimator's target: within 2 points on 90 % of held-out positions


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))] if s else float("nan")


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "fma")
        return " ".join(f for f in wanted if f" {f}" in flags) or "none of avx2/avx512/amx"
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def synthetic_folder(root: Path, classes: int, train: int, test: int, size: int, seed: int = 0) -> Path:
    """A learnable image folder: class k is a colour and a grating orientation, each image jittered and noisy."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    colours = rng.uniform(0.2, 0.8, (classes, 3))
    for split, n in (("train", train), ("test", test)):
        for k in range(classes):
            d = root / split / f"class_{k}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                theta = math.pi * k / classes + rng.normal(0, 0.1)
                grating = np.sin(2 * math.pi * 5 * (xx * math.cos(theta) + yy * math.sin(theta)) + rng.uniform(0, 6.3))
                img = colours[k] + rng.normal(0, 0.08, 3) + 0.15 * grating[..., None]
                img = img + rng.normal(0, 0.1, (size, size, 3))
                Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


def moves(rng: random.Random, n: int, seen: set) -> list[tuple]:
    """n distinct unstructured positions the profile did not measure (sparsity 0-99 %, 2-32 bits, scales)."""
    out: list[tuple] = []
    while len(out) < n:
        p = (rng.randint(0, 99) / 100, "unstructured", rng.choice([*range(2, 9), 12, 16, 32]),
             rng.choice(maths.GRANULARITIES))
        key = W.position_key(*p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def sweep(checkpoint: str, levels: list[float], eval_samples: int) -> dict:
    """The real 10-level sweep (`prune.global_unstructured`, one-shot, untimed, unsaved) twice: every level on
    the whole test split (`eval_samples` 0), and with `eval_samples` (each level on the seeded subset with its
    Wilson interval, the first and last levels on the whole split too). Returns both runs' wall times, whether
    the reported (whole-split) points agree, how the subset levels compare with their whole-split accuracy, and
    the breakpoint each detector finds on each curve."""

    def run(n: int) -> tuple[list[dict], float]:
        t0 = time.perf_counter()
        cfg = {"checkpoint": checkpoint, "sparsities": levels, "latency": False, "save": False, "eval_samples": n}
        points = [p.to_dict() for p in run_task("prune.global_unstructured", cfg, RunContext())]
        return points, time.perf_counter() - t0

    full, full_s = run(0)
    sub, subset_s = run(eval_samples)
    reported = [i for i, p in enumerate(sub) if not p.get("eval_subset", True)]
    rest = [(p, f) for p, f in zip(sub, full) if p.get("eval_subset")]
    breakpoints = {}
    for name in B.DETECTORS.names():
        a, b = (B.detect(B.curve_from_points(points, x="params"), name) for points in (full, sub))
        breakpoints[name] = (a.level if a.found else None, b.level if b.found else None)
    return {"full_s": full_s, "subset_s": subset_s, "reported": [levels[i] for i in reported],
            "agree": all(sub[i]["accuracy"] == full[i]["accuracy"] for i in reported),
            "subset_n": rest[0][0]["eval_samples"] if rest else None, "test_n": sub[-1].get("test_samples"),
            "widest_ci": max(((p["accuracy_hi"] - p["accuracy_lo"]) / 2 for p, _ in rest), default=0.0),
            "max_error": max((abs(p["accuracy"] - f["accuracy"]) for p, f in rest), default=0.0),
            "inside": sum(p["accuracy_lo"] <= f["accuracy"] <= p["accuracy_hi"] for p, f in rest), "levels_n": len(rest),
            "device": sub[0]["eval_device"], "breakpoints": breakpoints}


def bench_model(name: str, checkpoint: str, args) -> None:
    meta = read_meta(checkpoint)
    print(f"\n== {name}: {meta.arch} on {meta.dataset.split(':')[0]} at {meta.image_size} px "
          f"(load average {load()})")
    t0 = time.perf_counter()
    engine = W.WhatIf(checkpoint, eval_samples=args.eval_samples, seed=0, warm=False, latency=True)
    live = L.LiveWhatIf(engine, profile=True, adaptive=10 if args.quick else L.ADAPTIVE)
    if args.quick:
        with live._cv:
            coarse = {W.position_key(*p) for p in L.PROFILE_COARSE}
            live._profile = [k for k in live._profile if k in coarse]
            live.profile_total = len(live._profile)
    first = live.move(0.0, "unstructured", 32, "per_channel")
    open_s = time.perf_counter() - t0
    print(f"open: {open_s:.2f} s to the first answer ({first.estimate.label}, {first.estimate.basis}) on "
          f"{engine.device}; {engine.subset_caption()}  [target <= 10 s: {'met' if open_s <= 10 else 'NOT met'}]")
    base = live.wait(engine.baseline_key, 3600)
    print(f"checkpoint measured on the subset after {time.perf_counter() - t0:.1f} s: accuracy "
          f"{engine.baseline.accuracy:.4f} ({base.state})")
    live.wait_idle(args.profile_timeout)
    st = live.status()
    print(f"profile filled in after {time.perf_counter() - t0:.1f} s: {st['profile_done']}/{st['profile_total']} "
          f"grid positions + {st['adaptive_done']} adaptive, sensitivities of {st['sensitivity_done']}/{st['sensitivity_total']} layers "
          f"(prefix cache; {live.sensitivity_samples} images){'; errors: ' + '; '.join(st['errors']) if st['errors'] else ''}")

    seen = {r for r in (W.position_key(r.sparsity, r.mode, r.bits, r.granularity) for r in engine.remembered())}
    rng = random.Random(args.seed)
    answer_ms, first_s, done_s, errors, covered = [], [], [], [], 0
    for p in moves(rng, args.moves, seen):
        a = live.move(*p)
        answer_ms.append(a.answered_ms)
        key, t_move = a.key, time.perf_counter()
        first_step = None
        while True:
            r = live.refinement(key)
            if r is not None and r.n > 0 and first_step is None:
                first_step = time.perf_counter() - t_move
            if r is not None and r.state in ("done", "failed"):
                break
            time.sleep(0.005)
        done_s.append(time.perf_counter() - t_move)
        first_s.append(first_step if first_step is not None else done_s[-1])
        measured = engine.lookup(key).accuracy
        err = abs(a.estimate.accuracy - measured)
        errors.append(err)
        covered += a.estimate.low - 1e-9 <= measured <= a.estimate.high + 1e-9
        if args.verbose:
            print(f"  {p}: estimate {a.estimate.accuracy:.3f} [{a.estimate.low:.3f}, {a.estimate.high:.3f}] "
                  f"({a.estimate.basis}), measured {measured:.3f}")
    n = len(errors)
    within = sum(e <= TOLERANCE + 1e-9 for e in errors) / n
    print(f"moves ({n}): instant answer p50 {percentile(answer_ms, .5):.1f} ms  p95 {percentile(answer_ms, .95):.1f} ms  "
          f"[target p95 <= {TARGET_MS:.0f} ms: {'met' if percentile(answer_ms, .95) <= TARGET_MS else 'NOT met'}]")
    print(f"refinements: first step ({live.first_step} images) p50 {percentile(first_s, .5):.2f} s  p95 "
          f"{percentile(first_s, .95):.2f} s; whole subset p50 {percentile(done_s, .5):.2f} s  p95 "
          f"{percentile(done_s, .95):.2f} s")
    print(f"estimator on {n} held-out positions: |error| median {statistics.median(errors) * 100:.2f} pts, "
          f"p90 {percentile(errors, .9) * 100:.2f} pts, max {max(errors) * 100:.2f} pts; within 2 pts: "
          f"{within:.0%} [target >= 90 %: {'met' if within >= 0.9 else 'NOT met'}]; inside its error bar: "
          f"{covered / n:.0%}")
    live.close()
    levels = [round(i / 10, 2) for i in range(10)]
    s = sweep(checkpoint, levels, args.eval_samples)
    print(f"10-level pruning sweep (prune.global_unstructured, one-shot, untimed; evaluation on {s['device']}, load "
          f"{load()}): whole test split ({s['test_n']} images) {s['full_s']:.1f} s; --eval-samples {args.eval_samples} "
          f"({s['subset_n']} images, Wilson 95 % half-width <= {s['widest_ci'] * 100:.1f} pts) with levels "
          f"{s['reported']} on the whole split {s['subset_s']:.1f} s (x{s['full_s'] / max(s['subset_s'], 1e-9):.1f}); "
          f"reported points agree with the full sweep: {s['agree']}; subset levels: |subset - whole split| <= "
          f"{s['max_error'] * 100:.1f} pts, whole split inside the interval {s['inside']}/{s['levels_n']}")
    print("  breakpoint level (whole-split sweep / subset sweep): " + "; ".join(
        f"{name} {a} / {b}" for name, (a, b) in s["breakpoints"].items()))


def train(model: str, data: str, out: str, epochs: int, image_size: int) -> str:
    t0 = time.perf_counter()
    [point] = run_task("train", {"dataset": data, "model": model, "out": out, "latency": False,
                                 "image_size": image_size,
                                 "train": {"epochs": epochs, "seed": 0, "batch_size": 32, "lr": 0.02}},
                       RunContext())
    print(f"fine-tuned {model}: {epochs} epochs in {time.perf_counter() - t0:.0f} s, test accuracy "
          f"{point.accuracy:.3f}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--data", help="imagefolder:PATH (default: a synthetic 224-pixel folder)")
    p.add_argument("--models", help="comma-separated (default resnet18,resnet50 and timm:resnet18 if timm is here)")
    p.add_argument("--checkpoint", help="a float checkpoint to use instead of fine-tuning (one model)")
    p.add_argument("--moves", type=int)
    p.add_argument("--eval-samples", type=int)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--profile-timeout", type=float, default=1800.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    args.moves = args.moves or (10 if args.quick else 30)
    args.eval_samples = args.eval_samples or (100 if args.quick else W.DEFAULT_EVAL_SAMPLES)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average at start: {load()}; cores: {os.cpu_count()}; torch threads: {torch.get_num_threads()}; "
          f"CPU flags: {cpu_flags()}; GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    if args.checkpoint:
        bench_model(Path(args.checkpoint).name, args.checkpoint, args)
        return
    data = args.data
    if data is None:
        per_train, per_test = (16, 20) if args.quick else (40, 50)
        t0 = time.perf_counter()
        synthetic_folder(work / "images", 10, per_train, per_test, args.image_size)
        data = f"imagefolder:{work / 'images'}"
        print(f"synthetic folder: 10 classes, {per_train} train + {per_test} test images each at "
              f"{args.image_size} px ({time.perf_counter() - t0:.0f} s)")
    if args.models:
        names = args.models.split(",")
    elif args.quick:
        names = ["resnet18"]
    else:
        names = ["resnet18", "resnet50"]
        try:
            import timm  # noqa: F401

            names.append("timm:resnet18")
        except ImportError:
            print("timm is not importable: no timm model")
    for name in names:
        try:
            checkpoint = train(name, data, str(work / name.replace(":", "_")), args.epochs, args.image_size)
        except Exception as e:  # noqa: BLE001 - one model that cannot be built does not stop the others
            print(f"\n== {name}: skipped ({type(e).__name__}: {e})")
            continue
        bench_model(name, checkpoint, args)
    print(f"\nload average at end: {load()}")


if __name__ == "__main__":
    main()
