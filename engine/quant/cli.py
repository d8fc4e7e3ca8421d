"""`python -m engine quantize --checkpoint DIR --method {ptq_int8,dynamic_int8,fake,mixed,sensitivity,qat}`.

Options a method does not take are refused by name, so a typo never runs something else.
"""

from __future__ import annotations

import argparse
import dataclasses

from engine.cli import add_run_args, execute
from engine.errors import ConfigError
from engine.quant import METHODS
from engine.quant.qat import default_qat_training
from engine.train import TrainConfig

# CLI option (argparse dest) -> config field, for the options that map one to one
FIELDS = {
    "granularity": "granularity", "symmetric": "symmetric", "observer": "observer", "percentile": "percentile",
    "activation_bits": "activation_bits", "calib_batches": "calib_batches", "calib_batch_size": "calib_batch_size",
    "engine": "engine", "backend": "backend", "fallback": "fallback", "max_drop": "max_accuracy_drop",
    "target_bits": "target_bits", "val_samples": "val_samples", "out": "out", "seed": "seed", "control": "control",
}
TRAIN_OPTIONS = {"epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "optimizer": "optimizer"}


def parse_bits(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise ConfigError(f"--bits must be comma-separated whole numbers, e.g. 2,3,4,8; got {text!r}") from None


def build_config(args: argparse.Namespace):
    method = METHODS[args.method]
    fields = {f.name for f in dataclasses.fields(method.config)}
    values: dict = {"checkpoint": args.checkpoint, "data_root": args.data_root, "latency": not args.no_latency}

    def refuse(option: str) -> None:
        raise ConfigError(f"--{option.replace('_', '-')} does not apply to --method {args.method}")

    for dest, name in FIELDS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if name not in fields:
            refuse(dest)
        values[name] = value
    train = {name: getattr(args, dest) for dest, name in TRAIN_OPTIONS.items() if getattr(args, dest) is not None}
    if train:
        if "train" not in fields:
            refuse(next(iter(train)))
        values["train"] = TrainConfig(**{**default_qat_training().to_dict(), **train})
    if args.bits is not None:
        bits = parse_bits(args.bits)
        if "bits" not in fields:
            if bits != (8,):
                raise ConfigError(f"{args.method} is 8-bit; --bits must be 8 (use --method fake for other widths)")
        elif args.method == "qat":
            if len(bits) != 1:
                raise ConfigError(f"--method qat trains for one width; --bits must be one number in [2, 8], "
                                  f"got {args.bits!r}")
            values["bits"] = bits[0]
        else:
            values["bits"] = bits
    return method.task, method.config(**values)


def cmd_quantize(args: argparse.Namespace) -> None:
    task, config = build_config(args)
    execute(args, task, config)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="quantize a checkpoint: int8, simulated sweeps, mixed precision, QAT",
                       description="; ".join(f"{m.name}: {m.description}" for m in METHODS.values()))
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--method", required=True, choices=list(METHODS))
    p.add_argument("--bits", help="widths, comma-separated, each in [2, 32] (fake: the sweep, default "
                                  "2,3,4,5,6,7,8,12,16,20,26,32; mixed: the ladder; sensitivity: widths per layer; "
                                  "qat: one width in [2, 8])")
    p.add_argument("--granularity", choices=["per_channel", "per_tensor"])
    sym = p.add_mutually_exclusive_group()
    sym.add_argument("--symmetric", dest="symmetric", action="store_const", const=True)
    sym.add_argument("--asymmetric", dest="symmetric", action="store_const", const=False)
    p.add_argument("--observer", choices=["minmax", "percentile", "mse"], help="how ranges are chosen")
    p.add_argument("--percentile", type=float, help="the percentile observer's clipping point (default 99.99)")
    p.add_argument("--activation-bits", type=int, help="fake: also quantize each layer's input at this width")
    p.add_argument("--calib-batches", type=int, help="int8 / activations: calibration batches (default 10)")
    p.add_argument("--calib-batch-size", type=int, help="images per calibration batch (default 32)")
    p.add_argument("--engine", choices=["x86", "onednn", "qnnpack"], help="int8 kernels (default x86)")
    p.add_argument("--backend", help="int8 backend implementation (default fx)")
    p.add_argument("--fallback", choices=["error", "dynamic_int8"],
                   help="ptq_int8: what to do if the model cannot be converted (default error)")
    p.add_argument("--max-drop", type=float, help="mixed: stop before validation accuracy drops more (0.01 = 1 pt)")
    p.add_argument("--target-bits", type=float, help="mixed: stop at this average width")
    p.add_argument("--val-samples", type=int, help="mixed: validation images the search uses (default 500)")
    p.add_argument("--epochs", type=int, help="qat: fine-tuning epochs (default 1)")
    p.add_argument("--lr", type=float, help="qat: learning rate (default 0.01)")
    p.add_argument("--batch-size", type=int, help="qat: batch size (default 64)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], help="qat: optimizer (default sgd)")
    p.add_argument("--control", action="store_const", const=True,
                   help="qat: also fine-tune in float for the same epochs, then PTQ (separates QAT from training)")
    p.add_argument("--seed", type=int, help="seeds calibration sampling and training (default 0)")
    p.add_argument("--out", help="ptq_int8 / dynamic_int8: also write the int8 model to this file")
    p.add_argument("--no-latency", action="store_true", help="skip timing")
    add_run_args(p)
    p.set_defaults(func=cmd_quantize)
