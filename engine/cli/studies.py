"""`python -m engine study NAME [--dataset D] [--quick] [--db PATH] [--json]` and `study --list`.

A study runs its recipe (examples/study-NAME.yaml) in the run store, reusing every unit a finished run
already computed, then prints the seed's tables (the distillation studies: per regime, compression and low
data) and a verdict per finding and regime: reproduced, not reproduced, not distinguishable (inside the
repeats' spread) or not counted (both models near chance).
"""

from __future__ import annotations

import argparse

import pandas as pd

from engine.cli.common import add_run_args, print_json, run_labels
from engine.core.context import ConsoleContext
from engine.core.errors import UserError
from engine.run.studies import STUDIES, run_study, study_rows


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="reproduce a seed's experiment (kd-prune, kd-quant, compare-techniques) and "
                                     "print its tables")
    p.add_argument("name", nargs="?", metavar="NAME", choices=list(STUDIES), help=f"one of: {', '.join(STUDIES)}")
    p.add_argument("--list", action="store_true", help="list the studies and their recipes")
    p.add_argument("--dataset", help="run on this dataset instead of the recipe's (default mnist5k; mnist5k-hard leaves "
                                     "room below the ceiling)")
    p.add_argument("--quick", action="store_true", help="small budgets for a fast check (not findings)")
    add_run_args(p)
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> dict | list:
    if args.list or args.name is None:
        if args.name is None and not args.list:
            raise UserError(f"name a study ({', '.join(STUDIES)}) or use --list")
        rows = [study_rows(s) for s in STUDIES.values()]
        if args.json:
            print_json(rows)
        else:
            for r in rows:
                print(f"{r['name']:<20} seed {r['seeds']:<9} {r['recipe']:<40} {r['description']}")
        return rows
    console = ConsoleContext(quiet=args.json)
    try:
        run_name, tags = run_labels(args)
        result = run_study(args.name, args.db, dataset=args.dataset, quick=args.quick, echo=console,
                           run_name=run_name, tags=tags)
    finally:
        console.close()
    out = result.to_dict()
    if args.json:
        print_json(out)
        return out
    print(f"study {result.name} (seed {result.seeds}) on {result.dataset}{' --quick' if result.quick else ''}; "
          f"study run {', '.join(result.run_ids)}")
    for title, df in result.tables.items():
        print(f"\n{title}")
        print(format_table(df))
    print("\nNotes")
    for note in result.notes:
        print(f"- {note}")
    return out


def format_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(no rows: the units it needs did not run)"
    return df.to_string(index=not isinstance(df.index, pd.RangeIndex), float_format=_number, na_rep="-")


def _number(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}"
