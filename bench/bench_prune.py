"""Pruning speed: what structured and unstructured pruning do to CPU latency, and how long a sweep takes.

1. dense vs structured (50% of channels removed, Torch-Pruning) latency ratio, resnet18 and vgg11_bn
   at 3x32x32 with untrained weights (latency does not depend on the weight values);
2. dense vs unstructured (50% of weights zeroed) latency ratio on the same models: expect about 1.0x,
   because zeros still run through the same dense kernels;
3. wall time of a 10-level x 3-repeat one-shot global_unstructured sweep on the default teacher
   (cnn_l on mnist5k), latency timed once and every level saved as a checkpoint, as the command
   does by default. Target: 60 s or less.

Timings on a shared machine are noisy, so each ratio is taken by the protocol every point uses
(engine/deploy/timing.py): the two models in rotated rounds in this process, rounds disturbed by other
processes thrown away and run again, the speed-up the median of per-round ratios with its 95 % bootstrap
interval, and "noisy" printed when clean rounds could not be had. The machine's CPU and its int8/bf16 ISA
features and the load average are printed beside them. The sweep prints its process CPU time beside its
wall time for the same reason.

    .venv/bin/python bench/bench_prune.py [--checkpoint DIR] [--rounds 3] [--threads N]
                                          [--skip-latency] [--skip-sweep]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.context import RunContext  # noqa: E402
from engine.core.machine import describe, fingerprint  # noqa: E402
from engine.deploy import timing  # noqa: E402
from engine.deploy.measure import count_macs, prunable_weights, storage  # noqa: E402
from engine.methods.prune.channels import prune_channels  # noqa: E402
from engine.methods.prune.importance import weight_magnitudes  # noqa: E402
from engine.methods.prune.masks import apply_masks, rank  # noqa: E402
from engine.methods.tasks import run_task  # noqa: E402
from engine.model.checkpoint import CheckpointMeta, save_checkpoint  # noqa: E402
from engine.model.data import load_dataset  # noqa: E402
from engine.model.zoo import MODELS, build_model  # noqa: E402


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def paired_latency(dense: torch.nn.Module, pruned: torch.nn.Module, x: torch.Tensor, rounds: int,
                   threads: int | None) -> dict[int, timing.Timing]:
    """The pair timed by the protocol every point uses (engine/deploy/timing.py): rotated rounds in this
    process, contention checked, the pruned model's speed-up over the dense one with its 95 % interval."""
    policy = timing.Policy(rounds=max(3, rounds), max_rounds=max(3, rounds, 21))
    return {b: timing.time_forms({"dense": dense.eval(), "pruned": pruned.eval()}, x[:b], reference="dense",
                                 policy=policy, threads=threads) for b in (1, 32)}


def bench_latency(rounds: int, threads: int | None) -> None:
    print(f"== latency ratios, pruned against dense (engine/deploy/timing.py: rotated rounds, contention checked; "
          f"threads {threads or timing.default_threads()}, {max(3, rounds)} clean rounds wanted; "
          f"load average {load()}; {describe(fingerprint())})")
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
            t = paired_latency(dense, pruned, x, rounds, threads)
            extra = f"MACs x{macs:.2f}, params x{params:.2f}" if pruned is structured else \
                f"sparsity {storage(pruned)['sparsity']:.2f}, same MACs"
            cells = []
            for b in (1, 32):
                s = t[b].speedups["pruned"]
                cells.append(f"b{b} {s.median:4.2f}x [{s.lo:.2f}, {s.hi:.2f}] {t[b].quality.split(':')[0]}")
            print(f"{arch:9s} {label:25s} speed-up {'  '.join(cells)}  [median ms dense "
                  f"{t[1].forms['dense'].median_ms:.2f}/{t[32].forms['dense'].median_ms:.2f}, pruned "
                  f"{t[1].forms['pruned'].median_ms:.2f}/{t[32].forms['pruned'].median_ms:.2f}; {extra}; "
                  f"load {load()}]")


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
    parser.add_argument("--threads", type=int, help="torch threads for the timing (default: the protocol's choice, "
                        "the physical cores this process may use)")
    parser.add_argument("--skip-latency", action="store_true", help="only time the sweep")
    parser.add_argument("--skip-sweep", action="store_true", help="only time the latency ratios")
    args = parser.parse_args()
    if not args.skip_latency:
        bench_latency(args.rounds, args.threads)
    if not args.skip_sweep:
        bench_sweep(args.checkpoint)


if __name__ == "__main__":
    main()
