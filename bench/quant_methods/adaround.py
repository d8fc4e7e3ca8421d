"""AdaRound against round-to-nearest (`fake`) at the same grid: per model, per granularity, per width.

Each row: the float accuracy (BatchNorm folded), round-to-nearest's, AdaRound's, their difference and
the seconds AdaRound took (all layers, one width). Both methods use the same scales (symmetric minmax),
so the only difference is the rounding. Issue #24's targets are checked on the rows and printed as
`target_*` rows: AdaRound at 4 bits within 1 point of float on cnn_l (per-channel), and AdaRound above
nearest at 3 bits on every model (per-channel and per-tensor as run).

Accuracy is on the 1000 test images (one image is 0.1 point), so the test loss of each is printed too:
where nearest already sits at float's accuracy, the loss says which rounding is closer to float.
`layers_better` counts the layers whose output error (on the calibration inputs) AdaRound lowered.

--quick: 3 bits, both granularities, ITERATIONS_QUICK steps per layer; otherwise 8, 4, 3, 2 bits, both
granularities, the method's default steps per layer.
"""

from __future__ import annotations

import os

from engine.core.context import RunContext
from engine.methods.quant import FakeQuantConfig, quantize
from engine.methods.quant.adaround import AdaRoundConfig
from engine.methods.tasks import open_checkpoint

WIDTHS, WIDTHS_QUICK = (8, 4, 3, 2), (3,)
GRANULARITIES = GRANULARITIES_QUICK = ("per_channel", "per_tensor")
ITERATIONS, ITERATIONS_QUICK = AdaRoundConfig().iterations, 100


def rows(checkpoints: dict[str, str], args) -> list[dict]:
    widths = WIDTHS_QUICK if args.quick else WIDTHS
    granularities = GRANULARITIES_QUICK if args.quick else GRANULARITIES
    iterations = ITERATIONS_QUICK if args.quick else ITERATIONS
    out: list[dict] = []
    for name, checkpoint in checkpoints.items():
        model, _, data = open_checkpoint(checkpoint)
        for granularity in granularities:
            common = {"checkpoint": checkpoint, "bits": widths, "granularity": granularity, "latency": False,
                      "save": False}
            nearest = {p.level: p for p in quantize(model, data, FakeQuantConfig(**common), RunContext())}
            runs = quantize(model, data, AdaRoundConfig(**common, iterations=iterations), RunContext())
            base = runs[0].measurement.accuracy
            for p in runs[1:]:
                rtn, ada = nearest[p.level].measurement.accuracy, p.measurement.accuracy
                layers = p.extra["layers"].values()
                out.append({"model": name, "granularity": granularity, "bits": int(p.level), "float": base,
                            "nearest": rtn, "adaround": ada, "ada_minus_nearest": ada - rtn,
                            "ada_minus_float": ada - base, "loss_float": runs[0].measurement.loss,
                            "loss_nearest": nearest[p.level].measurement.loss, "loss_adaround": p.measurement.loss,
                            "layers_better": f"{sum(v['error_adaround'] < v['error_nearest'] for v in layers)}/"
                                             f"{len(layers)}",
                            "flipped_%": 100 * p.extra["flipped_fraction"],
                            "adaround_s": p.extra["adaround_seconds"], "iterations": iterations, "load": load()})
                print(f"  adaround: {name} {granularity} {int(p.level)} bits: nearest {rtn:.3f}, AdaRound {ada:.3f} "
                      f"(loss {out[-1]['loss_nearest']:.4f} / {out[-1]['loss_adaround']:.4f}), "
                      f"{out[-1]['adaround_s']:.0f} s at load {out[-1]['load']}", flush=True)
    return out + targets(out)


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def targets(results: list[dict]) -> list[dict]:
    """Issue #24's two AdaRound targets, met or not, from the rows measured (only those that ran)."""
    found = []
    cnn4 = [r for r in results if r["model"] == "cnn_l" and r["bits"] == 4 and r["granularity"] == "per_channel"]
    for r in cnn4:
        found.append({"model": "target_4bit_within_1pt_of_float", "granularity": r["granularity"], "bits": 4,
                      "float": r["float"], "adaround": r["adaround"],
                      "met": r["float"] - r["adaround"] <= 0.01})
    for r in (r for r in results if r["bits"] == 3):
        found.append({"model": f"target_3bit_above_nearest:{r['model']}", "granularity": r["granularity"], "bits": 3,
                      "nearest": r["nearest"], "adaround": r["adaround"], "met": r["adaround"] > r["nearest"]})
    return found
