"""The two int8 backends side by side: torch.ao FX (`fx`, the default) and PT2E (`pt2e`, `pt2e_eager`).

Per model: the BN-folded float model is converted by each backend on the same calibration batches (x86
engine, 10 batches of 32; --quick: 4), then every form is timed in the same interleaved rounds by the
timing protocol (engine/deploy/timing.py: fp32 is the reference, so `x_fp32` is a speed-up read off the
same rounds) at batch 1 and 32; accuracy is the test split's, measured on the form that runs (for `pt2e`
the compiled module). `convert_s` is the wall time of the whole conversion (export, calibration, convert;
for `pt2e` also the compile), `compile_s` the compile's part (batch 1 and 32, one Inductor compile each).
`pt2e_eager` is the uncompiled PT2E program (dequantize + fp32 ops): int8 numerics, no speed-up expected.
A backend that cannot convert a model gets a row with its error. Nothing is saved.
"""

from __future__ import annotations

import os
import time

import torch

from engine.core.machine import describe, fingerprint
from engine.deploy import timing
from engine.deploy.int8 import INT8_BACKENDS, Int8ConversionError
from engine.deploy.measure import ModelForm, measure
from engine.deploy.quantized import fold_batchnorm
from engine.methods.tasks import open_checkpoint
from engine.model.data import calibration_batches

BACKENDS = ("fx", "pt2e_eager", "pt2e")


def rows(checkpoints: dict[str, str], args) -> list[dict]:
    calib = 4 if args.quick else 10
    policy = timing.QUICK if args.quick else timing.Policy()
    print(f"  backends: {describe(fingerprint())}; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"torch {torch.__version__}, {calib} calibration batches", flush=True)
    out: list[dict] = []
    for name, ckpt in checkpoints.items():
        model, _, data = open_checkpoint(ckpt)
        folded = fold_batchnorm(model)
        batches = calibration_batches(data, calib, 32, 0)
        fp32_acc = measure(folded, data, latency=False).accuracy
        runners, found = {"fp32": folded}, {"fp32": {"model": name, "backend": "fp32", "accuracy": fp32_acc}}
        for backend in BACKENDS:
            t0 = time.perf_counter()
            try:
                int8 = INT8_BACKENDS.get(backend).static(folded, batches, "x86")
            except Int8ConversionError as e:
                out.append({"model": name, "backend": backend, "error": str(e)[:160]})
                print(f"  backends: {name} {backend} failed: {e}", flush=True)
                continue
            seconds = time.perf_counter() - t0
            form = ModelForm(runner=int8.runner, backend=int8.backend, weight_bits=int8.weight_bits,
                             quant_groups=int8.layer_groups, artifact=int8.artifact)
            acc = measure(folded, data, form, latency=False).accuracy
            runners[backend] = int8.runner
            found[backend] = {"model": name, "backend": backend, "accuracy": acc, "drop": fp32_acc - acc,
                              "int8_layers": len(int8.layer_groups), "float_layers": len(int8.float_layers),
                              "convert_s": seconds, "compile_s": int8.extra.get("compile_s", ""),
                              "file_bytes": len(int8.artifact)}
            print(f"  backends: {name} {backend} converted in {seconds:.1f} s", flush=True)
        example = data.test.tensors()[0][:32]
        for b in (1, 32):
            t = timing.time_forms(runners, timing.batch_of(example, b), reference="fp32", policy=policy)
            for form_name, row in found.items():
                row[f"ms_b{b}"] = t.forms[form_name].median_ms
                if form_name in t.speedups:
                    row[f"x_fp32_b{b}"] = t.speedups[form_name].median
                row[f"timing_b{b}"] = t.quality[:30]
        out.extend(found.values())
        print(f"  backends: {name} timed; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return out
