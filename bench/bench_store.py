"""Speed of the run store, every number measured in this one run (the machine is shared: read ratios).

1. Logging throughput: 8 threads log metric rows one call per row.
   - through the store (one writer thread, group commits),
   - one DuckDB cursor per thread, one INSERT per row (autocommit): the other design the DuckDB
     docs allow, at the same granularity,
   - one cursor per thread, each thread committing its own batches of 100 rows,
   against a raw bulk insert of the same rows in one statement (from a pandas frame, and with
   the store's own NaN-keeping unnest statement).
2. Loading 10,000 runs: the runs list, the first page of it, the points of all 10,000 runs, and
   their latest metrics, through the store's queries (median of 5).
3. Per-batch logging on the default model (cnn_l, mnist5k, batch 64): time spent in the
   StoreContext's progress() plus the writer thread's CPU time, as a share of the epoch
   (target <= 5%); and the wall and process CPU time of training without logging, with the
   store, and with a synchronous INSERT per batch, in rotating order.
4. Two processes on one file (each holds it only for a read or a group commit): logging rows/s
   with one writer process and with two at once (8 threads each, as in 1), and the time a
   reader in a third process takes to get the file (lock wait included) while a real training
   (`python -m engine train --db`, digits / cnn_s) logs into it.

    .venv/bin/python bench/bench_store.py [--rows 5000] [--runs 10000] [--epochs 1] [--repeats 2]
        [--seconds 10] [--sections 1,2,3,4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402 - the benchmark's raw baselines; the product's SQL stays in store/
import pandas as pd  # noqa: E402

from engine.core.context import RunContext  # noqa: E402
from engine.core.point import METRIC_FIELDS  # noqa: E402
from store import Store  # noqa: E402
from store.schema import metric_columns  # noqa: E402

THREADS = 8
METRICS_DDL = ("CREATE TABLE metrics (run_id VARCHAR NOT NULL, step BIGINT NOT NULL, key VARCHAR NOT NULL, "
               "value DOUBLE NOT NULL, time DOUBLE NOT NULL)")
UNNEST_INSERT = ("INSERT INTO metrics SELECT unnest($1::VARCHAR[]), unnest($2::BIGINT[]), unnest($3::VARCHAR[]), "
                 "unnest($4::DOUBLE[]), unnest($5::DOUBLE[])")


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def in_threads(fn, n: int = THREADS) -> float:
    barrier = threading.Barrier(n + 1)
    threads = [threading.Thread(target=lambda i=i: (barrier.wait(), fn(i))) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def rows_for(thread: int, n: int) -> list[tuple]:
    now = time.time()
    return [(f"run{thread}", step, "loss", 1.0 / (step + 1), now) for step in range(n)]


# ---------------------------------------------------------------- 1. throughput


def bench_throughput(tmp: Path, rows_per_thread: int) -> None:
    total = THREADS * rows_per_thread
    print(f"\n1. logging throughput: {THREADS} threads, one call per metric row")

    store = Store(tmp / "store.duckdb")
    run_ids = [store.create_run("bench", {}) for _ in range(THREADS)]
    tx0 = store._writer.transactions

    def via_store(i: int) -> None:
        for step in range(rows_per_thread):
            store.log_metrics(run_ids[i], {"loss": 1.0 / (step + 1)}, step)

    t_store = in_threads(via_store)
    t0 = time.perf_counter()
    store.flush()
    t_store += time.perf_counter() - t0
    assert len(store.metric_history(run_ids)) == total
    commits = store._writer.transactions - tx0
    store.close()
    store_rate = total / t_store

    few = max(10, rows_per_thread // 100)  # one commit per row is slow: fewer rows, same per-row rate
    con = duckdb.connect(str(tmp / "cursors.duckdb"))
    con.execute(METRICS_DDL)

    def per_row(i: int) -> None:
        cur = con.cursor()
        for row in rows_for(i, few):
            cur.execute("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", list(row))
        cur.close()

    cursor_rate = THREADS * few / in_threads(per_row)

    def per_batch(i: int) -> None:
        cur = con.cursor()
        rows = rows_for(i, rows_per_thread)
        for start in range(0, len(rows), 100):
            chunk = rows[start : start + 100]
            cur.execute("BEGIN TRANSACTION")
            cur.execute(UNNEST_INSERT, [list(c) for c in zip(*chunk)])
            cur.execute("COMMIT")
        cur.close()

    con.execute("DELETE FROM metrics")
    batch_rate = total / in_threads(per_batch)
    assert con.execute("SELECT count(*) FROM metrics").fetchone()[0] == total
    con.close()

    all_rows = [r for i in range(THREADS) for r in rows_for(i, rows_per_thread)]
    raw = duckdb.connect(str(tmp / "raw.duckdb"))
    raw.execute(METRICS_DDL)
    t0 = time.perf_counter()
    raw.execute(UNNEST_INSERT, [list(c) for c in zip(*all_rows)])
    unnest_rate = total / (time.perf_counter() - t0)
    raw.execute("DELETE FROM metrics")
    t0 = time.perf_counter()
    frame = pd.DataFrame(all_rows, columns=["run_id", "step", "key", "value", "time"])
    raw.register("frame", frame)
    raw.execute("INSERT INTO metrics SELECT * FROM frame")
    raw_rate = total / (time.perf_counter() - t0)
    assert raw.execute("SELECT count(*) FROM metrics").fetchone()[0] == total
    raw.close()

    print(f"   store (single writer, {commits} group commits) {store_rate:>10,.0f} rows/s   ({total:,} rows)")
    print(f"   cursor per thread, INSERT per row     {cursor_rate:>10,.0f} rows/s   ({THREADS * few:,} rows)")
    print(f"   cursor per thread, commit per 100     {batch_rate:>10,.0f} rows/s   ({total:,} rows)")
    print(f"   raw bulk insert, one unnest statement {unnest_rate:>10,.0f} rows/s   ({total:,} rows)")
    print(f"   raw bulk insert from a pandas frame   {raw_rate:>10,.0f} rows/s   ({total:,} rows)")
    print(f"   store / raw bulk (pandas) = {store_rate / raw_rate:.3f}   store / cursor-per-row = "
          f"{store_rate / cursor_rate:.0f}x   store / cursor-per-100 = {store_rate / batch_rate:.2f}")


# ---------------------------------------------------------------- 2. loading 10,000 runs


def populate(path: Path, n_runs: int, points_per_run: int, epochs: int) -> None:
    """Fills a store file with SQL (fast); the timed reads below go through the store's queries."""
    Store(path).close()  # the schema
    con = duckdb.connect(str(path))
    config = json.dumps({"dataset": "mnist5k", "model": "cnn_l", "train": {"epochs": 3, "lr": 0.05, "seed": 0},
                         "sparsity": [0.1, 0.3, 0.5, 0.7, 0.9]}).replace("'", "''")
    con.execute(f"""INSERT INTO runs (run_id, name, kind, status, config, created_at, started_at, ended_at, progress,
        message, seed, code_version, device, pid, host)
        SELECT printf('%012x', i), 'prune cnn_l mnist5k', CASE WHEN i % 3 = 0 THEN 'train' ELSE 'prune' END,
               'finished', '{config}', 1.7e9 + i, 1.7e9 + i + 1, 1.7e9 + i + 60, 1.0, 'finished', 0, 'abc', 'cpu',
               1000, 'bench'
        FROM range({n_runs}) t(i)""")
    metric_values = ", ".join(
        f"{'random()' if t == 'DOUBLE' else '1000' if t == 'BIGINT' else 'false' if t == 'BOOLEAN' else chr(39) + 'x' + chr(39)}"
        f" AS \"{name}\"" for name, t in metric_columns().items())
    con.execute(f"""INSERT INTO points (run_id, stage, method, params, artifact, created_at, extra, {', '.join(
        f'"{n}"' for n in METRIC_FIELDS)})
        SELECT printf('%012x', i), 'pruned', 'global_unstructured', '{{"sparsity": ' || (j / 10.0) || '}}',
               'checkpoints/x', 1.7e9 + i, '{{"accuracy_std": 0.002}}', * EXCLUDE (i, j)
        FROM (SELECT i, j, {metric_values} FROM range({n_runs}) a(i), range({points_per_run}) b(j))""")
    con.execute(f"""INSERT INTO metrics SELECT printf('%012x', i), e + 1, k, random(), 1.7e9 + i
        FROM range({n_runs}) a(i), range({epochs}) b(e),
             (VALUES ('val_accuracy'), ('val_loss'), ('train_loss'), ('train_accuracy'), ('lr')) c(k)""")
    con.close()


