"""Distillation on the default pair (cnn_l teacher -> cnn_s student, mnist5k): cost and accuracy.

1. Training cost of every method relative to `scratch`: one epoch each (on --time-subset training
   images, default all), in rounds that visit every method once; the median per method is kept.
   "fit" is the training call itself (the epoch and its validation pass), in wall seconds and in
   CPU seconds of this process; "rest" is the rest of the run (loading, caching the teacher's
   outputs, building adapters, measuring, saving). On a shared machine read the CPU-time ratio,
   measured with --threads 1 (the default): wall time there moves with other people's work, and
   with more threads spinning workers inflate CPU time.
2. Test accuracy of kd, dkd and simkd students against scratch, with the same epochs, batch size,
   learning rate and seeds (mean and each seed over --seeds), with torch's default threads.
3. --defaults-table (alone: it skips 1 and 2): every method at its defaults, as a user runs it from
   the command line (`python -m engine distill --method M --epochs 3 --no-latency --no-save
   --json`), one process per method, against `scratch`; a method should be within 2 points of
   scratch or better. The teacher is trained with `python -m engine train` unless --teacher is given.

    .venv/bin/python bench/bench_distill.py [--teacher DIR] [--teacher-epochs 3] [--epochs 5] [--seeds 2]
                                            [--rounds 1] [--time-subset N] [--threads 1]
                                            [--skip-time] [--skip-accuracy]
    .venv/bin/python bench/bench_distill.py --defaults-table [--teacher DIR] [--teacher-epochs 3]
                                            [--table-epochs 3] [--methods scratch,kd,...] [--jobs 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine.methods.distill.task as task_module  # noqa: E402
from engine.core.context import RunContext  # noqa: E402
from engine.core.point import Point  # noqa: E402
from engine.methods.distill import DistillTask  # noqa: E402
from engine.methods.registry import family_methods  # noqa: E402
from engine.methods.tasks import run_task  # noqa: E402
from engine.methods.train import TrainTask  # noqa: E402
from engine.model.train import TrainConfig  # noqa: E402

ACCURACY_METHODS = ("scratch", "kd", "dkd", "simkd")


FIT_TIMES: list[tuple[float, float]] = []  # (wall s, CPU s) of each fit call
_real_fit = task_module.fit


def timed_fit(*args, **kwargs):
    """engine.model.train.fit, timed in wall and CPU seconds (the task calls it once per run)."""
    wall, cpu = time.perf_counter(), time.process_time()
    history = _real_fit(*args, **kwargs)
    FIT_TIMES.append((time.perf_counter() - wall, time.process_time() - cpu))
    return history


task_module.fit = timed_fit
RUN_NUMBER = itertools.count(1)  # each run saves into a new directory (an existing one is refused)


def distill(teacher: str, method: str, epochs: int, seed: int, out: Path, subset: int | None = None
            ) -> tuple[list[Point], float, float, float]:
    """points (the teacher's, then the student's), fit wall s, fit CPU s, rest-of-run wall s."""
    run_dir = out / f"{method}-{seed}-{epochs}-{next(RUN_NUMBER)}"
    cfg = DistillTask(teacher=teacher, student="cnn_s", method=method, out=str(run_dir), train_subset=subset,
                      latency=False, train=TrainConfig(epochs=epochs, seed=seed))
    t0 = time.perf_counter()
    points = run_task("distill", cfg, RunContext())
    total = time.perf_counter() - t0
    wall, cpu = FIT_TIMES[-1]
    return points, wall, cpu, total - wall


def cli_run(*args: str, threads: int | None = None) -> list[dict]:
    """`python -m engine ARGS --json` in a fresh process (with `threads` torch threads): its points as dicts."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    done = subprocess.run([sys.executable, "-m", "engine", *args, "--json"], capture_output=True, text=True,
                          cwd=ROOT, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"python -m engine {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    rows = json.loads(done.stdout)
    return rows if isinstance(rows, list) else [rows]


