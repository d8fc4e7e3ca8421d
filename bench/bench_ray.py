"""The same 8-child sweep on the local executor and on a local Ray with 2 workers: wall time, and the
overhead Ray adds per task; then what a 16-node cluster would give, estimated from that overhead.

Each child prunes one checkpoint (trained once, before anything is timed) at one sparsity and fine-tunes
every layer for one epoch on digits. Every run gets a fresh store and output directory (nothing is reused).

    python bench/bench_ray.py                        # 8 children, ray with 2 CPUs
    python bench/bench_ray.py --children 16 --epochs 2

Reading the numbers: on one 2-core machine Ray cannot be faster than the local executor by more than what
two single-threaded processes gain over one two-threaded one (small models use a second thread poorly);
it pays its start-up, a process per worker (each imports torch once) and a round trip per task. Its point
is the cluster: the per-task overhead measured here is what each child costs on top of its work when there
are enough nodes. The 16-node estimate is ceil(children / slots) x (work + overhead): it leaves out the
network (a child's checkpoint travels as bytes: ~100 KB here, tens of MB for a ResNet, unless --ray-shared)
and assumes every node is as fast as this one.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.core.context import RunContext  # noqa: E402
from engine.methods.tasks import run_task  # noqa: E402
from engine.methods.train import TrainTask
from engine.model.train import TrainConfig  # noqa: E402
from engine.run.jobs import run_sync  # noqa: E402
from engine.run.recipes import RECIPE_TASK, RecipeTask  # noqa: E402
from store import open_store  # noqa: E402

SEED_STUDY = 270  # the example: 9 KD methods x 10 pruning levels x 3 repeats


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def recipe(checkpoint: str, out: str, children: int, epochs: int) -> dict:
    levels = [round(0.05 + 0.9 * i / max(1, children - 1), 4) for i in range(children)]
    return {"name": "bench-ray", "dataset": "digits", "out": out, "model": {"checkpoint": checkpoint},
            "stages": [{"name": "prune", "task": "prune.l1_unstructured",
                        "config": {"latency": False,
                                   "finetune": {"mode": "all", "train": {"epochs": epochs, "batch_size": 32}}},
                        "sweep": {"sparsities": levels}}]}


def run(tmp: Path, tag: str, doc: dict, **options) -> tuple[float, dict, list[float]]:
    """Wall time, {level: accuracy}, and each child's compute seconds (as its worker or run measured it)."""
    db = str(tmp / f"{tag}.duckdb")
    doc = {**doc, "out": str(tmp / tag)}
    start = time.perf_counter()
    points = run_sync(RECIPE_TASK, RecipeTask(recipe=doc, **options), db)
    wall = time.perf_counter() - start
    store = open_store(db)
    compute = []
    for run_id in store.list_runs(kind="prune.l1_unstructured")["run_id"]:
        found = store.events(run_id)["message"].str.extract(r"finished: \d+ point\(s\) in ([\d.]+) s")[0].dropna()
        compute.append(float(found.iloc[-1]))
    store.close()
    return wall, {p.level: p.accuracy for p in points if p.stage == "variant"}, compute


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--children", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs per child (its work)")
    ap.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray (its workers, one CPU each)")
    args = ap.parse_args()
    n = args.children
    print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average {load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        checkpoint = str(tmp / "model")
        run_task("train", TrainTask(dataset="digits", model="cnn_s", out=checkpoint, latency=False,
                                    train=TrainConfig(epochs=2, batch_size=64)), RunContext())
        doc = recipe(checkpoint, "", n, args.epochs)

        local_wall, local_acc, local_compute = run(tmp, "local", doc)
        print(f"local executor      {local_wall:7.1f} s  ({n} children one after another, "
              f"{torch.get_num_threads()} torch threads each; children's own time {sum(local_compute):.1f} s)  "
              f"load {load()}", flush=True)

        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        start = time.perf_counter()
        ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        startup = time.perf_counter() - start
        print(f"ray.init            {startup:7.1f} s  (a local Ray with {args.ray_cpus} CPUs)", flush=True)
        cold_wall, cold_acc, _ = run(tmp, "ray-cold", doc, executor="ray")
        print(f"ray, first recipe   {cold_wall:7.1f} s  (its workers start and import torch)  load {load()}",
              flush=True)
        warm_wall, warm_acc, compute = run(tmp, "ray-warm", doc, executor="ray")
        print(f"ray, second recipe  {warm_wall:7.1f} s  (warm workers)  load {load()}", flush=True)
        ray.shutdown()

    slots = args.ray_cpus
    mean_c = sum(compute) / len(compute)
    overhead = max(0.0, (warm_wall * slots - sum(compute)) / n)  # slot-seconds not spent in a task, per task
    local_overhead = max(0.0, (local_wall - sum(local_compute)) / n)
    same = local_acc == cold_acc == warm_acc
    print(f"\nsame accuracies on both executors: {'yes' if same else 'NO'}")
    print(f"ray / local wall: {warm_wall / local_wall:.2f} with warm workers, {(startup + cold_wall) / local_wall:.2f} "
          f"counting ray.init and the first recipe's worker start-up")
    print(f"per child: local {sum(local_compute) / n:.2f} s of work (2 threads) + {local_overhead:.2f} s driver "
          f"overhead; on a ray worker {mean_c:.2f} s of work (1 thread) + {overhead:.2f} s overhead "
          f"(= ({warm_wall:.1f} s x {slots} workers - {sum(compute):.1f} s of work) / {n})")
    local_per_child = local_wall / n
    for children, per_node in ((n, 2), (SEED_STUDY, 2), (SEED_STUDY, 16)):
        p = 16 * per_node
        est = math.ceil(children / p) * (mean_c + overhead)
        local_est = children * local_per_child
        print(f"estimate: {children:4d} children on 16 nodes x {per_node:2d} workers ({p:3d} slots): {est:6.1f} s "
              f"+ connecting and each node's worker start-up (~{cold_wall - warm_wall:.0f} s here); local executor "
              f"{local_est:6.1f} s; x{local_est / est:.0f}")

if __name__ == "__main__":
    main()
