"""`python -m engine prune --checkpoint DIR --method METHOD ...`: every pruning method from the command line."""

from __future__ import annotations

import argparse

from engine.config import Config
from engine.errors import ConfigError
from engine.prune import METHODS, task_name
from engine.prune.finetune import FINETUNE_MODES, FinetuneConfig
from engine.prune.importance import CHANNEL_IMPORTANCE
from engine.prune.iterative import IterativeConfig
from engine.prune.lottery_ticket import LotteryTicketConfig
from engine.prune.masks import SCOPES
from engine.prune.sensitivity import SensitivityConfig
from engine.prune.structured import StructuredConfig
from engine.prune.unstructured import UnstructuredConfig

SWEEP_OPTIONS = {"sparsity", "repeats", "keep_first_last", "finetune", "epochs", "lr", "samples", "l1", "l2"}
# which options each method reads; any other option given is an error, not silently ignored
OPTIONS = {
    "l1_unstructured": SWEEP_OPTIONS,
    "global_unstructured": SWEEP_OPTIONS,
    "structured": SWEEP_OPTIONS | {"importance", "layer_ratios"},
    "iterative": {"sparsity", "scope", "rate", "iterations", "keep_first_last", "finetune", "epochs", "lr",
                  "samples", "l1", "l2"},
    "lottery_ticket": {"scope", "rate", "iterations", "rewind_step", "keep_first_last", "epochs", "lr", "samples"},
    "sensitivity": {"sparsity", "structured", "importance", "layers"},
}


def parse_levels(text: str, flag: str = "--sparsity") -> tuple[float, ...]:
    """'0.1,0.5' or with an ellipsis, '0,0.1,...,0.9' (the step is the first two values' difference)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if "..." in parts:
            i = parts.index("...")
            if i < 2 or i != len(parts) - 2:
                raise ValueError
            head = [float(p) for p in parts[:i]]
            start, step, end = head[0], head[1] - head[0], float(parts[-1])
            if step <= 0 or end < start:
                raise ValueError
            n = int(round((end - start) / step))
            return tuple(round(start + k * step, 10) for k in range(n + 1))
        return tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated numbers such as 0.5 or 0,0.1,...,0.9; got '{text}'") from None


def parse_layer_ratios(text: str) -> dict[str, float]:
    """'features.0.0=0.2,fc=0' -> {'features.0.0': 0.2, 'fc': 0.0}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        path, sep, value = part.partition("=")
        try:
            if not sep or not path:
                raise ValueError
            out[path.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--layer-ratios must look like layer.path=0.3,other.layer=0.5; got '{part}'") from None
    return out


def build_config(args: argparse.Namespace) -> Config:
    """The method's validated config from the parsed options."""
    method = args.method
    given = {k for k in ("sparsity", "repeats", "importance", "layer_ratios", "finetune", "epochs", "lr", "samples",
                         "l1", "l2", "scope", "rate", "iterations", "rewind_step", "layers")
             if getattr(args, k) is not None}
    given |= {k for k in ("keep_first_last", "structured") if getattr(args, k)}
    wrong = sorted(given - OPTIONS[method])
    if wrong:
        raise ConfigError(f"{_flags(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to --method {method}; "
                          f"it takes {_flags(sorted(OPTIONS[method]))}")
    common = {"checkpoint": args.checkpoint, "data_root": args.data_root, "seed": args.seed, "out": args.out}
    if method != "sensitivity":  # sensitivity makes a point per layer and ratio: it is not timed
        common["latency"] = not args.no_latency
    levels = parse_levels(args.sparsity) if args.sparsity is not None else None
    opt = {k: getattr(args, k) for k in given if k not in ("sparsity", "layer_ratios", "layers", "finetune", "epochs",
                                                           "lr", "samples", "l1", "l2", "iterations")}

    def tuning(default_mode: str) -> FinetuneConfig:
        base = FinetuneConfig(mode=args.finetune or default_mode)
        return FinetuneConfig(**{**base.to_dict(), **{k: getattr(args, k) for k in ("epochs", "lr", "samples", "l1", "l2")
                                                        if getattr(args, k) is not None}})

    if method in ("l1_unstructured", "global_unstructured"):
        return UnstructuredConfig(**common, **opt, **({"sparsities": levels} if levels else {}),
                                  finetune=tuning("none"))
    if method == "structured":
        ratios = levels if levels else ((0.0,) if args.layer_ratios else None)
        layer_ratios = parse_layer_ratios(args.layer_ratios) if args.layer_ratios else {}
        return StructuredConfig(**common, **opt, **({"ratios": ratios} if ratios else {}), layer_ratios=layer_ratios,
                                finetune=tuning("none"))
    if method == "iterative":
        extra = {"schedule": levels} if levels else {}
        if args.iterations is not None:
            extra["iterations"] = args.iterations
        return IterativeConfig(**common, **opt, **extra, finetune=tuning("all"))
    if method == "lottery_ticket":
        extra = {k: getattr(args, k) for k in ("epochs", "lr", "samples") if getattr(args, k) is not None}
        if args.iterations is not None:
            extra["rounds"] = args.iterations
        return LotteryTicketConfig(**common, **opt, **extra)
    layers = tuple(p.strip() for p in args.layers.split(",") if p.strip()) if args.layers else ()
    return SensitivityConfig(**common, **opt, **({"ratios": levels} if levels else {}), layers=layers)


def _flags(names: list[str]) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in names)


