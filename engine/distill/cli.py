"""`python -m engine distill ...` and `python -m engine distill-methods`."""

from __future__ import annotations

import argparse
import json

from engine.cli import add_run_args, execute
from engine.distill.base import DISTILLERS
from engine.distill.task import DistillTask
from engine.errors import ConfigError
from engine.train import TrainConfig


def parse_param(text: str) -> tuple[str, object]:
    """'name=value' -> (name, value); the value is read as JSON when it can be (3, 0.5, true), else text."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ConfigError(f"--param takes NAME=VALUE, got '{text}'")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


def _layers(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def method_params(args: argparse.Namespace) -> dict:
    params = dict(parse_param(p) for p in args.param)
    for flag in ("temperature", "alpha", "beta"):
        if getattr(args, flag) is not None:
            params[flag] = getattr(args, flag)
    for flag in ("student_layers", "teacher_layers"):
        if getattr(args, flag):
            params[flag] = _layers(getattr(args, flag))
    return params


def cmd_distill(args: argparse.Namespace) -> None:
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                     schedule=args.schedule, seed=args.seed, augment=args.augment)
    cfg = DistillTask(teacher=args.teacher, student=args.student, method=args.method, params=method_params(args),
                      dataset=args.dataset, student_init=args.student_init, width=args.width,
                      train_subset=args.train_subset, data_root=args.data_root, out=args.out,
                      latency=not args.no_latency, train=tc)
    execute(args, "distill", cfg)


def method_names() -> list[str]:
    """The baseline first, then the methods by name."""
    return sorted(DISTILLERS.names(), key=lambda n: (n != "scratch", n))


def method_rows() -> list[dict]:
    rows = []
    for name in method_names():
        cls = DISTILLERS.get(name)
        rows.append({"method": name, "description": (cls.__doc__ or "").strip().splitlines()[0],
                     "settings": cls.config().to_dict()})
    return rows


def cmd_methods(args: argparse.Namespace) -> None:
    rows = method_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        settings = ", ".join(f"{k}={v!r}" for k, v in r["settings"].items()) or "(no settings)"
        print(f"{r['method']:<10} {r['description']}\n{'':<10} {settings}")


def add_commands(sub) -> None:
    names = method_names()
    p = sub.add_parser("distill", help="distil a teacher checkpoint into a student (" + ", ".join(names) + ")")
    p.add_argument("--teacher", required=True, help="teacher checkpoint directory")
    p.add_argument("--student", default="cnn_s", help="student architecture (see `models`; default cnn_s)")
    p.add_argument("--method", default="kd", choices=names, help="distillation method (default kd)")
    p.add_argument("--temperature", type=float, help="softmax temperature T (kd, mixup_kd, dkd, dml)")
    p.add_argument("--alpha", type=float, help="kd/mixup_kd: weight of the KD term; dkd: weight of TCKD")
    p.add_argument("--beta", type=float, help="dkd: weight of NCKD; at, fitnet, sp, vid, crd: weight of the feature term")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="any other setting of the method, e.g. warmup_epochs=2, students=3 (see distill-methods)")
    p.add_argument("--student-layers", help="feature methods: comma-separated student module paths (default: stages)")
    p.add_argument("--teacher-layers", help="feature methods: comma-separated teacher module paths, paired in order")
    p.add_argument("--dataset", help="dataset to distil on (default: the teacher's; another is rejected)")
    p.add_argument("--student-init", help="start the student from this checkpoint directory")
    p.add_argument("--width", type=float, default=1.0, help="student width multiplier (default 1.0)")
    p.add_argument("--train-subset", type=int, help="train on this many training images (seeded), for quick runs")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="random shifts (teacher outputs are then not cached)")
    p.add_argument("--out", help="checkpoint directory (dml: one student<i>/ inside it per student)")
    p.add_argument("--no-latency", action="store_true", help="skip timing the students")
    add_run_args(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("distill-methods", help="list the distillation methods and their settings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_methods)
