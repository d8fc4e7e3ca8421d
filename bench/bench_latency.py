"""Is the timing protocol (engine/deploy/timing.py) trustworthy, quiet and under load? (issue #23)

For cnn_l (1x28x28) and the zoo's resnet18 (3x32x32), 10 classes, random seeded weights (latency depends on
the graph, not the values): the fp32 model (BatchNorm folded, as ptq_int8's baseline is) and our int8
variant (engine/deploy/int8.py's FX backend, calibrated on 4 random batches). Each is measured the way a
point is (engine.deploy.measure.measure_latency: the variant timed beside its baseline in rotated rounds,
contention checked, thread count chosen), `--repeats` times in each of three conditions: quiet, one
CPU-burning process, two. The bench starts and stops the burners itself.

Printed per model and condition: the absolute medians at batch 1 and 32 (median over repeats, and their
max/min spread), the paired int8 speed-up (median over repeats, its max/min spread, and the widest
interval), how many repeats were marked noisy, and whether each repeat under load is within 20 % of the
quiet median or marked noisy ("wrong and unmarked" counts the ones that are neither). Then our int8
against plain torch.ao FX int8 (prepare_fx/convert_fx with the x86 default mapping on the model as built,
which fuses Conv+BN+ReLU itself, calibrated on the same batches), timed as a pair by the same protocol in
this process. (FX on the BatchNorm-folded model instead would keep the Identity left where BatchNorm was
and so miss the Conv+ReLU fusion: a different graph, not the library's path.) The CPU model, its int8 and
bf16 ISA features, the thread count and the load average are printed beside the numbers.

Targets (issue #23): quiet paired speed-up max/min <= 1.15; under load none wrong and unmarked; ours >= 0.95x
plain FX at batch 1 and 32; the CPU calibration (engine/deploy/capability.py) <= 10 s.

    .venv/bin/python bench/bench_latency.py [--repeats 5] [--models cnn_l,resnet18] [--conditions 0,1,2]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.machine import describe, fingerprint, usable_cpus  # noqa: E402
from engine.deploy import timing  # noqa: E402
from engine.deploy.capability import calibrate, in_words  # noqa: E402
from engine.deploy.int8 import INT8_BACKENDS  # noqa: E402
from engine.deploy.measure import measure_latency  # noqa: E402
from engine.deploy.quantized import fold_batchnorm  # noqa: E402
from engine.model.zoo import build_model  # noqa: E402

MODELS = {"cnn_l": (1, 28), "resnet18": (3, 32)}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def burners(n: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(0.5)
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def plain_fx(model: torch.nn.Module, batches: list[torch.Tensor]) -> torch.nn.Module:
    """What a user of torch.ao alone would run: FX on the model as built (it fuses Conv+BN+ReLU itself)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (batches[0][:1],))
        with torch.inference_mode():
            for x in batches:
                prepared(x)
        return convert_fx(prepared).eval()


def spread(values: list[float]) -> float:
    return max(values) / min(values) if values and min(values) > 0 else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--conditions", default="0,1,2", help="how many CPU burners in each condition")
    args = ap.parse_args()
    fp = fingerprint()
    print(f"machine {fp['id']}: {describe(fp)}")
    print(f"threads for timing: {timing.default_threads()} of {usable_cpus()} usable CPUs; load {load()}")
    cap = calibrate(save=False)
    print(f"what this CPU can do (engine/deploy/capability.py), took {cap.seconds:.1f} s (target <= 10 s): "
          f"{in_words(cap)}")
    conditions = [int(c) for c in args.conditions.split(",")]
    for name in args.models.split(","):
        channels, size = MODELS[name]
        torch.manual_seed(0)
        built = build_model(name, 10, channels, size).eval()
        folded = fold_batchnorm(built)
        batches = [torch.randn(32, channels, size, size) for _ in range(4)]
        ours = INT8_BACKENDS.get("fx").static(folded, batches, "x86").runner
        example = batches[0]
        print(f"\n== {name}")
        print(f"{'burners':>7} {'fp32 b1 ms':>11} {'int8 b1 ms':>11} {'speedup b1':>11} {'spread':>6} "
              f"{'fp32 b32 ms':>12} {'int8 b32 ms':>12} {'speedup b32':>12} {'spread':>6} {'CI width':>8} "
              f"{'noisy':>5} {'wrong':>5} {'load':>15}")
        quiet: dict[str, float] = {}
        for n in conditions:
            procs = burners(n) if n else []
            try:
                reps = [measure_latency(ours, example, reference=folded) for _ in range(args.repeats)]
                base = [measure_latency(folded, example, reference=folded) for _ in range(args.repeats)]
            finally:
                stop(procs)
            row = {}
            for b in (1, 32):
                row[f"fp32{b}"] = statistics.median(r[f"latency_ms_b{b}"] for r in base)
                row[f"int8{b}"] = statistics.median(r[f"latency_ms_b{b}"] for r in reps)
                row[f"su{b}"] = [r[f"speedup_b{b}"] for r in reps]
            noisy = sum(r["latency_quality"] != "clean" for r in reps)
            widest = max(max(r["speedup_hi_b32"] - r["speedup_lo_b32"], r["speedup_hi_b1"] - r["speedup_lo_b1"])
                         for r in reps)
            if n == 0:
                quiet = {b: statistics.median(row[f"su{b}"]) for b in (1, 32)}
            wrong = sum(1 for r in reps if r["latency_quality"] == "clean" and quiet and any(
                abs(r[f"speedup_b{b}"] / quiet[b] - 1) > 0.20 for b in (1, 32)))
            print(f"{n:>7} {row['fp321']:>11.3f} {row['int81']:>11.3f} {statistics.median(row['su1']):>10.2f}x "
                  f"{spread(row['su1']):>6.2f} {row['fp3232']:>12.3f} {row['int832']:>12.3f} "
                  f"{statistics.median(row['su32']):>11.2f}x {spread(row['su32']):>6.2f} {widest:>8.2f} "
                  f"{noisy:>5} {wrong:>5} {load():>15}")
        fx = plain_fx(built, batches)
        for b in (1, 32):
            # a parity check needs a narrower interval than a point: more rounds, a longer budget
            t = timing.time_forms({"ours": ours, "fx": fx}, timing.batch_of(example, b), reference="fx",
                                  policy=timing.Policy(rounds=11, max_rounds=41, target_spread=1.05, budget_s=20.0))
            s = t.speedups["ours"]
            print(f"ours vs plain FX int8, batch {b}: {s.median:.3f}x [{s.lo:.3f}, {s.hi:.3f}] ({t.quality}; "
                  f"load {load()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
