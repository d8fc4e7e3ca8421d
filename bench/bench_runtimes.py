"""Latency on each runtime: torch eager fp32, torch int8 (torch.ao FX), ONNX Runtime fp32 and ONNX Runtime
int8 (QDQ), as ratios to torch eager fp32 measured in the same run.

For cnn_l (1x28x28), the zoo's resnet18 (3x32x32, 3x3 stem) and mobilenet_v2 (3x32x32), 10 classes,
at batch 1 and 32. Weights are random (seeded): latency does not depend on their values, only on
the graph, so nothing is trained. Each form is what the engine runs for it:

- torch fp32: the model as built (BatchNorm unfolded), eager, as a float checkpoint is measured;
- torch int8: BatchNorm folded, then the engine's int8 backend (engine/deploy/int8.py, torch.ao FX,
  engine x86 unless --engine), calibrated on 4 random batches;
- ORT fp32: engine.deploy.onnx.to_onnx of the fp32 model, run by engine.deploy.onnx.OrtRunner (ONNX
  Runtime CPUExecutionProvider, all graph optimisations, intra-op threads = torch's);
- ORT int8: the folded model exported and made a QDQ model by engine.deploy.onnx.quantize_qdq
  (onnxruntime.quantization.quantize_static, per-channel weights, same calibration batches).

The four forms alternate in rounds so they share the machine's noise; each form's time is the median
of its per-round medians (engine.deploy.measure.time_forward, wall time), and each ratio is taken per round
and its median printed (ratio = form's time / torch fp32's time: below 1 is faster). The CPU's
flags (AVX2, AVX-512, VNNI, AMX), the thread count and the load average are printed: int8 kernels
depend on VNNI, and on a shared machine the load says how far to trust the numbers.

    .venv/bin/python bench/bench_runtimes.py [--rounds 3] [--seconds 1.0] [--threads N | --cpu-time] [--models cnn_l,...]
                                             [--engine x86|onednn|qnnpack] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.deploy.int8 import INT8_BACKENDS  # noqa: E402
from engine.deploy.measure import time_forward  # noqa: E402
from engine.deploy.onnx import OrtRunner, ort_version, quantize_qdq, to_onnx  # noqa: E402  # noqa: E402
from engine.deploy.quantized import fold_batchnorm  # noqa: E402
from engine.model.zoo import build_model  # noqa: E402

MODELS = {"cnn_l": (1, 28), "resnet18": (3, 32), "mobilenet_v2": (3, 32)}
FORMS = ("torch fp32", "torch int8", "ORT fp32", "ORT int8")
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8")


def cpu_info() -> dict:
    """The CPU model and which of the SIMD flags int8 and fp32 kernels care about it has."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())  # the first processor's
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", platform.processor() or "?"), "flags": {f: f in flags for f in FLAGS},
            "vnni": bool({"avx512_vnni", "avx_vnni"} & flags)}


def forms(arch: str, engine: str) -> tuple[dict, dict]:
    """The four runnable forms of one architecture (random weights), and how long making them took."""
    channels, side = MODELS[arch]
    torch.manual_seed(0)
    model = build_model(arch, 10, channels, side).eval()
    folded = fold_batchnorm(model)
    calibration = [torch.randn(32, channels, side, side) for _ in range(4)]
    example = calibration[0][:2]
    made = {}
    t0 = time.perf_counter()
    int8 = INT8_BACKENDS.get("fx").static(folded, calibration, engine)
    made["torch int8"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ort_fp32 = OrtRunner(to_onnx(model, example, name=arch))
    made["ORT fp32"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ort_int8 = OrtRunner(quantize_qdq(to_onnx(folded, example, name=arch), calibration, arch))
    made["ORT int8"] = time.perf_counter() - t0
    return {"torch fp32": model, "torch int8": int8.runner, "ORT fp32": ort_fp32, "ORT int8": ort_int8}, made


def bench(arch: str, rounds: int, seconds: float, engine: str, cpu_time: bool = False) -> dict:
    runners, made = forms(arch, engine)
    channels, side = MODELS[arch]
    out: dict = {"made_s": made}
    for batch in (1, 32):
        x = torch.randn(batch, channels, side, side)
        runs: dict[str, list[float]] = {f: [] for f in FORMS}
        for _ in range(rounds):
            for name in FORMS:
                times = time_forward(runners[name], x, warmup=10 if batch == 1 else 3,
                                     max_runs=200 if batch == 1 else 50, max_seconds=seconds, cpu_time=cpu_time)
                runs[name].append(statistics.median(times))
        base = runs["torch fp32"]
        out[batch] = {name: {"ms": statistics.median(runs[name]),
                             "ratio": statistics.median([t / b for t, b in zip(runs[name], base)])}
                      for name in FORMS}
    return out


def table(results: dict) -> str:
    lines = ["| model | batch | torch eager fp32 | torch int8 (FX) | ORT fp32 | ORT int8 (QDQ) |",
             "|---|---:|---:|---:|---:|---:|"]
    for arch, r in results.items():
        for batch in (1, 32):
            row = r[batch]
            cells = [f"{row['torch fp32']['ms']:.2f} ms (1.00)"]
            cells += [f"{row[f]['ms']:.2f} ms ({row[f]['ratio']:.3g})" for f in FORMS[1:]]
            lines.append(f"| {arch} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="time limit per form, batch and round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (and so ORT intra-op threads)")
    parser.add_argument("--cpu-time", action="store_true", help="one thread, timed by its CPU time: steadier on "
                                                                 "a busy machine (ORT then runs on the calling thread)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--engine", default="x86", help="torch's quantized engine for the int8 model")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.cpu_time:
        torch.set_num_threads(1)
    elif args.threads:
        torch.set_num_threads(args.threads)
    cpu = cpu_info()
    header = {"cpu": cpu["model"], "flags": cpu["flags"], "vnni": cpu["vnni"], "threads": torch.get_num_threads(),
              "torch": torch.__version__, "onnxruntime": ort_version(), "engine": args.engine,
              "clock": "thread CPU time" if args.cpu_time else "wall time",
              "load_before": os.getloadavg()}
    if not args.json:
        flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in cpu["flags"].items())
        print(f"CPU: {cpu['model']}; {flags}")
        print(f"threads {header['threads']}, torch {header['torch']}, onnxruntime {header['onnxruntime']}, "
              f"int8 engine {args.engine}, {header['clock']}; load average {' '.join(f'{v:.2f}' for v in header['load_before'])}")
        print("random weights (latency depends on the graph, not the values); cell = median ms (ratio to torch "
              "eager fp32 of the same run, below 1 is faster)", flush=True)
    t0 = time.perf_counter()
    results = {arch: bench(arch, args.rounds, args.seconds, args.engine, args.cpu_time)
               for arch in args.models.split(",")}
    header["load_after"] = os.getloadavg()
    header["wall_s"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**header, "results": {a: {str(k): v for k, v in r.items()} for a, r in results.items()}},
                         indent=2))
        return
    print(table(results))
    print(f"wall {header['wall_s']:.0f} s; load average after {' '.join(f'{v:.2f}' for v in header['load_after'])}")


if __name__ == "__main__":
    main()
