"""2:4 semi-structured sparsity against unstructured 50 % magnitude pruning, after the same fine-tuning.

Per model: the `nm` method (2:4, groups of 4 input-channel weights; layers whose input channels are not a multiple
of 4, a first conv on one grey channel and mobilenet_v2's depthwise convs, stay dense), then 50 % unstructured
magnitude pruning of exactly the layers 2:4 pruned, by the code `l1_unstructured` (each layer at 50 %) and
`global_unstructured` (one threshold across them) run on (engine.methods.prune.masks.rank), so the three differ only
in which half of the weights each keeps. All three fine-tune all layers with the same FinetuneConfig (same epochs,
learning rate and seed, masks re-applied after every step) and are measured the same way. Sizes: `size_bytes` is the
N:M format for 2:4 (2 values + 2x2 bits per 4) and the smaller of dense and a bitmap for unstructured; in fp32 both
come to 8.5 bytes per 4 weights, so the columns say 2:4 costs nothing in size against unstructured 50 %, and buys
the regular pattern a sparse tensor core needs. Latency is not timed here: on this CPU every one of them runs the
same dense kernels (the `nm` point says so). Nothing is saved.

`kept_l2` is the share of the pruned layers' squared weight magnitude a mask keeps before fine-tuning: per layer,
50 % unstructured keeps the most any 50 % mask can, so 2:4 (a constrained 50 %) can only keep less.

--quick: one fine-tuning epoch on 1000 training images, against the per-layer (l1) 50 % only; otherwise 2 epochs on
the whole training split, against both. A fine-tune this short leaves 2:4 far behind on resnet20 and mobilenet_v2
and moves a lot with the number of images (500 images gave 0.61 and 0.37 where 1000 gave 0.93 and 0.83): read the
quick rows as a smoke run, the full run for the comparison.
"""

from __future__ import annotations

import copy
import time

from engine.core.context import RunContext
from engine.deploy.measure import measure
from engine.methods.prune.finetune import FinetuneConfig, finetune, finetune_training
from engine.methods.prune.importance import weight_magnitudes
from engine.methods.prune.masks import apply_masks, mask_sparsity, rank
from engine.methods.prune.nm import NMConfig, nm, nm_mask
from engine.methods.tasks import open_checkpoint
from engine.model.checkpoint import read_meta
from engine.model.zoo import MODELS, get_module


def _row(model: str, method: str, m, dense_acc: float, dense_size: int, seconds: float, **extra) -> dict:
    return {"model": model, "method": method, "accuracy": m.accuracy, "drop": dense_acc - m.accuracy, **extra,
            "sparsity_all": m.sparsity, "size_kb": m.size_bytes / 1024, "size_vs_dense": m.size_bytes / dense_size,
            "seconds": seconds}


def kept_l2(layers: list, masks: dict) -> float:
    """The share of the layers' squared weight magnitude the masks keep."""
    total = sum(float(m.weight.detach().pow(2).sum()) for _, m in layers)
    return sum(float((m.weight.detach().pow(2) * masks[n]).sum()) for n, m in layers) / total


def rows(checkpoints: dict[str, str], args) -> list[dict]:
    tuning = FinetuneConfig(mode="all", train=finetune_training(epochs=1 if args.quick else 2),
                            samples=1000 if args.quick else None)
    scopes = (("layer", "unstructured 50% (l1, same layers)"), ("global", "unstructured 50% (global, same layers)"))
    out: list[dict] = []
    for name, ckpt in checkpoints.items():
        t0 = time.perf_counter()
        base, variant = nm(NMConfig(checkpoint=ckpt, latency=False, save=False, finetune=tuning), RunContext())
        seconds = time.perf_counter() - t0
        dense, sparse = base.measurement, variant.measurement
        pruned = variant.extra["nm_layers"]
        out.append(_row(name, "dense", dense, dense.accuracy, dense.size_bytes, 0.0, pruned_layers=len(pruned)))
        model, _, data = open_checkpoint(ckpt)
        classifier = MODELS.get(read_meta(ckpt).arch).classifier
        layers = [(n, get_module(model, n)) for n in pruned]
        out.append(_row(name, "2:4 (nm)", sparse, dense.accuracy, dense.size_bytes, seconds,
                        pruned_sparsity=variant.extra["pruned_layer_sparsity"],
                        kept_l2=kept_l2(layers, {n: nm_mask(m.weight, 2, 4) for n, m in layers}),
                        dense_layers=len(variant.extra["nm_skipped"])))
        scores = weight_magnitudes(layers)
        for scope, label in scopes[:1] if args.quick else scopes:
            t0 = time.perf_counter()
            masks = rank(pruned, scores, scope).masks(0.5)
            m = copy.deepcopy(model)
            apply_masks(m, masks)
            finetune(m, data, tuning, classifier=classifier, masks=masks)
            out.append(_row(name, label, measure(m, data, latency=False), dense.accuracy, dense.size_bytes,
                            time.perf_counter() - t0, pruned_sparsity=mask_sparsity(masks),
                            kept_l2=kept_l2(layers, masks)))
    return out

