"""`python -m engine recommend --baseline POINT_ID --max-drop 1 [budgets]`: which stored variant to ship.

Ranks every stored variant descended from the baseline point's checkpoint on its dataset (engine/analysis/
recommend.py): fitting first, then the smallest (or, with only a latency budget, the fastest), then the most
accurate; each other variant says which budget it breaks. The winner is always a confirmed checkpoint on disk.
Reads the store read-only.
"""

from __future__ import annotations

import argparse
import math

from engine.analysis.recommend import Budget, Recommendation, recommend
from engine.cli.common import print_json
from engine.cli.runs import DB_HELP
from engine.deploy.runtimes import RUNTIMES
from store import reading


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="rank the stored variants of a baseline checkpoint under accuracy, size and "
                                         "latency budgets, and name the one to ship",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--baseline", type=int, required=True, metavar="POINT_ID",
                   help="the point whose checkpoint the variants descend from (a trained model's point)")
    p.add_argument("--max-drop", type=float, required=True, metavar="POINTS",
                   help="accuracy points you accept to lose against the baseline (1 = one point)")
    p.add_argument("--max-size", type=float, metavar="BYTES", help="at most this size as deployed (size_bytes)")
    p.add_argument("--min-smaller", type=float, metavar="X", help="at least this many times smaller than the baseline")
    p.add_argument("--max-latency-ms", type=float, metavar="MS", help="at most this median latency on this machine")
    p.add_argument("--min-faster", type=float, metavar="X",
                   help="at least this many times faster than the baseline (the paired speed-up where recorded)")
    p.add_argument("--runtime", choices=RUNTIMES.names(), help="only variants measured on this runtime fit")
    p.add_argument("--batch", type=int, default=1, choices=(1, 32), help="the batch size latency budgets read "
                                                                          "(default 1)")
    p.add_argument("--json", action="store_true", help="print the recommendation as strict JSON")
    p.set_defaults(func=cmd_recommend)


def cmd_recommend(args: argparse.Namespace) -> None:
    budget = Budget(max_drop=args.max_drop, max_size_bytes=args.max_size, min_smaller=args.min_smaller,
                    max_latency_ms=args.max_latency_ms, min_faster=args.min_faster, runtime=args.runtime,
                    batch=args.batch)  # a bad budget fails before the store is opened
    with reading(args.db) as store:
        points = store.points(expand=False)
    rec = recommend(points, args.baseline, budget)
    if args.json:
        print_json(rec.to_dict())
        return
    print_recommendation(rec)


def _x(v: float) -> str:
    return f"{v:.2f}x" if isinstance(v, float) and math.isfinite(v) else "-"


def print_recommendation(rec: Recommendation) -> None:
    b = rec.baseline
    latency = f", {b['latency_ms']:.3g} ms" if math.isfinite(b["latency_ms"]) else ""
    print(f"baseline: point {b['point_id']} {b['method']} {b['model']} on {b['dataset']} ({b['run']}): "
          f"accuracy {100 * b['accuracy']:.2f} %, {b['size_bytes']:,.0f} B{latency}  -> {b['artifact']}")
    print("budget:   " + "; ".join(rec.budget.stated().values())
          + f"; ranked by {'size (smallest first)' if rec.objective == 'size' else 'speed (fastest first)'}")
    t = rec.table
    if not t.empty:
        print(f"{'#':>3} {'point':>6}  {'method':<28} {'level':<14} {'change':>8} {'smaller':>8} {'faster':>8}  "
              f"{'timing':<16} {'rep':>3} {'fits':<4} {'ckpt':<4} breaks")
        for r in t.to_dict("records"):
            interval = (f" [{r['faster_lo']:.2f}-{r['faster_hi']:.2f}]"
                        if math.isfinite(r["faster_lo"]) and math.isfinite(r["faster_hi"]) else "")
            point = "est." if r["estimate"] else str(r["point_id"])
            print(f"{r['rank']:>3} {point:>6}  {r['method'][:28]:<28} {r['level'][:14]:<14} "
                  f"{r['change_points']:>+8.2f} {_x(r['smaller']):>8} {_x(r['faster']):>8}  "
                  f"{(r['timing'] + interval)[:16]:<16} {r['repeats']:>3} {'yes' if r['fits'] else 'no':<4} "
                  f"{'yes' if r['confirmed'] else 'no':<4} {r['breaks']}")
    for note in rec.notes:
        print(f"note: {note}")
    if rec.best is None:
        print(f"no recommendation: {rec.reason}")
        return
    w = rec.best
    faster = f", {_x(w['faster'])} faster ({w['timing']})" if math.isfinite(w["faster"]) else ""
    print(f"recommended: point {w['point_id']} {w['method']} {w['level']} ({w['run']}): {w['change_points']:+.2f} "
          f"points, {_x(w['smaller'])} smaller{faster}; {rec.reason}")
    print(f"  checkpoint: {w['artifact']}")
