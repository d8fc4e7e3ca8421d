"""Wall time of each study, --quick and full, with the load average before and after (targets: kd-prune and
kd-quant full <= 10 minutes each, with both regimes; each --quick <= 2 minutes on 2 CPU cores). Every run uses
a fresh store and output directory, so nothing is reused. A load average above the core count means the
machine was shared and the times say more about the neighbours than about the study.

    python bench/bench_studies.py                    # every study, quick then full
    python bench/bench_studies.py --quick-only       # the --quick runs only
    python bench/bench_studies.py --only kd-prune --full-only
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

TARGET_S = {("kd-prune", False): 600, ("kd-prune", True): 120, ("kd-quant", False): 600, ("kd-quant", True): 120,
            ("compare-techniques", True): 120}


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


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
                start = time.perf_counter()
                result = run_study(name, str(Path(tmp) / "runs.duckdb"), dataset=args.dataset, quick=quick,
                                   overrides={"out": str(Path(tmp) / "ckpt")})
                wall = time.perf_counter() - start
            target = TARGET_S.get((name, quick))
            verdict = "" if target is None else f"  target <= {target} s: {'met' if wall <= target else 'MISSED'}"
            print(f"{name:<20} {'--quick' if quick else 'full':<8} {wall:8.1f} s  load before {before}  after "
                  f"{load()}  units {len(result.units)}{verdict}", flush=True)
            for note in result.notes:
                print(f"    - {note}", flush=True)


if __name__ == "__main__":
    main()
