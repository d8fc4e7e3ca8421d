"""Pruning speed: what structured and unstructured pruning do to CPU latency, and how long a sweep takes.

1. dense vs structured (50% of channels removed, Torch-Pruning) latency ratio, resnet18 and vgg11_bn
   at 3x32x32 with untrained weights (latency does not depend on the weight values);
2. dense vs unstructured (50% of weights zeroed) latency ratio on the same models: expect about 1.0x,
   because zeros still run through the same dense kernels;
3. wall time of a 10-level x 3-repeat one-shot global_unstructured sweep on the default teacher
   (cnn_l on mnist5k), latency timed once and every level saved as a checkpoint, as the command
   does by default. Target: 60 s or less.

Timings on a shared machine are noisy: each ratio alternates the two models over several rounds
and divides medians taken in the same run, and the load average is printed beside them. With more
runnable processes than cores, two OpenMP threads stall each other on every small op: `--threads 1`
avoids that, and `--cpu-time` (one thread, timed by the thread's CPU time) is barely disturbed by
other processes at all. The sweep prints its process CPU time beside its wall time for the same reason.

    .venv/bin/python bench/bench_prune.py [--checkpoint DIR] [--rounds 3] [--cpu-time | --threads N]
                                          [--skip-latency] [--skip-sweep]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.context import RunContext  # noqa: E402
from engine.deploy.measure import count_macs, prunable_weights, storage, time_forward  # noqa: E402
from engine.methods.prune.channels import prune_channels  # noqa: E402
from engine.methods.prune.importance import weight_magnitudes  # noqa: E402
from engine.methods.prune.masks import apply_masks, rank  # noqa: E402
from engine.methods.tasks import run_task  # noqa: E402
from engine.model.checkpoint import CheckpointMeta, save_checkpoint  # noqa: E402
from engine.model.data import load_dataset  # noqa: E402
from engine.model.zoo import MODELS, build_model  # noqa: E402


def alternate_latency(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor, rounds: int,
                      cpu_time: bool) -> dict[str, float]:
    """Median b1/b32 forward times (ms) of a and b, timed in alternation so both see the same machine load."""
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for tag, model in (("a", a.eval()), ("b", b.eval())):
            for batch in (1, 32):
                runs = time_forward(model, x[:batch], warmup=3, max_runs=40 if batch == 1 else 10, max_seconds=1.0,
                                    cpu_time=cpu_time)
                times.setdefault(f"{tag}{batch}", []).extend(runs)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_latency(rounds: int, cpu_time: bool) -> None:
    clock = "thread CPU time" if cpu_time else "wall time"
    print(f"== latency ratios, dense / pruned ({clock}, torch threads: {torch.get_num_threads()}, {rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    x = torch.randn(32, 3, 32, 32)
    for arch in ("resnet18", "vgg11_bn"):
        torch.manual_seed(0)
        dense = build_model(arch, 10, 3, 32).eval()
        structured = prune_channels(copy.deepcopy(dense), x[:1], ratio=0.5, keep=(MODELS.get(arch).classifier,),
                                    arch=arch)
        unstructured = copy.deepcopy(dense)
        layers = prunable_weights(unstructured)
        apply_masks(unstructured, rank([n for n, _ in layers], weight_magnitudes(layers), "layer").masks(0.5))
        macs = count_macs(structured, x[:1]) / count_macs(dense, x[:1])
        params = storage(structured)["params_total"] / storage(dense)["params_total"]
        for label, pruned in (("structured 50% channels", structured), ("unstructured 50% weights", unstructured)):
            t = alternate_latency(dense, pruned, x, rounds, cpu_time)
            extra = f"MACs x{macs:.2f}, params x{params:.2f}" if pruned is structured else \
                f"sparsity {storage(pruned)['sparsity']:.2f}, same MACs"
            print(f"{arch:9s} {label:25s} speed-up b1 {t['a1'] / t['b1']:4.2f}x  b32 {t['a32'] / t['b32']:4.2f}x  "
                  f"[median ms dense {t['a1']:.2f}/{t['a32']:.2f}, pruned {t['b1']:.2f}/{t['b32']:.2f}; {extra}]")


def bench_sweep(checkpoint: str | None) -> None:
    print("== one-shot sweep: global_unstructured, 10 levels x 3 repeats, cnn_l on mnist5k")
    with tempfile.TemporaryDirectory() as tmp:
        if checkpoint is None:
            data = load_dataset("mnist5k")
            c, h, _ = data.input_shape
            torch.manual_seed(0)
            model = build_model("cnn_l", data.num_classes, c, h)
            checkpoint = save_checkpoint(Path(tmp) / "ck", model, CheckpointMeta("cnn_l", data.num_classes, c, h,
                                                                                data.name, data.class_names)).as_posix()
            print("  (an untrained cnn_l: the time does not depend on the weights; pass --checkpoint for a trained one)")
        load_dataset("mnist5k").test.tensors()  # load the data outside the timed part, as the app's process has
        t0, c0 = time.perf_counter(), time.process_time()
        # saved as the command does by default: 10 checkpoint directories, in the temporary folder
        points = run_task("prune.global_unstructured", {"checkpoint": checkpoint, "repeats": 3,
                                                        "out": str(Path(tmp) / "sweep")}, RunContext())
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"  {len(points)} points x 3 repeats in {elapsed:.1f} s wall (target <= 60 s): "
          f"{'OK' if elapsed <= 60 else 'OVER'}; {cpu:.1f} s CPU over {torch.get_num_threads()} thread(s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; accuracy at 0%/50%/90%: "
          f"{points[0].accuracy:.3f}/{points[5].accuracy:.3f}/{points[9].accuracy:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="the teacher checkpoint for the sweep (default: an untrained cnn_l)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per pair of models")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread, each forward timed by the thread's CPU time (robust on a busy machine)")
    parser.add_argument("--skip-latency", action="store_true", help="only time the sweep")
    parser.add_argument("--skip-sweep", action="store_true", help="only time the latency ratios")
    args = parser.parse_args()
    if args.threads or args.cpu_time:
        torch.set_num_threads(1 if args.cpu_time else args.threads)
    if not args.skip_latency:
        bench_latency(args.rounds, args.cpu_time)
    if not args.skip_sweep:
        bench_sweep(args.checkpoint)


if __name__ == "__main__":
    main()
