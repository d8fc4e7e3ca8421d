"""Accuracy-aware int8 (`ptq_int8 --max-drop`, INC's accuracy criterion, NNCF's quantize_with_accuracy_control).

Per model: the real int8 model (`ptq_int8`, x86 engine, 10 calibration batches; --quick: 4) with every layer int8
(max_drop none) and with max_drop 0.2 and 0.5 points of validation accuracy (--quick: 0.2 only): the validation
drop reached, the test accuracy and its drop, the layers kept float, how many int8 conversions the search made,
and the latency at batch 1 and 32 with the speed-up over fp32 (timed beside it) and over the all-int8 model (timed
beside it, only when a layer was kept float). Nothing is saved.
"""

from __future__ import annotations

import time

from engine.core.context import RunContext
from engine.methods.quant import PTQInt8Config, quantize
from engine.methods.tasks import open_checkpoint


def _row(model: str, max_drop, base, point, seconds: float) -> dict:
    m, e = point.measurement, point.extra
    kept = e.get("keep_float", [])
    row = {"model": model, "max_drop": "none" if max_drop is None else max_drop,
           "val_drop": e.get("val_drop", ""), "val_drop_all_int8": e.get("val_drop_all_int8", ""),
           "met": {True: "yes", False: "no (all float)"}.get(e.get("max_drop_met"), ""),
           "fp32_acc": base.measurement.accuracy, "int8_acc": m.accuracy,
           "test_drop": 100 * (base.measurement.accuracy - m.accuracy), "float_layers": len(kept),
           "kept_float": ",".join(kept)[:60], "conversions": e.get("conversions", 1),
           "ms_b1": m.latency_ms_b1, "ms_b32": m.latency_ms_b32,
           "x_fp32_b1": m.speedup_b1, "x_fp32_b32": m.speedup_b32,
           "x_int8_b1": e.get("speedup_vs_all_int8_b1", ""), "x_int8_b32": e.get("speedup_vs_all_int8_b32", ""),
           "s": seconds}
    return row


def rows(checkpoints: dict[str, str], args) -> list[dict]:
    drops = (None, 0.2) if args.quick else (None, 0.2, 0.5)
    calib = 4 if args.quick else 10
    out: list[dict] = []
    for name, ckpt in checkpoints.items():
        model, _, data = open_checkpoint(ckpt)
        for max_drop in drops:
            t0 = time.perf_counter()
            cfg = PTQInt8Config(checkpoint=ckpt, calib_batches=calib, save=False, latency=True,
                                max_drop=None if max_drop is None else max_drop / 100)  # points -> fraction
            base, point = quantize(model, data, cfg, RunContext())
            out.append(_row(name, max_drop, base, point, time.perf_counter() - t0))
            print(f"  accuracy_aware: {name} max_drop={max_drop} done in {time.perf_counter() - t0:.0f} s",
                  flush=True)
    return out
