"""Trade-offs page build time with 1,000 runs x 10 points in the store (issue #11: target <= 1 s).

Fills a temporary store through the Store API (store.create_run / store.add_point, from several threads:
the store's writer groups their commits) with a mix of sweeps: prune (repeats, so error bars), fake
quantization (simulated), int8 PTQ on torch and onnxruntime (latency measured), distillation and
training, over four models and three datasets. Then times what the page does on each rerun, as the
median of --repeats builds:

  query     store.points(expand=False)
  shape     engine.analysis.tradeoffs: shape_points, filter_options, apply_filters (none chosen), on_axis, pareto_points
  figure    pages.figures.tradeoffs.tradeoff_figure
  build     the three together (the number the target is for)
  + json    the figure serialised as Streamlit sends it (fig.to_json), reported beside it

and the same build with a filter (one model) and on a latency axis (points without latency dropped).

    .venv/bin/python bench/bench_tradeoffs.py [--runs 1000] [--points 10] [--repeats 7] [--db PATH]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.analysis.tradeoffs import apply_filters, filter_options, on_axis, pareto_points, shape_points  # noqa: E402
from engine.core.point import Measurement  # noqa: E402
from engine.methods.tasks import make_point  # noqa: E402
from pages.figures.tradeoffs import tradeoff_figure  # noqa: E402
from store import Store  # noqa: E402

MODELS = {"cnn_s": 95_000, "cnn_m": 400_000, "cnn_l": 1_600_000, "resnet8": 78_000}
DATASETS = ("digits", "mnist5k", "cifar10")
KINDS = ("prune", "fake", "ptq", "distill", "train")


def measurement(rng: random.Random, model: str, dataset: str, accuracy: float, nonzero_share: float = 1.0,
                bits: float = 32.0, simulated: bool = False, latency: bool = False,
                runtime: str = "torch") -> Measurement:
    total = MODELS[model]
    nonzero = int(total * nonzero_share)
    size = int(nonzero * bits / 8) + 4000
    lat = rng.uniform(0.2, 3.0) if latency else None
    return Measurement(accuracy=accuracy, top5=min(1.0, accuracy + 0.05), loss=1.0 - accuracy, params_total=total,
                       params_nonzero=nonzero, sparsity=1 - nonzero_share, bits=bits, size_bytes=size,
                       size_fp32_bytes=4 * total, file_bytes=size + 2000, macs=total * 9, latency_ms_b1=lat,
                       latency_p90_ms_b1=lat * 1.1 if lat else None, latency_ms_b32=lat * 8 if lat else None,
                       latency_p90_ms_b32=lat * 9 if lat else None, threads=2, backend="fp32 eager cpu",
                       simulated=simulated, dataset=dataset, model=model, runtime=runtime)


def run_points(i: int, n: int) -> tuple[str, str, list]:
    """One run's kind, name and n points (deterministic per run index)."""
    rng = random.Random(i)
    kind, model, dataset = KINDS[i % len(KINDS)], rng.choice(list(MODELS)), rng.choice(DATASETS)
    top = rng.uniform(0.85, 0.99)
    pts = []
    if kind == "prune":
        for j in range(n):
            s = j / n
            acc = top - 0.9 * max(0.0, s - 0.6) ** 1.5
            runs = [acc + rng.gauss(0, 0.003) for _ in range(3)]
            pts.append(make_point(measurement(rng, model, dataset, acc, 1 - s), family="prune",
                                  method="global_unstructured", stage="baseline" if j == 0 else "variant", level=s,
                                  level_name="sparsity", accuracy_std=statistics.stdev(runs), accuracy_runs=runs,
                                  artifact=f"checkpoints/bench/{i}/sparsity-{s:.3f}"))
    elif kind == "fake":
        for j in range(n):
            b = 2 + 3 * j if j < n - 1 else 32
            pts.append(make_point(measurement(rng, model, dataset, top - 0.5 * max(0, 4 - b) / 4, bits=b,
                                              simulated=b < 32), family="quantize", method="fake",
                                  stage="baseline" if b == 32 else "variant", level=float(b), level_name="bits"))
    elif kind == "ptq":
        for j in range(n):
            runtime = "onnxruntime" if j % 2 else "torch"
            int8 = j >= 2
            pts.append(make_point(measurement(rng, model, dataset, top - (0.004 if int8 else 0),
                                              bits=8 if int8 else 32, latency=True, runtime=runtime),
                                  family="quantize", method="ptq_int8", stage="variant" if int8 else "baseline"))
    elif kind == "distill":
        for j in range(n):
            role = "teacher" if j == 0 else "student"
            pts.append(make_point(measurement(rng, model, dataset, top - 0.01 * j, 1.0 if j == 0 else 0.25),
                                  family="distill", method=rng.choice(("kd", "dkd", "simkd")), stage="variant",
                                  role=role))
    else:
        for j in range(n):
            pts.append(make_point(measurement(rng, model, dataset, top - 0.002 * j, latency=j % 3 == 0),
                                  family="train", method="train", stage="baseline"))
    return kind, f"bench {kind} {model} {dataset} #{i}", pts


