"""Quantization speed: fp32 vs real int8 latency, and the time of the standard 12-width sweep.

1. Latency of the fp32 model as trained (eager, with BatchNorm), of the fp32 model with BatchNorm
   folded (the ptq_int8 task's fp32 point) and of the int8 model made by the int8 backend (torch.ao
   FX; engine x86 unless --engine says otherwise), at batch 1 and batch 32, for cnn_l (1x28x28) and resnet18 (3x32x32), untrained
   weights, calibrated on random batches. The three alternate in rounds so they share the machine's
   noise; each ratio fp32 / int8 is taken per round and the median over rounds is printed (target:
   >= 2.5x for resnet18). The load average is printed too: on a shared machine it says how much the
   numbers can be trusted. `--cpu-time` runs on one thread and times each forward by the thread's
   CPU time instead of wall time, which other processes on the machine barely disturb.
2. The wall time of `quantize.fake` with the 12 widths of seed 003 on the default teacher (cnn_l
   trained 2 epochs on mnist5k), latency included (target: <= 30 s on 2 cores), and the CPU time
   the process used (all threads), which a busy machine disturbs less.

    .venv/bin/python bench/bench_quant.py [--checkpoint DIR] [--rounds 5] [--engine x86|onednn|qnnpack]
                                          [--cpu-time | --threads N] [--skip-sweep] [--skip-latency]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.context import RunContext  # noqa: E402
from engine.deploy.int8 import INT8_BACKENDS  # noqa: E402
from engine.deploy.measure import time_forward  # noqa: E402
from engine.deploy.quantized import fold_batchnorm  # noqa: E402
from engine.methods.tasks import run_task  # noqa: E402
from engine.methods.train import TrainTask
from engine.model.data import load_dataset  # noqa: E402
from engine.model.train import TrainConfig  # noqa: E402
from engine.model.zoo import build_model  # noqa: E402

MODELS = [("cnn_l", 1, 28), ("resnet18", 3, 32)]


def latency_ratios(arch: str, channels: int, side: int, rounds: int, seconds: float, cpu_time: bool,
                   engine: str) -> dict:
    torch.manual_seed(0)
    trained = build_model(arch, 10, channels, side).eval()
    model = fold_batchnorm(trained)
    calib = [torch.randn(32, channels, side, side) for _ in range(4)]
    t0 = time.perf_counter()
    int8 = INT8_BACKENDS.get("fx").static(model, calib, engine)
    convert_s = time.perf_counter() - t0
    out = {"convert_s": convert_s, "int8_layers": len(int8.layer_groups), "float_layers": len(int8.float_layers)}
    for batch in (1, 32):
        x = torch.randn(batch, channels, side, side)
        runs = {"fp32_bn": [], "fp32": [], "int8": []}
        for _ in range(rounds):
            for name, fn in (("fp32_bn", trained), ("fp32", model), ("int8", int8.runner)):
                times = time_forward(fn, x, warmup=5 if batch == 1 else 2, max_runs=100 if batch == 1 else 20,
                                     max_seconds=seconds, cpu_time=cpu_time)
                runs[name].append(statistics.median(times))
        ratios = [f / q for f, q in zip(runs["fp32"], runs["int8"])]
        ratios_bn = [f / q for f, q in zip(runs["fp32_bn"], runs["int8"])]
        out[batch] = {"fp32_bn_ms": statistics.median(runs["fp32_bn"]), "fp32_ms": statistics.median(runs["fp32"]),
                      "int8_ms": statistics.median(runs["int8"]), "ratio": statistics.median(ratios),
                      "ratios": ratios, "ratio_bn": statistics.median(ratios_bn)}
    return out


def sweep_time(checkpoint: str | None) -> tuple[float, float, float, int, str]:
    data = load_dataset("mnist5k")
    data.test.tensors()  # a running app has the evaluation tensors cached; so does this timing
    train_s = 0.0
    if checkpoint is None:
        checkpoint = str(Path(tempfile.mkdtemp(prefix="bench-quant-")) / "teacher")  # training makes the directory
        t0 = time.perf_counter()
        run_task("train", TrainTask(dataset="mnist5k", model="cnn_l", out=checkpoint, latency=False,
                                    train=TrainConfig(epochs=2)), RunContext())
        train_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    # not saved, but every point still serialises its packed weights in memory (its file_bytes)
    points = run_task("quantize.fake", {"checkpoint": checkpoint, "latency": True, "save": False}, RunContext())
    return time.perf_counter() - t0, time.process_time() - c0, train_s, len(points), checkpoint


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="a trained cnn_l mnist5k checkpoint (default: train one, 2 epochs)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating fp32/int8 rounds per batch size")
    ap.add_argument("--seconds", type=float, default=1.0, help="timing budget per model per round")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--cpu-time", action="store_true", help="one thread, timed by thread CPU time")
    ap.add_argument("--engine", default="x86", choices=["x86", "onednn", "qnnpack"], help="int8 kernels")
    args = ap.parse_args()
    if args.threads or args.cpu_time:
        torch.set_num_threads(1 if args.cpu_time else args.threads)
    clock = "thread CPU time" if args.cpu_time else "wall time"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {clock}, engine {args.engine}, backend fx "
          f"({INT8_BACKENDS.get('fx').description}); load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    if not args.skip_latency:
        for arch, c, s in MODELS:
            r = latency_ratios(arch, c, s, args.rounds, args.seconds, args.cpu_time, args.engine)
            print(f"{arch} {c}x{s}x{s}: converted in {r['convert_s']:.1f} s, {r['int8_layers']} int8 layers, "
                  f"{r['float_layers']} float")
            for b in (1, 32):
                print(f"  batch {b:>2}: fp32 as trained {r[b]['fp32_bn_ms']:8.2f} ms  fp32 folded {r[b]['fp32_ms']:8.2f} ms"
                      f"  int8 {r[b]['int8_ms']:8.2f} ms  ratio folded/int8 = {r[b]['ratio']:.2f}x "
                      f"(rounds {[round(x, 2) for x in r[b]['ratios']]}), as-trained/int8 = {r[b]['ratio_bn']:.2f}x")
    if not args.skip_sweep:
        total, cpu, train_s, n, ck = sweep_time(args.checkpoint)
        if train_s:
            print(f"trained the default teacher in {train_s:.1f} s -> {ck}")
        print(f"12-width fake-quant sweep on the default teacher: {n} points in {total:.1f} s wall, "
              f"{cpu:.1f} s CPU (latency timed once, included; target <= 30 s); "
              f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
