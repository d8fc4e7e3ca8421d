"""Mixed-precision search speed: wall time, CPU time and evaluations of `quantize --method mixed`.

For each model (cnn_l and resnet20 trained on mnist5k; trained here, 2 and 1 epochs, unless given),
runs `--search sensitivity` (target: <= 30 s on cnn_l, <= 5 min on resnet20 on 2 cores) and
`--search greedy` with the prefix activation cache, and on cnn_l also greedy without the cache
(every candidate a full forward on evaluate_tensors' batches, no state kept, none abandoned: the
search as it was before the cache), back to back, with the ratio of the two (target: >= 2x) and a
check that both took the same path. A greedy run that would take hours is cut off after
--greedy-budget-s seconds: it then reports the steps it took and the time per step. Every run
prints its final (average bits, test accuracy, validation accuracy), the validation evaluations it
made (candidates tried), how many ran from the input, how many were abandoned part-way, the
segments run (cut to cut, over every image: a full forward of a model with n cuts is n + 1), and
the load average (2 shared cores: with --threads 1, CPU time is the steadier number, as no thread
waits for another). --cli also times the end-to-end command, as a user runs it (latency timed,
every step saved):

    python -m engine quantize --checkpoint <cnn_l> --method mixed --search greedy --out <tmp>

    .venv/bin/python bench/bench_mixed.py [--cnn-l DIR] [--resnet20 DIR] [--models cnn_l,resnet20]
                                          [--searches sensitivity,greedy] [--greedy-budget-s 300]
                                          [--skip-uncached] [--cli] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.context import RunContext  # noqa: E402
from engine.core.errors import Cancelled  # noqa: E402
from engine.methods.quant import MixedPrecisionConfig  # noqa: E402
from engine.methods.quant.common import Output  # noqa: E402
from engine.methods.quant.mixed import mixed_precision  # noqa: E402
from engine.methods.tasks import open_checkpoint, run_task  # noqa: E402
from engine.methods.train import TrainTask
from engine.model.train import TrainConfig  # noqa: E402

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


def run(arch: str, ck: str, search: str, cached: bool, budget_s: float | None) -> dict:
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
          f"({wall / max(1, steps):.2f} s/step)  evaluations {last.extra['evaluations']:4} (from the input "
          f"{last.extra['full_evaluations']:4}, abandoned {last.extra.get('abandoned', 0):4}, segments "
          f"{last.extra.get('segments', 0):7.1f})  final {last.level:.2f} avg bits, test acc {last.accuracy:.4f}, "
          f"val acc {last.extra['val_accuracy']:.4f} (start {ctx.points[0].accuracy:.4f})  "
          f"load {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}  [{how}]", flush=True)
    path = [(p.extra["lowered"], p.extra["val_accuracy"], p.extra["val_loss"], p.accuracy) for p in ctx.points]
    return {"wall": wall, "cpu": cpu, "steps": steps, "path": path}


def cli(arch: str, ck: str, search: str, threads: int | None) -> None:
    """The end-to-end command as a user runs it (imports, latency, saving every step included)."""
    out = Path(tempfile.mkdtemp(prefix="bench-mixed-cli-"))
    cmd = [sys.executable, "-m", "engine", "quantize", "--checkpoint", ck, "--method", "mixed", "--search", search,
           "--out", str(out / "run"), "--db", str(out / "runs.duckdb"), "--json"]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        print(f"{arch:8} {search:11} cli      failed ({done.returncode}): {done.stderr[-2000:]}", flush=True)
        return
    try:
        points = json.loads(done.stdout)
        points = points.get("points", points) if isinstance(points, dict) else points
        final = f"final {points[-1]['level']:.2f} avg bits, test acc {points[-1]['accuracy']:.4f}, {len(points)} points"
    except (ValueError, KeyError, IndexError, TypeError):
        final = "(points not read)"
    print(f"{arch:8} {search:11} cli      {wall:7.1f} s wall end to end  {final}  load {load0[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f}  [{' '.join(cmd[1:8])} ...]", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cnn-l", help="a cnn_l mnist5k checkpoint (default: train one, 2 epochs)")
    ap.add_argument("--resnet20", help="a resnet20 mnist5k checkpoint (default: train one, 1 epoch)")
    ap.add_argument("--models", default="cnn_l,resnet20")
    ap.add_argument("--greedy-budget-s", type=float, default=300, help="cut a greedy run off after this long")
    ap.add_argument("--searches", default="sensitivity,greedy")
    ap.add_argument("--skip-uncached", action="store_true", help="no uncached greedy run on cnn_l")
    ap.add_argument("--cli", action="store_true", help="also time the end-to-end command for each search")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()}", flush=True)
    given = {"cnn_l": args.cnn_l, "resnet20": args.resnet20}
    for arch in args.models.split(","):
        ck = checkpoint(arch, given[arch])
        searches = args.searches.split(",")
        if "sensitivity" in searches:
            run(arch, ck, "sensitivity", True, None)
            if args.cli:
                cli(arch, ck, "sensitivity", args.threads)
        if "greedy" in searches:
            new = run(arch, ck, "greedy", True, args.greedy_budget_s)
            if arch == "cnn_l" and not args.skip_uncached:
                old = run(arch, ck, "greedy", False, args.greedy_budget_s)
                n = min(len(new["path"]), len(old["path"]))
                same = new["path"][:n] == old["path"][:n]
                per_step = [r["wall"] / max(1, r["steps"]) for r in (new, old)]
                cpu_step = [r["cpu"] / max(1, r["steps"]) for r in (new, old)]
                print(f"{arch:8} greedy      cached vs uncached: {per_step[1] / per_step[0]:.2f}x wall per step, "
                      f"{cpu_step[1] / cpu_step[0]:.2f}x CPU per step; the same path over {n} points: {same}",
                      flush=True)
            if args.cli:
                cli(arch, ck, "greedy", args.threads)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"load average {os.getloadavg()}; peak memory of this process {peak:.0f} MiB")


if __name__ == "__main__":
    main()
