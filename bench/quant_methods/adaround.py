"""AdaRound against round-to-nearest (`fake`) at the same grid: per model, per granularity, per width.

Each row: the float accuracy (BatchNorm folded), round-to-nearest's, AdaRound's, their difference and
the seconds AdaRound took (all layers, one width). Both methods use the same scales (symmetric minmax),
so the only difference is the rounding. Issue #24's targets are checked on the rows and printed as
`target_*` rows: AdaRound at 4 bits within 1 point of float on cnn_l (per-channel), and AdaRound above
nearest at 3 bits on every model (per-channel and per-tensor as run).

Accuracy is on the 1000 test images (one image is 0.1 point, and a difference of a few images is
noise), so each row also carries measures with less noise, all on images neither trained on nor used
for calibration unless said:
- `acc_unseen_*`: accuracy on val + test (1500 images, none trained on);
- `kl_*`: mean KL(float || quantized) of the output distributions on val + test, and `kl_rest_*` on the
  training images not used for calibration (trained on, but not seen by AdaRound): how far each rounding
  moves the model from float, where accuracy ties;
- `z_unseen`: McNemar's z for AdaRound against nearest on val + test ((images only AdaRound gets right
  - images only nearest gets right) / sqrt(their sum)); |z| < 2 is within noise;
- `err_ratio`: the geometric mean over layers of AdaRound's output error over nearest's on the
  calibration inputs (below 1: AdaRound reconstructs the layers better), and `layers_better` the count
  of layers where it is lower.

--quick: 3 bits, both granularities, ITERATIONS_QUICK steps per layer; otherwise 8, 4, 3, 2 bits, both
granularities, the method's default steps per layer. `--adaround-steps N` sets the steps either way.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.core.context import RunContext
from engine.deploy.formats import load_variant
from engine.methods.quant import FakeQuantConfig, quantize
from engine.methods.quant.adaround import AdaRoundConfig
from engine.methods.quant.common import Output
from engine.methods.tasks import open_checkpoint
from engine.model.data import Dataset

WIDTHS, WIDTHS_QUICK = (8, 4, 3, 2), (3,)
GRANULARITIES = GRANULARITIES_QUICK = ("per_channel", "per_tensor")
ITERATIONS, ITERATIONS_QUICK = AdaRoundConfig().iterations, 100


def held_out(data: Dataset, cfg: AdaRoundConfig) -> dict[str, tuple[Tensor, Tensor]]:
    """'test', 'unseen' (val + test) and 'rest' (training images not in AdaRound's calibration set)."""
    n = cfg.calib_batches * cfg.calib_batch_size
    calib = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed))[:n]
    if not torch.equal(data.train.x[calib], data.calibration(n, cfg.seed).x):  # as Dataset.calibration draws
        raise RuntimeError("the calibration images are not the ones Dataset.calibration draws")
    keep = torch.ones(len(data.train), dtype=torch.bool)
    keep[calib] = False
    (xv, yv), (xt, yt) = data.val.tensors(), data.test.tensors()
    x_rest, y_rest = data.train.tensors()
    return {"test": (xt, yt), "unseen": (torch.cat([xv, xt]), torch.cat([yv, yt])),
            "rest": (x_rest[keep], y_rest[keep])}