def defaults_table(teacher: str | None, teacher_epochs: int, epochs: int, methods: list[str], work: Path,
                   jobs: int = 1) -> None:
    """Every method at its defaults from the CLI, `epochs` epochs, against scratch (see the module docstring).

    With jobs > 1, that many runs go at once with one torch thread each (the accuracy does not depend on
    it beyond float round-off; the run times then mean little)."""
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if teacher is None:
        teacher = str(work / "teacher-cli")
        t0 = time.perf_counter()
        rows = cli_run("train", "--model", "cnn_l", "--epochs", str(teacher_epochs), "--out", teacher, "--no-latency")
        print(f"teacher: python -m engine train --model cnn_l --epochs {teacher_epochs} --out {teacher} --no-latency "
              f"--json -> test accuracy {rows[-1]['accuracy']:.4f} ({time.perf_counter() - t0:.0f} s)")

    def one(m: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        try:
            rows = cli_run("distill", "--teacher", teacher, "--student", "cnn_s", "--method", m, "--epochs",
                           str(epochs), "--no-latency", "--no-save", threads=1 if jobs > 1 else None)
        except RuntimeError as e:  # one failed run must not lose the others
            print(f"  {m}: FAILED\n{e}", flush=True)
            return float("nan"), time.perf_counter() - t0
        students = [r for r in rows if r["role"] == "student"]
        print(f"  {m}: {students[0]['accuracy']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        return students[0]["accuracy"], time.perf_counter() - t0  # dml: the run's own student

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = dict(zip(methods, pool.map(one, methods)))
    base = results["scratch"][0] if "scratch" in results else float("nan")
    print(f"\ncnn_l -> cnn_s on mnist5k, every method at its defaults, {epochs} epochs: python -m engine distill "
          f"--teacher T --student cnn_s --method M --epochs {epochs} --no-latency --no-save --json")
    print("| method | test accuracy | vs scratch | within 2 points | run (s) |")
    print("|---|---:|---:|:---:|---:|")
    for m, (acc, secs) in results.items():
        gap = 100 * (acc - base)
        print(f"| {m} | {acc:.4f} | {gap:+.2f} pts | {'yes' if gap >= -2 else 'NO'} | {secs:.0f} |")
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", help="teacher checkpoint (default: train cnn_l here)")
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5, help="epochs for the accuracy comparison")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="timing rounds over all methods")
    ap.add_argument("--time-subset", type=int, help="training images per timing epoch (default: all 3,500)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the timing section")
    ap.add_argument("--skip-time", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--defaults-table", action="store_true", help="every method at its defaults from the CLI only")
    ap.add_argument("--table-epochs", type=int, default=3, help="epochs per method in --defaults-table")
    ap.add_argument("--methods", help="comma-separated methods for --defaults-table (default: scratch, then all)")
    ap.add_argument("--jobs", type=int, default=1, help="--defaults-table runs at once (one torch thread each)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-distill-"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; work dir {work}")
    if args.defaults_table:
        names = sorted(m for m in family_methods("distill").names() if m != "scratch")
        methods = args.methods.split(",") if args.methods else ["scratch", *names]
        defaults_table(args.teacher, args.teacher_epochs, args.table_epochs, methods, work, args.jobs)
        return
    teacher = args.teacher
    if teacher is None:
        teacher = str(work / "teacher")
        t0 = time.perf_counter()
        (p,) = run_task("train", TrainTask(model="cnn_l", out=teacher, latency=False,
                                          train=TrainConfig(epochs=args.teacher_epochs)), RunContext())
        print(f"teacher cnn_l, {args.teacher_epochs} epochs: test accuracy {p.accuracy:.4f} "
              f"({time.perf_counter() - t0:.0f} s)")

    if not args.skip_time:
        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        methods = ["scratch", *sorted(m for m in family_methods("distill").names() if m != "scratch")]
        times: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}
        distill(teacher, "scratch", 1, 0, work, 64)  # warm-up: first-call costs are nobody's
        for _ in range(args.rounds):
            for m in methods:
                _, wall, cpu, rest = distill(teacher, m, 1, 0, work, args.time_subset)
                times[m].append((wall, cpu, rest))
        med = {m: [statistics.median(t[i] for t in times[m]) for i in range(3)] for m in methods}
        base_wall, base_cpu = med["scratch"][0], med["scratch"][1]
        n = args.time_subset or "all"
        print(f"\none epoch on {n} training images, {args.threads} thread(s), median of {args.rounds} round(s)")
        print("| method | fit CPU (s) | CPU / scratch | fit wall (s) | wall / scratch | rest of run, wall (s) |")
        print("|---|---:|---:|---:|---:|---:|")
        for m in methods:
            wall, cpu, rest = med[m]
            print(f"| {m} | {cpu:.2f} | {cpu / base_cpu:.2f}x | {wall:.2f} | {wall / base_wall:.2f}x | {rest:.2f} |")
        torch.set_num_threads(threads)

    if not args.skip_accuracy:
        acc: dict[str, list[float]] = {m: [] for m in ACCURACY_METHODS}
        for seed in range(args.seeds):
            for m in ACCURACY_METHODS:
                points, *_ = distill(teacher, m, args.epochs, seed, work)
                acc[m].append(points[-1].accuracy)
        base = statistics.mean(acc["scratch"])
        print(f"\n| method | test accuracy, {args.epochs} epochs (mean over {args.seeds} seeds) | per seed | vs scratch |")
        print("|---|---:|---|---:|")
        for m in ACCURACY_METHODS:
            mean = statistics.mean(acc[m])
            per = ", ".join(f"{a:.4f}" for a in acc[m])
            print(f"| {m} | {mean:.4f} | {per} | {100 * (mean - base):+.2f} pts |")


if __name__ == "__main__":
    main()
