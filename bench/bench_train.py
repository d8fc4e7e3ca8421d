"""Overhead of engine.model.train.fit against a bare PyTorch loop on the same model, data and seed.

Both loops see the same batches in the same order, use SGD with the same settings and evaluate
on the validation split once per epoch; the engine also reports progress every batch, sets the
LR schedule, checks the cancel token and checks for NaN. Runs alternate to share the machine's
noise. Prints the ratio engine / bare (target: <= 1.10).

    .venv/bin/python bench/bench_train.py [--model cnn_l] [--epochs 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.progress import CancelToken  # noqa: E402
from engine.model.data import load_dataset  # noqa: E402
from engine.model.train import TrainConfig, evaluate, fit, seed_everything  # noqa: E402
from engine.model.zoo import build_model  # noqa: E402


def bare_loop(model, data, cfg: TrainConfig) -> None:
    seed_everything(cfg.seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    x_all, y_all = data.train.tensors()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        for start in range(0, len(y_all), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        evaluate(model, data.val)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="cnn_l")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = load_dataset("mnist5k")
    cfg = TrainConfig(epochs=args.epochs, seed=0)
    c, h, _ = data.input_shape
    times = {"engine": [], "bare": []}
    for _ in range(args.repeats):
        for name in ("bare", "engine"):
            seed_everything(0)
            model = build_model(args.model, data.num_classes, c, h)
            t0 = time.perf_counter()
            if name == "engine":
                fit(model, data, cfg, progress=lambda p: None, cancel=CancelToken())
            else:
                bare_loop(model, data, cfg)
            times[name].append(time.perf_counter() - t0)
    e, b = statistics.median(times["engine"]), statistics.median(times["bare"])
    print(f"model {args.model}, mnist5k train split ({len(data.train)} images), {args.epochs} epoch(s), "
          f"{args.repeats} alternating repeats, {torch.get_num_threads()} threads")
    print(f"bare PyTorch loop   median {b:.2f} s  runs {[round(t, 2) for t in times['bare']]}")
    print(f"engine.model.train.fit    median {e:.2f} s  runs {[round(t, 2) for t in times['engine']]}")
    print(f"overhead ratio engine/bare = {e / b:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
