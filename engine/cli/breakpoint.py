"""`python -m engine breakpoint RUN_ID`: where accuracy starts to fall steeply in a stored sweep.

Reads the run's points from the run store (read-only), builds the accuracy curve against --x and
runs the detectors of engine/analysis/breakpoint.py; prints each breakpoint with its reason and seed 002's
Table 3 row (accuracy and remaining parameters before pruning and at the breakpoint). The
detectors' settings are options generated from their configs; one a chosen detector does not
take is refused by name.
"""

from __future__ import annotations

import argparse

from engine.analysis.breakpoint import (
    DETECTORS,
    X_FIELDS,
    BreakpointResult,
    Curve,
    curve_from_points,
    detect,
    table3,
)
from engine.cli.common import print_json
from engine.cli.runs import DB_HELP
from engine.core.config import Config
from engine.core.options import OptionSet
from store import reading


def detector_options() -> OptionSet:
    return OptionSet.of({name: d.config for name, d in DETECTORS.items()})


def add_commands(sub: argparse._SubParsersAction) -> None:
    options = detector_options()
    p = sub.add_parser("breakpoint", help="find the breakpoint of a stored sweep: kneedle, slope_ratio, tolerance",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id", metavar="RUN_ID", help="a sweep's run id, or a unique prefix of one")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--detector", choices=[*DETECTORS.names(), "all"], default="all",
                   help="; ".join(f"{name}: {d.description}" for name, d in DETECTORS.items())
                   + "; all: each of them (default)")
    p.add_argument("--x", choices=list(X_FIELDS), default="params",
                   help="the curve's x: remaining parameters (params_nonzero, default), size_bytes, bits, "
                        "latency_ms_b1 or the swept level")
    options.add_to(p, taken=("--db", "--detector", "--x", "--json"))
    p.add_argument("--json", action="store_true", help="print the curve, the results and Table 3 as strict JSON")
    p.set_defaults(func=lambda args: cmd_breakpoint(args, options))


def detector_configs(args: argparse.Namespace, options: OptionSet) -> dict[str, Config]:
    """The config of each chosen detector from the options given. With one detector an option it does
    not take is refused; with `all` each detector takes the options that are its own."""
    if args.detector != "all":
        d = DETECTORS.get(args.detector)
        return {d.name: d.config.from_dict(options.values(args, d.name, what="--detector"))}
    return {name: d.config.from_dict(OptionSet({name: options.configs[name]}).values(args, name, what="--detector"))
            for name, d in DETECTORS.items()}


def cmd_breakpoint(args: argparse.Namespace, options: OptionSet) -> None:
    configs = detector_configs(args, options)  # bad options fail before the store is opened
    with reading(args.db) as store:
        run = store.get_run(args.run_id)
        points = store.run_points(run["run_id"])
    curve = curve_from_points(points, x=args.x)
    results = [detect(curve, name, cfg) for name, cfg in configs.items()]
    rows = table3(curve, results)
    if args.json:
        print_json({"run_id": run["run_id"], "run_name": run["name"], "x": args.x, "curve": curve.to_dict(),
                    "results": [r.to_dict() for r in results], "table3": rows})
        return
    print_breakpoints(run, curve, results, rows)


def print_breakpoints(run: dict, curve: Curve, results: list[BreakpointResult], rows: list[dict]) -> None:
    print(f"run {run['run_id']}  {run['name']}: {len(curve)} points, accuracy against {curve.x_label}")
    print(f"  reference  {_where(curve, 0)}  acc {curve.mean[0]:.4f} ± {curve.std[0]:.4f}")
    for r, row in zip(results, rows):
        if not r.found:
            print(f"  {r.detector:<11} {r.reason}")
            continue
        print(f"  {r.detector:<11} {_where(curve, r.index)}  acc {r.accuracy:.4f} ± {r.accuracy_std:.4f}: "
              f"{r.reason}")
        subset = curve.subset_bars()[2][r.index]
        if subset:  # a breakpoint the sweep did not report (other settings): still a subset estimate
            print(f"  {'':<11} an estimate, not measured on the whole split: {subset}")
        if row["compression_rate"] is not None:
            print(f"  {'':<11} params {row['params_before']:,.0f} -> {row['params_at_breakpoint']:,.0f}: "
                  f"{row['percentage_decrease']:.2f}% fewer, compression rate {row['compression_rate']:.1f}x")


def _where(curve: Curve, i: int) -> str:
    level = curve.levels[i] if curve.levels else None
    at = f"{curve.level_name or 'level'} {level:g}" if level is not None else "uncompressed"
    return at if curve.x_name == "level" else f"{at}, {curve.x_label}: {curve.x[i]:,.6g}"
