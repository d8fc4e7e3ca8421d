"""Wall time of each study, --quick and full, with the load average before and after (targets on 2 CPU cores:
every study full <= 10 minutes, kd-prune and kd-quant with both regimes; each --quick <= 2 minutes). Every run uses
a fresh store and output directory, so nothing is reused. A load average above the core count means the
machine was shared and the times say more about the neighbours than about the study; the process's CPU time
(user + sys, all threads) is printed beside the wall time, as a figure less bent by load (though contention inflates it
somewhat: threads that wait for a core spin).

    python bench/bench_studies.py                    # every study, quick then full
    python bench/bench_studies.py --quick-only       # the --quick runs only
    python bench/bench_studies.py --only kd-prune --full-only

Each study's line is followed by its stages' wall seconds (each unit's run, as the store recorded it), largest first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.run.studies import STUDIES, run_study  # noqa: E402
from store import open_store  # noqa: E402

TARGET_S = {(name, quick): 120 if quick else 600 for name in STUDIES for quick in (True, False)}


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def stage_times(db: str, units) -> list[str]:
    """Where the wall time went: each recipe stage's units and the seconds they ran (the store's started_at to
    ended_at), largest first, with its share of the units' total."""
    duration = open_store(db).list_runs().set_index("run_id")["duration_s"]
    by_stage: dict[str, list[float]] = {}
    for u in units:
        by_stage.setdefault(u.stage, []).append(float(duration.get(u.run_id, 0.0)))
    total = sum(map(sum, by_stage.values())) or 1.0
    return [f"{stage:<20} {len(d):3d} unit(s) {sum(d):8.1f} s  {100 * sum(d) / total:4.0f} %"
            for stage, d in sorted(by_stage.items(), key=lambda kv: -sum(kv[1]))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=list(STUDIES), action="append")
    ap.add_argument("--dataset", default=None)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick-only", action="store_true")
    mode.add_argument("--full-only", action="store_true")
    args = ap.parse_args()
    quicks = [True] if args.quick_only else [False] if args.full_only else [True, False]
    print(f"cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average {load()}", flush=True)
    for name in args.only or list(STUDIES):
        for quick in quicks:
            with tempfile.TemporaryDirectory() as tmp:
                before = load()
                start, cpu_start = time.perf_counter(), time.process_time()
                db = str(Path(tmp) / "runs.duckdb")
                result = run_study(name, db, dataset=args.dataset, quick=quick, overrides={"out": str(Path(tmp) / "ckpt")})
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                stages = stage_times(db, result.units)
            target = TARGET_S.get((name, quick))
            verdict = "" if target is None else f"  target <= {target} s: {'met' if wall <= target else 'MISSED'}"
            print(f"{name:<20} {'--quick' if quick else 'full':<8} {wall:8.1f} s  cpu {cpu:7.1f} s  load before {before}  after "
                  f"{load()}  units {len(result.units)}{verdict}", flush=True)
            for line in stages:
                print(f"    {line}", flush=True)
            for note in result.notes:
                print(f"    - {note}", flush=True)


if __name__ == "__main__":
    main()