def timed(fn, repeats: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_loading(tmp: Path, n_runs: int) -> None:
    points_per_run, epochs = 3, 3
    path = tmp / "many.duckdb"
    populate(path, n_runs, points_per_run, epochs)
    print(f"\n2. loading {n_runs:,} runs ({points_per_run} points and {epochs} epochs x 5 metrics each), "
          "median of 5")
    with Store(path, read_only=True) as store:
        t_list, runs = timed(lambda: store.list_runs())
        t_page, _ = timed(lambda: store.list_runs(limit=50))
        ids = list(runs.run_id)
        t_points, pts = timed(lambda: store.points(ids))
        t_raw_points, _ = timed(lambda: store.points(ids, expand=False))
        t_latest, latest = timed(lambda: store.latest_metrics(ids, wide=True))
    assert len(runs) == n_runs and len(pts) == n_runs * points_per_run and len(latest) == n_runs
    print(f"   runs list, all {n_runs:,} rows            {t_list * 1000:8.1f} ms")
    print(f"   runs list, newest 50                   {t_page * 1000:8.1f} ms")
    print(f"   points of {n_runs:,} runs ({len(pts):,} rows)    {t_points * 1000:8.1f} ms   "
          f"({t_raw_points * 1000:.1f} ms without spreading params/extra into columns)")
    print(f"   latest metrics of {n_runs:,} runs, wide     {t_latest * 1000:8.1f} ms")


# ---------------------------------------------------------------- 3. per-batch logging cost


def bench_training(tmp: Path, epochs: int, repeats: int) -> None:
    import torch

    from engine.model.data import load_dataset
    from engine.model.train import TrainConfig, fit, seed_everything
    from engine.model.zoo import build_model
    from engine.run.jobs import StoreContext

    data = load_dataset("mnist5k")
    cfg = TrainConfig(epochs=epochs, seed=0)
    c, h, _ = data.input_shape
    batches = epochs * data.train.num_batches(cfg.batch_size)
    store = Store(tmp / "train.duckdb")
    sync = duckdb.connect(str(tmp / "sync.duckdb"))
    sync.execute(METRICS_DDL)

    def train(kind: str) -> tuple[float, float, float, float, float]:
        """(wall s, wall s inside progress(), CPU s inside progress(), writer CPU s, process CPU s, commits)
        for one training."""
        seed_everything(0)
        model = build_model("cnn_l", data.num_classes, c, h)
        inside = inside_cpu = 0.0
        if kind == "store":
            run_id = store.create_run("train", cfg.to_dict())
            store.start_run(run_id)
            ctx: RunContext = StoreContext(store, run_id)
        else:
            ctx = RunContext()
        cur = sync.cursor()

        def report(p) -> None:
            nonlocal inside, inside_cpu
            t0, c0 = time.perf_counter(), time.thread_time()
            if kind == "store":
                ctx.progress(p)
            elif kind == "sync insert":
                cur.execute("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", ["r", p.step, "loss", p.metrics["loss"],
                                                                          time.time()])
            inside += time.perf_counter() - t0
            inside_cpu += time.thread_time() - c0

        busy0, cpu0, tx0 = store._writer.cpu_s, process_cpu(), store._writer.transactions
        t0 = time.perf_counter()
        fit(model, data, cfg, progress=report, cancel=ctx.cancel)
        if kind == "store":
            ctx.flush_progress()
            store.flush()
        wall = time.perf_counter() - t0
        cur.close()
        return (wall, inside, inside_cpu, store._writer.cpu_s - busy0, process_cpu() - cpu0,
                store._writer.transactions - tx0)

    kinds = ["none", "store", "sync insert"]
    results: dict[str, list[tuple[float, ...]]] = {k: [] for k in kinds}
    for r in range(repeats):
        for kind in kinds[r % 3:] + kinds[: r % 3]:  # rotate the order: the machine's load drifts
            results[kind].append(train(kind))
    store.close()
    sync.close()

    def med(kind: str, i: int) -> float:
        return statistics.median(r[i] for r in results[kind])

    base = med("none", 0)
    print(f"\n3. per-batch logging on cnn_l / mnist5k: {epochs} epoch(s) = {batches} batches of {cfg.batch_size}, "
          f"{repeats} alternating repeats, {torch.get_num_threads()} torch threads")
    for kind in results:
        wall = med(kind, 0)
        print(f"   {kind:<12} time median {wall:6.2f} s  runs {[round(r[0], 2) for r in results[kind]]}  "
              f"ratio to none {wall / base:.3f}   process CPU median {med(kind, 4):6.2f} s  "
              f"ratio to none {med(kind, 4) / med('none', 4):.3f}")
    wall, inside, inside_cpu, writer, _, commits = (med("store", i) for i in range(6))
    print(f"   store: progress() took {inside / batches * 1e6:.0f} us wall / {inside_cpu / batches * 1e6:.0f} us CPU "
          f"per batch; writer thread {writer * 1000:.1f} ms CPU in all, {commits:.0f} commits "
          f"({writer / max(commits, 1) * 1000:.2f} ms CPU each, the file attached and detached every time)")
    print(f"   logging cost = (wall in progress() + writer CPU) / training time = {(inside + writer) / wall:.2%}"
          f"   (CPU only: {(inside_cpu + writer) / wall:.2%}; target <= 5%)")
    sync_inside = med("sync insert", 1)
    print(f"   a synchronous INSERT per batch instead: {sync_inside / batches * 1000:.2f} ms per batch = "
          f"{sync_inside / med('sync insert', 0):.2%} of the training time")


# ---------------------------------------------------------------- 4. two processes, one file

REPO = Path(__file__).resolve().parent.parent

# A writer process: 8 threads log ROWS rows each through one Store once GO exists; prints its timings.
LOG_PROCESS = """
import json, os, sys, threading, time
from store import Store
db, rows, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
store = Store(db)
run_ids = [store.create_run("bench", {}) for _ in range(8)]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
def log(i):
    for step in range(rows):
        store.log_metrics(run_ids[i], {"loss": 1.0 / (step + 1)}, step)
threads = [threading.Thread(target=log, args=(i,)) for i in range(8)]
t0 = time.time()
for t in threads:
    t.start()
for t in threads:
    t.join()
store.flush()
t1 = time.time()
w = store.writer
print(json.dumps({"start": t0, "end": t1, "rows": 8 * rows, "commits": w.transactions, "held": w.held_commits,
                  "dropped": w.dropped, "waits": sorted(store.file.waits)}), flush=True)
store.close()
"""


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def log_processes(tmp: Path, db: Path, n: int, rows_per_thread: int) -> list[dict]:
    go = tmp / f"go-{db.stem}-{n}"
    procs = [subprocess.Popen([sys.executable, "-c", LOG_PROCESS, str(db), str(rows_per_thread), str(go)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO) for _ in range(n)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    results = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait(60)
    return results


def bench_processes(tmp: Path, rows_per_thread: int, seconds: float) -> None:
    print(f"\n4. two processes on one file: each holds it only for a read or a group commit "
          f"(lock wait at most {os.environ.get('COMPRESSION_LAB_DB_WAIT_S') or '5'} s)")
    for n in (1, 2):
        db = tmp / f"procs{n}.duckdb"
        Store(db).close()
        results = log_processes(tmp, db, n, rows_per_thread)
        total = sum(r["rows"] for r in results)
        span = max(r["end"] for r in results) - min(r["start"] for r in results)
        with Store(db, read_only=True) as store:
            stored = len(store.metric_history(list(store.list_runs().run_id)))
        assert stored == total and not any(r["dropped"] for r in results), (stored, total)
        waits = [w for r in results for w in r["waits"]]
        print(f"   {n} writer process{'es' if n > 1 else ''}, 8 threads each: {total / span:>9,.0f} rows/s in all   "
              f"({total:,} rows in {span:.2f} s; {sum(r['commits'] for r in results)} commits, "
              f"{sum(r['held'] for r in results)} found the file busy past the wait; writer attach p50 "
              f"{percentile(waits, 50) * 1000:.1f} ms, p95 {percentile(waits, 95) * 1000:.1f} ms)")

    db = tmp / "training.duckdb"
    Store(db).close()
    train = subprocess.Popen([sys.executable, "-m", "engine", "train", "--dataset", "digits", "--model", "cnn_s",
                              "--epochs", "500", "--no-latency", "--json", "--out", str(tmp / "ck"), "--db", str(db)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        with Store(db, read_only=True) as store:
            deadline = time.monotonic() + 120
            while not (len(runs := store.list_runs()) and runs.progress.iloc[0] > 0):
                assert time.monotonic() < deadline and train.poll() is None, "the training did not start"
                time.sleep(0.1)
            run_id = runs.run_id.iloc[0]
            store.file.waits.clear()
            reads: list[float] = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                store.list_runs()
                store.latest_metrics(run_id)
                reads.append(time.perf_counter() - t0)
                time.sleep(0.05)
            waits = list(store.file.waits)
            retried = store.file.retried
            progress = store.list_runs().progress.iloc[0]
    finally:
        train.terminate()
        train.wait(60)
    print(f"   a reader polling while a training logs ({seconds:.0f} s, {len(waits)} attaches, {retried} of them "
          f"retried; the training reached {progress:.1%} of 500 epochs):")
    print(f"      time to get the file (lock wait included): p50 {percentile(waits, 50) * 1000:.2f} ms   "
          f"p95 {percentile(waits, 95) * 1000:.2f} ms   max {max(waits) * 1000:.1f} ms")
    print(f"      one poll (runs list + latest metrics, two attaches): p50 {percentile(reads, 50) * 1000:.1f} ms   "
          f"p95 {percentile(reads, 95) * 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000, help="metric rows per thread")
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10, help="how long the reader polls in part 4")
    ap.add_argument("--sections", default="1,2,3,4", help="which of the four parts to run, e.g. 3,4")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    print(f"duckdb {duckdb.__version__}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "1" in sections:
            bench_throughput(tmp, args.rows)
        if "2" in sections:
            bench_loading(tmp, args.runs)
        if "3" in sections:
            bench_training(tmp, args.epochs, args.repeats)
        if "4" in sections:
            bench_processes(tmp, args.rows, args.seconds)
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
