"""Quantization speed: fp32 vs real int8 latency, and the time of the standard 12-width sweep.

1. Latency of the fp32 model as trained (eager, with BatchNorm), of the fp32 model with BatchNorm
   folded (the ptq_int8 task's fp32 point) and of the int8 model made by the int8 backend (torch.ao
   FX; engine x86 unless --engine says otherwise), at batch 1 and batch 32, for cnn_l (1x28x28) and resnet18 (3x32x32), untrained
   weights, calibrated on random batches. The three are timed by the protocol every point uses
   (engine/deploy/timing.py): rotated rounds in this process, contention checked, the int8 speed-up the
   median of per-round ratios with its 95 % bootstrap interval, and the quality ("noisy" when clean rounds
   could not be had). The machine (CPU, int8/bf16 ISA features) and the load average are printed beside.
2. The wall time of `quantize.fake` with the 12 widths of seed 003 on the default teacher (cnn_l
   trained 2 epochs on mnist5k), latency included (target: <= 30 s on 2 cores), and the CPU time
   the process used (all threads), which a busy machine disturbs less.

    .venv/bin/python bench/bench_quant.py [--checkpoint DIR] [--rounds 7] [--engine x86|onednn|qnnpack]
                                          [--threads N] [--skip-sweep] [--skip-latency]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.context import RunContext  # noqa: E402
from engine.core.machine import describe, fingerprint  # noqa: E402
from engine.deploy import timing  # noqa: E402
from engine.deploy.int8 import INT8_BACKENDS  # noqa: E402
from engine.deploy.quantized import fold_batchnorm  # noqa: E402
from engine.methods.tasks import run_task  # noqa: E402
from engine.methods.train import TrainTask
from engine.model.data import load_dataset  # noqa: E402
from engine.model.train import TrainConfig  # noqa: E402
from engine.model.zoo import build_model  # noqa: E402

MODELS = [("cnn_l", 1, 28), ("resnet18", 3, 32)]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def latency_ratios(arch: str, channels: int, side: int, rounds: int, threads: int | None, engine: str) -> dict:
    torch.manual_seed(0)
    trained = build_model(arch, 10, channels, side).eval()
    model = fold_batchnorm(trained)
    calib = [torch.randn(32, channels, side, side) for _ in range(4)]
    t0 = time.perf_counter()
    int8 = INT8_BACKENDS.get("fx").static(model, calib, engine)
    convert_s = time.perf_counter() - t0
    out = {"convert_s": convert_s, "int8_layers": len(int8.layer_groups), "float_layers": len(int8.float_layers)}
    forms = {"fp32": model, "fp32_bn": trained, "int8": int8.runner}
    for batch in (1, 32):
        # the protocol every point uses (engine/deploy/timing.py): the three forms in rotated rounds in this
        # process, contention checked, speed-ups over the folded fp32 model with their 95 % intervals
        out[batch] = timing.time_forms(forms, torch.randn(batch, channels, side, side), reference="fp32",
                                       policy=timing.Policy(rounds=max(3, rounds), max_rounds=max(3, rounds, 21)),
                                       threads=threads)
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
    ap.add_argument("--rounds", type=int, default=7, help="clean timing rounds wanted per batch size (at least 3)")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--threads", type=int, help="torch threads for the timing (default: the protocol's choice)")
    ap.add_argument("--engine", default="x86", choices=["x86", "onednn", "qnnpack"], help="int8 kernels")
    args = ap.parse_args()
    print(f"{describe(fingerprint())}; threads {args.threads or timing.default_threads()}, engine {args.engine}, "
          f"backend fx ({INT8_BACKENDS.get('fx').description}); load average {load()}")
    if not args.skip_latency:
        for arch, c, s in MODELS:
            r = latency_ratios(arch, c, s, args.rounds, args.threads, args.engine)
            print(f"{arch} {c}x{s}x{s}: converted in {r['convert_s']:.1f} s, {r['int8_layers']} int8 layers, "
                  f"{r['float_layers']} float")
            for b in (1, 32):
                t = r[b]
                ms = {k: f.median_ms for k, f in t.forms.items()}
                s8, sbn = t.speedups["int8"], t.speedups["fp32_bn"]
                print(f"  batch {b:>2}: fp32 as trained {ms['fp32_bn']:8.2f} ms  fp32 folded {ms['fp32']:8.2f} ms"
                      f"  int8 {ms['int8']:8.2f} ms  int8 speed-up over folded {s8.median:.2f}x "
                      f"[{s8.lo:.2f}, {s8.hi:.2f}], over as-trained {s8.median / sbn.median:.2f}x; {t.quality}; "
                      f"load {load()}")
    if not args.skip_sweep:
        total, cpu, train_s, n, ck = sweep_time(args.checkpoint)
        if train_s:
            print(f"trained the default teacher in {train_s:.1f} s -> {ck}")
        print(f"12-width fake-quant sweep on the default teacher: {n} points in {total:.1f} s wall, "
              f"{cpu:.1f} s CPU (latency timed once, included; target <= 30 s); "
              f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
