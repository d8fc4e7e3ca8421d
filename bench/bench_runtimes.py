"""Latency on each runtime: torch eager fp32, torch int8 (torch.ao FX), torch bf16 (where the CPU has BF16 or
AMX), ONNX Runtime fp32 and ONNX Runtime int8 (QDQ), as ratios to torch eager fp32 measured in the same rounds.

For cnn_l (1x28x28), the zoo's resnet18 (3x32x32, 3x3 stem) and mobilenet_v2 (3x32x32), 10 classes,
at batch 1 and 32. Weights are random (seeded): latency does not depend on their values, only on
the graph, so nothing is trained. Each form is what the engine runs for it:

- torch fp32: the model as built (BatchNorm unfolded), eager, as a float checkpoint is measured;
- torch int8: BatchNorm folded, then the engine's int8 backend (engine/deploy/int8.py, torch.ao FX,
  engine x86 unless --engine), calibrated on 4 random batches;
- torch bf16: the runtime `torch_bf16` (engine/deploy/bf16.py), weights and compute in bfloat16; left out,
  and said so, on a CPU without AVX512-BF16 or AMX-BF16;
- ORT fp32: engine.deploy.onnx.to_onnx of the fp32 model, run by engine.deploy.onnx.OrtRunner (ONNX
  Runtime CPUExecutionProvider, all graph optimisations, intra-op threads = torch's);
- ORT int8: the folded model exported and made a QDQ model by engine.deploy.onnx.quantize_qdq
  (onnxruntime.quantization.quantize_static, per-channel weights, same calibration batches).

All forms are timed side by side by the timing protocol (engine/deploy/timing.py: rounds with the order
rotated, rounds disturbed by other processes run again, a 95 % bootstrap interval on each ratio, the quality
printed per row). Ratio = form's time / torch fp32's time: below 1 is faster. The CPU's flags (AVX2, AVX-512,
VNNI, BF16, AMX), the thread count and the load average are printed.

    .venv/bin/python bench/bench_runtimes.py [--rounds 7] [--threads N] [--models cnn_l,...]
                                             [--engine x86|onednn|qnnpack] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.deploy import timing  # noqa: E402
from engine.deploy.bf16 import bf16_form, has_bf16  # noqa: E402
from engine.deploy.int8 import INT8_BACKENDS  # noqa: E402
from engine.deploy.measure import ModelForm  # noqa: E402
from engine.deploy.onnx import OrtRunner, ort_version, quantize_qdq, to_onnx  # noqa: E402  # noqa: E402
from engine.deploy.quantized import fold_batchnorm  # noqa: E402
from engine.model.zoo import build_model  # noqa: E402

MODELS = {"cnn_l": (1, 28), "resnet18": (3, 32), "mobilenet_v2": (3, 32)}
FORMS = ("torch fp32", "torch int8", "torch bf16", "ORT fp32", "ORT int8")
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16")


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
    """The runnable forms of one architecture (random weights), and how long making them took."""
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
    out = {"torch fp32": model, "torch int8": int8.runner}
    if has_bf16():
        t0 = time.perf_counter()
        out["torch bf16"] = bf16_form(model, ModelForm()).runner
        made["torch bf16"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["ORT fp32"] = OrtRunner(to_onnx(model, example, name=arch))
    made["ORT fp32"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["ORT int8"] = OrtRunner(quantize_qdq(to_onnx(folded, example, name=arch), calibration, arch))
    made["ORT int8"] = time.perf_counter() - t0
    return out, made


def bench(arch: str, policy: timing.Policy, engine: str) -> dict:
    """Every form timed side by side by the timing protocol, at batch 1 and 32: median ms, and the ratio to torch
    eager fp32 (its time / fp32's, the inverse of the protocol's speed-up, so below 1 is faster) with its interval."""
    runners, made = forms(arch, engine)
    channels, side = MODELS[arch]
    out: dict = {"made_s": made}
    for batch in (1, 32):
        x = torch.randn(batch, channels, side, side)
        t = timing.time_forms(runners, x, reference="torch fp32", policy=policy)
        row = {}
        for name, f in t.forms.items():
            s = t.speedups.get(name)
            row[name] = {"ms": f.median_ms, "ratio": 1 / s.median if s else 1.0,
                         "ratio_lo": 1 / s.hi if s else 1.0, "ratio_hi": 1 / s.lo if s else 1.0}
        out[batch] = {**row, "quality": t.quality, "threads": t.threads}
    return out


def table(results: dict) -> str:
    forms_seen = [f for f in FORMS if any(f in r[1] for r in results.values())]
    lines = ["| model | batch | " + " | ".join(forms_seen) + " | timing |",
             "|---|---:|" + "---:|" * len(forms_seen) + "---|"]
    for arch, r in results.items():
        for batch in (1, 32):
            row = r[batch]
            cells = [f"{row[f]['ms']:.2f} ms ({row[f]['ratio']:.2f}, {row[f]['ratio_lo']:.2f}-{row[f]['ratio_hi']:.2f})"
                     if f in row else "-" for f in forms_seen]
            lines.append(f"| {arch} | {batch} | " + " | ".join(cells) + f" | {row['quality']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="clean rounds per batch size (the protocol's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (and so ORT intra-op threads)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--engine", default="x86", help="torch's quantized engine for the int8 model")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = cpu_info()
    header = {"cpu": cpu["model"], "flags": cpu["flags"], "vnni": cpu["vnni"], "threads": torch.get_num_threads(),
              "torch": torch.__version__, "onnxruntime": ort_version(), "engine": args.engine,
              "clock": "wall time, timing protocol (engine/deploy/timing.py)",
              "load_before": os.getloadavg()}
    if not args.json:
        flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in cpu["flags"].items())
        print(f"CPU: {cpu['model']}; {flags}")
        print(f"threads {header['threads']}, torch {header['torch']}, onnxruntime {header['onnxruntime']}, "
              f"int8 engine {args.engine}, {header['clock']}; load average {' '.join(f'{v:.2f}' for v in header['load_before'])}")
        print("random weights (latency depends on the graph, not the values); cell = median ms (time ratio to torch "
              "eager fp32 in the same rounds, below 1 is faster, with its 95 % interval)", flush=True)
    t0 = time.perf_counter()
    policy = timing.Policy(rounds=args.rounds, max_rounds=max(args.rounds, 21))
    results = {arch: bench(arch, policy, args.engine)
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
