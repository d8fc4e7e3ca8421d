"""`python -m engine plan --checkpoint DIR --max-drop 1 [--min-smaller 4] [--max-runs 6] [--db FILE]`: find variants
the store does not hold yet, under a budget.

Runs the `plan` task (engine/run/planner.py) in the run store: an Optuna sampler proposes candidates (channel ratio,
global sparsity, fine-tuning epochs, weight bits), a proxy on a test subset estimates each, and only the promising
ones run for real, as child runs that reuse any unit the store holds. Prints the confirmed runs, the estimates'
count and the recommendation: always a confirmed checkpoint. Running the same plan again resumes it.
"""

from __future__ import annotations

import argparse

from engine.cli.common import print_json, run_labels
from engine.core.context import ConsoleContext
from engine.core.options import OptionSet
from engine.run.jobs import run_sync
from engine.run.planner import PLAN_TASK, PlanTask, estimate_rows, plan_out_dir, read_plan_state

PLAN_OPTIONS = OptionSet.of({"plan": PlanTask})


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="search compression variants under an accuracy/size/latency budget: estimates "
                                    "first, a few real runs, a confirmed recommendation",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    PLAN_OPTIONS.add_to(p)
    p.add_argument("--db", help="record the plan and its runs in this DuckDB file (default: the usual store)")
    p.add_argument("--json", action="store_true", help="print the plan's state as strict JSON, no progress bar")
    p.add_argument("--name", dest="run_name", metavar="TEXT", help="the plan run's name in lists")
    p.add_argument("--tag", dest="run_tags", metavar="TAG", action="append", help="tag the plan run (repeat)")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> dict:
    cfg = PlanTask.from_dict(PLAN_OPTIONS.values(args, "plan"))
    console = ConsoleContext(quiet=args.json)
    try:
        name, tags = run_labels(args)
        run_sync(PLAN_TASK, cfg, args.db, echo=console, name=name, tags=tags)
    finally:
        console.close()
    state = read_plan_state(plan_out_dir(cfg)) or {}
    if args.json:
        print_json(state)
        return state
    base = state.get("baseline", {})
    rows = estimate_rows(state) if state.get("trials") else []
    print(f"plan in {plan_out_dir(cfg)}: {len(state.get('trials', []))} estimates ({len(rows)} distinct candidates), "
          f"{sum(1 for r in state.get('confirmed', {}).values() if r.get('ran_units', 0) > 0)} real run(s)")
    print(f"baseline: {base.get('accuracy', float('nan')):.2f} %, {base.get('size_bytes', 0):,.0f} B")
    for key, r in state.get("stored", {}).items():
        print(f"  stored {key}: {r['accuracy']:.2f} % ({r['accuracy'] - base['accuracy']:+.2f} points), "
              f"{r['size_bytes']:,.0f} B, measured before this plan: used in place of the proxy there")
    for key, r in state.get("confirmed", {}).items():
        if r.get("status") == "finished":
            print(f"  confirmed {key}: {r['accuracy']:.2f} % ({r['accuracy'] - base['accuracy']:+.2f} points), "
                  f"{r['size_bytes']:,.0f} B (estimate was {r.get('shown_estimate', float('nan')):.2f} %) "
                  f"-> {r.get('artifact', '')}")
        else:
            print(f"  {key}: {r.get('status')}: {r.get('error', '')}")
    rec = state.get("recommendation")
    if rec:
        print(f"recommendation: {rec['artifact']} ({rec['reason']})")
    else:
        print("recommendation: none of the confirmed variants meets the budget")
    return state