def fill(path: Path, n_runs: int, n_points: int) -> float:
    t0 = time.perf_counter()
    with Store(path) as store:
        def one(i: int) -> None:
            kind, name, pts = run_points(i, n_points)
            rid = store.create_run(kind, {"bench": i}, name=name, status="running")
            for p in pts:
                store.add_point(rid, p)
            store.end_run(rid, "finished")

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, range(n_runs)))
        store.flush()
    return time.perf_counter() - t0


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--db", help="reuse (or create) this store file instead of a temporary one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "bench.duckdb"
        if not path.exists():
            seconds = fill(path, args.runs, args.points)
            print(f"filled {args.runs:,} runs x {args.points} points through the Store API in {seconds:.1f} s")
        with Store(path, read_only=True) as store:
            def query():
                return store.points(expand=False)

            def shape(points, axis="size", filters=None):
                df = shape_points(points)
                filter_options(df)
                view = on_axis(apply_filters(df, filters or {}), axis)
                pareto_points(view)
                return view

            def build(axis="size", filters=None):
                view = shape(query(), axis, filters)
                return tradeoff_figure(view, "family", "model", False, True)

            build()  # warm-up (imports, first attach)
            t_query, points = median_time(query, args.repeats)
            t_shape, view = median_time(lambda: shape(points), args.repeats)
            t_fig, fig = median_time(lambda: tradeoff_figure(view, "family", "model", False, True), args.repeats)
            t_build, fig = median_time(build, args.repeats)
            t_json, _ = median_time(fig.to_json, args.repeats)
            model = sorted(points["model"].unique())[0]
            t_filtered, _ = median_time(lambda: build(filters={"model": [model]}), args.repeats)
            n_filtered = len(shape(points, filters={"model": [model]}).points)
            t_latency, _ = median_time(lambda: build("latency_b1"), args.repeats)
            lat_view = shape(points, "latency_b1")
    n = len(points)
    print(f"{n:,} points in {points['run_id'].nunique():,} runs; trade-offs page build, median of {args.repeats}:")
    print(f"  query    store.points(expand=False)     {1000 * t_query:8.1f} ms")
    print(f"  shape    engine.analysis.tradeoffs               {1000 * t_shape:8.1f} ms")
    print(f"  figure   tradeoff_figure ({len(fig.data)} traces)   {1000 * t_fig:8.1f} ms")
    print(f"  build    query + shape + figure         {1000 * t_build:8.1f} ms   (target <= 1000 ms: "
          f"{'met' if t_build <= 1 else 'NOT met'})")
    print(f"  + json   fig.to_json (what Streamlit sends) {1000 * t_json:6.1f} ms")
    print(f"  build, filtered to {model} ({n_filtered:,} drawn)       "
          f"{1000 * t_filtered:6.1f} ms")
    print(f"  build, latency b1 axis ({len(lat_view.points):,} drawn, {lat_view.missing:,} without latency) "
          f"{1000 * t_latency:6.1f} ms")


if __name__ == "__main__":
    main()