def logits(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.cat([model.eval()(chunk) for chunk in x.split(500)])


def compare(out: Tensor, ref: Tensor, y: Tensor) -> dict:
    """Accuracy, per-image correctness and mean KL(ref || out) of one model's logits on one set."""
    kl = F.kl_div(F.log_softmax(out, 1), F.log_softmax(ref, 1), reduction="none", log_target=True).sum(1)
    right = out.argmax(1) == y
    return {"acc": float(right.float().mean()), "right": right, "kl": float(kl.mean())}


def mcnemar_z(a: Tensor, b: Tensor) -> float:
    """(only a right - only b right) / sqrt(their sum): the paired test of two classifiers on one set."""
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    return (only_a - only_b) / math.sqrt(only_a + only_b) if only_a + only_b else 0.0


def rows(checkpoints: dict[str, str], args) -> list[dict]:
    widths = WIDTHS_QUICK if args.quick else WIDTHS
    granularities = GRANULARITIES_QUICK if args.quick else GRANULARITIES
    iterations = getattr(args, "adaround_steps", None) or (ITERATIONS_QUICK if args.quick else ITERATIONS)
    out: list[dict] = []
    for name, checkpoint in checkpoints.items():
        model, meta, data = open_checkpoint(checkpoint)
        sets = held_out(data, AdaRoundConfig())
        ref = {k: logits(model, x) for k, (x, _) in sets.items()}
        for granularity in granularities:
            with tempfile.TemporaryDirectory(prefix="bench-adaround-") as tmp:
                common = {"checkpoint": checkpoint, "bits": widths, "granularity": granularity, "latency": False}
                # each variant is saved, then reloaded for the held-out measures
                nearest = {p.level: p for p in quantize(model, data, FakeQuantConfig(**common), RunContext(),
                                                       Output(Path(tmp) / "rtn", meta, checkpoint))}
                runs = quantize(model, data, AdaRoundConfig(**common, iterations=iterations), RunContext(),
                                Output(Path(tmp) / "ada", meta, checkpoint))
                base = runs[0].measurement.accuracy
                for p in runs[1:]:
                    rtn, ada = nearest[p.level].measurement.accuracy, p.measurement.accuracy
                    m = {which: {k: compare(logits(load_variant(point.artifact)[0], x), ref[k], y)
                                 for k, (x, y) in sets.items()}
                         for which, point in (("nearest", nearest[p.level]), ("adaround", p))}
                    layers = p.extra["layers"].values()
                    ratios = [v["error_adaround"] / v["error_nearest"] for v in layers if v["error_nearest"] > 0]
                    out.append({
                        "model": name, "granularity": granularity, "bits": int(p.level), "float": base,
                        "nearest": rtn, "adaround": ada, "ada_minus_nearest": ada - rtn,
                        "ada_minus_float": ada - base, "loss_nearest": nearest[p.level].measurement.loss,
                        "loss_adaround": p.measurement.loss,
                        "acc_unseen_float": compare(ref["unseen"], ref["unseen"], sets["unseen"][1])["acc"],
                        "acc_unseen_nearest": m["nearest"]["unseen"]["acc"],
                        "acc_unseen_adaround": m["adaround"]["unseen"]["acc"],
                        "z_unseen": mcnemar_z(m["adaround"]["unseen"]["right"], m["nearest"]["unseen"]["right"]),
                        "kl_nearest": m["nearest"]["unseen"]["kl"], "kl_adaround": m["adaround"]["unseen"]["kl"],
                        "kl_rest_nearest": m["nearest"]["rest"]["kl"], "kl_rest_adaround": m["adaround"]["rest"]["kl"],
                        "err_ratio": math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else float("nan"),
                        "layers_better": f"{sum(v['error_adaround'] < v['error_nearest'] for v in layers)}/"
                                         f"{len(layers)}",
                        "flipped_%": 100 * p.extra["flipped_fraction"],
                        "adaround_s": p.extra["adaround_seconds"], "iterations": iterations, "load": load()})
                    r = out[-1]
                    print(f"  adaround: {name} {granularity} {r['bits']} bits: test acc nearest {rtn:.3f} / AdaRound "
                          f"{ada:.3f}; val+test {r['acc_unseen_nearest']:.4f} / {r['acc_unseen_adaround']:.4f} "
                          f"(z {r['z_unseen']:+.1f}); KL {r['kl_nearest']:.4f} / {r['kl_adaround']:.4f}; layer error "
                          f"ratio {r['err_ratio']:.3f}; {r['adaround_s']:.0f} s at load {r['load']}", flush=True)
    return out + targets(out)


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def targets(results: list[dict]) -> list[dict]:
    """Issue #24's two AdaRound targets, met or not, from the rows measured (only those that ran). `met` is
    on the test accuracy as the issue states it; `clear` says whether the less noisy measures agree
    (KL to float lower on unseen and on the rest of train, and for the 3-bit target McNemar's z >= 2)."""
    found = []
    cnn4 = [r for r in results if r["model"] == "cnn_l" and r["bits"] == 4 and r["granularity"] == "per_channel"]
    for r in cnn4:
        found.append({"model": "target_4bit_within_1pt_of_float", "granularity": r["granularity"], "bits": 4,
                      "float": r["float"], "adaround": r["adaround"], "met": r["float"] - r["adaround"] <= 0.01,
                      "clear": r["acc_unseen_float"] - r["acc_unseen_adaround"] <= 0.01})
    for r in (r for r in results if r["bits"] == 3):
        kl_lower = r["kl_adaround"] < r["kl_nearest"] and r["kl_rest_adaround"] < r["kl_rest_nearest"]
        found.append({"model": f"target_3bit_above_nearest:{r['model']}", "granularity": r["granularity"], "bits": 3,
                      "nearest": r["nearest"], "adaround": r["adaround"], "met": r["adaround"] > r["nearest"],
                      "kl_lower": kl_lower, "z_unseen": r["z_unseen"],
                      "clear": kl_lower and r["z_unseen"] >= 2})
    return found
