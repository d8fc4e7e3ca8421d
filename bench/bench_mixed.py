"""Mixed-precision search speed: wall time, CPU time and evaluations of `quantize --method mixed`.

For each model (cnn_l and resnet20 trained on mnist5k; trained here, 2 and 1 epochs, unless given),
runs `--search sensitivity` (target: <= 30 s on cnn_l, <= 5 min on resnet20 on 2 cores) and
`--search greedy` with the prefix activation cache, and on cnn_l also greedy without the cache
(every candidate a full forward: the search as it was before the cache; target: cached >= 2x
faster). A greedy run that would take hours is cut off after --greedy-budget-s seconds: it then
reports the steps it took and the time per step. Every run prints its final (average bits, test
accuracy, validation accuracy), the validation evaluations it made and how many ran the whole
model (the rest ran from a cached layer input), and the load average (2 shared cores: CPU time is
the steadier number).

    .venv/bin/python bench/bench_mixed.py [--cnn-l DIR] [--resnet20 DIR] [--models cnn_l,resnet20]
                                          [--searches sensitivity,greedy] [--greedy-budget-s 300]
                                          [--skip-uncached]
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

from engine.context import RunContext  # noqa: E402
from engine.errors import Cancelled  # noqa: E402
from engine.quant import MixedPrecisionConfig  # noqa: E402
from engine.quant.common import Output  # noqa: E402
from engine.quant.mixed import mixed_precision  # noqa: E402
from engine.tasks import TrainTask, open_checkpoint, run_task  # noqa: E402
from engine.train import TrainConfig  # noqa: E402

EPOCHS = {"cnn_l": 2, "resnet20": 1}


class TimedContext(RunContext):
    """Keeps every point with the time it arrived, and cancels the run once `budget_s` has passed."""

    def __init__(self, budget_s: float | None) -> None:
        super().__init__()
        self.t0, self.budget_s = time.perf_counter(), budget_s
        self.arrivals: list[float] = []
        self.stop = ""

    def log_point(self, point) -> None:
        super().log_point(point)
        self.arrivals.append(time.perf_counter() - self.t0)
        if self.budget_s is not None and self.arrivals[-1] > self.budget_s:
            self.cancel.cancel()

    def log_event(self, message: str, level: str = "info") -> None:
        if message.startswith("stopped:"):
            self.stop = message


def checkpoint(arch: str, given: str | None) -> str:
    if given:
        return given
    out = str(Path(tempfile.mkdtemp(prefix="bench-mixed-")) / arch)
    t0 = time.perf_counter()
    run_task("train", TrainTask(dataset="mnist5k", model=arch, out=out, latency=False,
                                train=TrainConfig(epochs=EPOCHS[arch])), RunContext())
    print(f"trained {arch} ({EPOCHS[arch]} epochs) in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return out


def run(arch: str, ck: str, search: str, cached: bool, budget_s: float | None) -> None:
    model, _, data = open_checkpoint(ck)
    data.test.tensors(), data.val.tensors()  # a running app has these cached
    cfg = MixedPrecisionConfig(search=search, latency=False, save=False)
    ctx = TimedContext(budget_s)
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    cut = False
    try:
        mixed_precision(model, data, cfg, ctx, Output(), cached=cached)
    except Cancelled:
        cut = True
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    last = ctx.points[-1]
    steps = last.extra["step"]
    label = f"{arch:8} {search:11} {'cached' if cached else 'uncached':8}"
    how = f"cut off after {budget_s:.0f} s" if cut else ctx.stop
    print(f"{label} {wall:7.1f} s wall {cpu:7.1f} s CPU  {len(ctx.points):3} points {steps:3} steps "
          f"({wall / max(1, steps):.1f} s/step)  evaluations {last.extra['evaluations']:4} "
          f"(full forwards {last.extra['full_evaluations']:4})  final {last.level:.2f} avg bits, test acc "
          f"{last.accuracy:.4f}, val acc {last.extra['val_accuracy']:.4f} (start {ctx.points[0].accuracy:.4f})  "
          f"load {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}  [{how}]", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cnn-l", help="a cnn_l mnist5k checkpoint (default: train one, 2 epochs)")
    ap.add_argument("--resnet20", help="a resnet20 mnist5k checkpoint (default: train one, 1 epoch)")
    ap.add_argument("--models", default="cnn_l,resnet20")
    ap.add_argument("--greedy-budget-s", type=float, default=300, help="cut a greedy run off after this long")
    ap.add_argument("--searches", default="sensitivity,greedy")
    ap.add_argument("--skip-uncached", action="store_true", help="no uncached greedy run on cnn_l")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()}", flush=True)
    given = {"cnn_l": args.cnn_l, "resnet20": args.resnet20}
    for arch in args.models.split(","):
        ck = checkpoint(arch, given[arch])
        searches = args.searches.split(",")
        if "sensitivity" in searches:
            run(arch, ck, "sensitivity", True, None)
        if "greedy" in searches:
            run(arch, ck, "greedy", True, args.greedy_budget_s)
        if "greedy" in searches and arch == "cnn_l" and not args.skip_uncached:
            run(arch, ck, "greedy", False, args.greedy_budget_s)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