def cmd_prune(args: argparse.Namespace) -> None:
    from engine.cli import execute

    execute(args, task_name(args.method), build_config(args))


def add_commands(sub: argparse._SubParsersAction) -> None:
    from engine.cli import add_run_args

    p = sub.add_parser("prune", help="prune a checkpoint: unstructured, structured, iterative, lottery ticket, "
                                     "sensitivity", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory of the model to prune")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--sparsity", help="levels to sweep, e.g. 0,0.1,...,0.9 (default); structured: channel ratios; "
                                      "iterative: the sparsity after each iteration; sensitivity: ratios per layer")
    p.add_argument("--repeats", type=int, help="runs per level with seeds seed..seed+R-1 (mean +- std; default 1)")
    p.add_argument("--importance", choices=CHANNEL_IMPORTANCE, help="structured: channel score (default l1)")
    p.add_argument("--layer-ratios", help="structured: per-layer ratios, e.g. features.1.0.0=0.5,features.2.0.0=0.3")
    p.add_argument("--finetune", choices=FINETUNE_MODES,
                   help="after pruning: none, last (classifier only) or all layers (default none; iterative all)")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default 1); lottery_ticket: epochs per round (2)")
    p.add_argument("--lr", type=float, help="fine-tuning learning rate (default 0.01; lottery_ticket 0.05)")
    p.add_argument("--samples", type=int, help="fine-tune/train on this many training images (default all)")
    p.add_argument("--l1", type=float, help="L1 penalty weight on prunable weights while fine-tuning")
    p.add_argument("--l2", type=float, help="L2 penalty weight on prunable weights while fine-tuning")
    p.add_argument("--keep-first-last", action="store_true", help="leave the first conv and the classifier dense")
    p.add_argument("--scope", choices=SCOPES, help="iterative/lottery_ticket: rank per layer or globally (global)")
    p.add_argument("--rate", type=float, help="iterative/lottery_ticket: fraction of remaining weights pruned per "
                                              "step (default 0.2)")
    p.add_argument("--iterations", type=int, help="iterative: steps (default 4); lottery_ticket: rounds (3)")
    p.add_argument("--rewind-step", type=int, help="lottery_ticket: rewind to the weights after this many steps "
                                                   "(default 0 = initial weights)")
    p.add_argument("--structured", action="store_true", help="sensitivity: remove channels instead of weights")
    p.add_argument("--layers", help="sensitivity: comma-separated module paths (default every Conv/Linear)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="save every pruned model as a checkpoint directory under this folder")
    p.add_argument("--no-latency", action="store_true", help="skip timing the pruned models (sensitivity is never timed)")
    add_run_args(p)
    p.set_defaults(func=cmd_prune)
