"""What-if: prune and quantize a checkpoint in memory and see what it would cost, one slider move at a time.

`WhatIf(checkpoint)` opens a float checkpoint once and keeps what every move needs: the model, one
global ranking of its weight magnitudes (engine/methods/prune/masks.py: sorted once, so a sparsity is an
index into it), the BatchNorm-folded copy that simulated quantization rounds (engine/methods/quant/common.py,
as the `fake` method does), a fixed, seeded subset of the test split as one tensor, and the dense
model's batch-1 latency, timed once. `evaluate(sparsity, mode, bits, granularity)` then

1. prunes: `unstructured` zeroes the smallest weights under one global magnitude threshold (as
   `prune.global_unstructured` does); `channels` removes that fraction of channels from every
   layer with Torch-Pruning (as `prune.structured` does, L1 filter norm, classifier outputs kept);
2. at fewer than 32 bits, fake-quantizes every Conv/Linear weight of the folded model with
   engine/deploy/qmaths.py (symmetric min-max, per channel or per tensor; zeros stay zero), as the
   `fake` method does;
3. evaluates the subset in one forward, and sizes the model with engine.deploy.measure.storage (the
   sparse-or-dense bytes of each weight at its width, plus quantization parameters).

Positions already seen are answered from a memo (an LRU keyed by the rounded slider values), so
moving back is instant; a channel cut, which needs a Torch-Pruning trace, is kept per ratio too.

The subset is held in a seeded random order, so every prefix of it is a random sample:
engine/methods/whatif_live.py measures a position progressively with `prepare` (the model holding the
position's weights, and its size fields) and `score_range` (sums over a range of the subset), and files
the finished count with `remember`; its counts equal `evaluate`'s one forward exactly. The models and the
subset sit on the GPU when one is present (`device="auto"`; `device` says which ran). `warm=False`
leaves the checkpoint's own measurement and the dense timing to the caller (the page's background thread).

Latency is honest about what it is: the dense float model's batch-1 latency stands for every
unstructured or simulated variant and is labelled *estimated* (zeros and simulated bits run through
the same dense kernels); a channel cut is a smaller dense model, timed briefly for real.

"Save as a run" is the `whatif` task below: it rebuilds the variant from the checkpoint and measures it
with `engine.deploy.measure` on the whole test split (real latency, `simulated` when bits < 32), and saves it
as a checkpoint (packed at its width when bits < 32, float otherwise).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from engine.core.config import check_choice, check_range, param
from engine.core.context import RunContext
from engine.core.errors import CheckpointError, ConfigError
from engine.core.point import Point
from engine.core.progress import Progress
from engine.deploy import formats, timing
from engine.deploy import qmaths as maths
from engine.deploy.measure import ModelForm, measure_latency, prunable_weights, storage
from engine.deploy.quantized import fold_batchnorm
from engine.methods.prune.channels import prune_channels
from engine.methods.prune.importance import weight_magnitudes
from engine.methods.prune.masks import Ranking, apply_masks, rank
from engine.methods.quant.common import simulated_backend
from engine.methods.tasks import measure_point, open_checkpoint, register_task, save_float_variant
from engine.model.checkpoint import (
    CheckpointMeta,
    describe_lineage,
    read_meta,
    saved_checkpoints,
    write_checkpoint,
)
from engine.model.data import DEFAULT_ROOT
from engine.model.evaluation import choose_device, eval_indices
from engine.model.outputs import SaveOptions, claim_output, default_out_dir
from engine.model.train import scores
from engine.model.zoo import MODELS

# a slider move times a channel cut by the timing protocol, kept short: three rounds of a few calls, a third of
# a second at most when other processes disturb it (the answer is labelled estimated)
SLIDER_TIMING = timing.Policy(rounds=3, max_rounds=3, block_seconds=0.005, min_calls=2, budget_s=0.3, wait_s=0.02, bootstrap=10)
MODES = ("unstructured", "channels")  # global magnitude masks, or whole channels removed
MODE_WORDS = {"unstructured": "global unstructured (magnitude)", "channels": "structured channels (L1)"}
MAX_SPARSITY = 0.99
DEFAULT_EVAL_SAMPLES = 250  # test images a move evaluates: sized for the 300 ms target on 2 cores (bench_whatif.py)
MEMO_SIZE = 512  # positions remembered
CUT_MEMO_SIZE = 4  # channel-cut models remembered (one per ratio: three model copies each)
MASK_MEMO_SIZE = 8  # unstructured masks remembered (one bool per weight each)
EVAL_CHUNK = 1000  # images per forward: the default subset is one forward; bigger ones are chunked to bound memory
SYMMETRIC = True  # the quantizer: symmetric min-max, so a pruned zero stays exactly zero
OBSERVER = "minmax"
ESTIMATED_NOTE = ("estimated: unstructured sparsity and simulated bits do not change dense-kernel latency "
                  "(the dense float model's batch-1 latency, measured once)")
CUT_NOTE = "measured: batch-1 median of a brief timing of the channel-pruned float model"


def check_position(sparsity: float, mode: str, bits: int, granularity: str) -> None:
    check_range("sparsity", sparsity, 0, MAX_SPARSITY)
    check_choice("mode", mode, MODES)
    maths.check_bits("bits", bits)
    check_choice("granularity", granularity, maths.GRANULARITIES)


def position_key(sparsity: float, mode: str, bits: int, granularity: str) -> tuple:
    """The memo key: slider values rounded; at 32 bits the granularity does not matter."""
    return (round(float(sparsity), 4), mode, int(bits), granularity if bits < maths.FLOAT_BITS else "float")


# ---------------------------------------------------------------- the pieces (shared by the engine and the task)


def fast(t):
    """A model or image batch in channels-last layout: the same numbers, and about 1.4x less CPU per
    forward for these convolutions than the default layout (oneDNN)."""
    return t.to(memory_format=torch.channels_last) if isinstance(t, nn.Module) or t.dim() == 4 else t


def magnitude_ranking(model: nn.Module) -> Ranking:
    """Every Conv/Linear weight of `model` ranked by |w| together, once (one global threshold)."""
    layers = prunable_weights(model)
    return rank([n for n, _ in layers], weight_magnitudes(layers), "global")


def channel_cut(model: nn.Module, ratio: float, example: Tensor, arch: str) -> nn.Module:
    """A copy of `model` with `ratio` of every layer's channels removed (L1 filter norm; classifier outputs kept)."""
    classifier = MODELS.get(arch).classifier
    return prune_channels(copy.deepcopy(model), example, importance="l1", ratio=ratio, keep=(classifier,),
                          arch=arch).eval()


def quantize_weights(folded: nn.Module, weights: dict[str, Tensor], bits: int,
                     granularity: str) -> dict[str, maths.Codes]:
    """Each layer's (folded, pruned) float weight as integer codes at `bits`, loaded dequantized into `folded`."""
    per_channel = granularity == "per_channel"
    layers = dict(prunable_weights(folded))
    codes = {}
    with torch.no_grad():
        for name, w in weights.items():
            c = maths.quantize_codes(w, bits, symmetric=SYMMETRIC, per_channel=per_channel, observer=OBSERVER)
            layers[name].weight.copy_(c.dequantize())
            codes[name] = c
    return codes


def scheme(granularity: str) -> dict:
    """The quantizer as a packed checkpoint's meta.quant records it."""
    return {"granularity": granularity, "symmetric": SYMMETRIC, "observer": OBSERVER, "percentile": 99.99}


def describe(sparsity: float, mode: str, bits: int, granularity: str) -> str:
    """'global unstructured (magnitude) 50% + 4-bit per-channel (simulated)'."""
    words = [f"{'channels' if mode == 'channels' else 'sparsity'} {sparsity:.0%} ({MODE_WORDS[mode]})"
             if sparsity > 0 else "no pruning"]
    words.append(f"{bits}-bit {granularity.replace('_', '-')} weights (simulated)" if bits < maths.FLOAT_BITS
                 else "float weights")
    return " + ".join(words)


# ---------------------------------------------------------------- the engine behind the page


@dataclass(frozen=True)
class WhatIfResult:
    """One slider position: what the variant would score, weigh and cost."""

    sparsity: float  # the slider: fraction of weights (unstructured) or of channels (channels) removed
    mode: str
    bits: int
    granularity: str
    accuracy: float  # on the evaluation subset
    top5: float
    loss: float
    eval_samples: int  # images in the subset
    test_samples: int  # images in the test split it is drawn from
    params_total: int
    params_nonzero: int
    weight_sparsity: float  # zero fraction of the Conv/Linear weights (engine.deploy.measure.storage)
    size_bytes: int  # storage of a deployed copy (engine.deploy.measure.storage)
    reference_bytes: int  # the checkpoint's own size_bytes (dense float)
    compression: float  # reference_bytes / size_bytes
    latency_ms_b1: float | None
    latency_estimated: bool  # True: not measured on this variant (see latency_note)
    latency_note: str
    simulated: bool  # bits < 32: quantization simulated in float
    threshold: float | None  # the global |w| cut (unstructured)
    channels_kept: float | None  # fraction of conv channels left (channels)
    compute_ms: float  # how long computing this position took (a memo hit answers with the stored result)

    @property
    def description(self) -> str:
        return describe(self.sparsity, self.mode, self.bits, self.granularity)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class _Cut:
    """One channel ratio's smaller model: float (for 32 bits) and folded (for simulated bits)."""

    model: nn.Module
    folded: nn.Module
    folded_weights: dict[str, Tensor]
    channels_kept: float
    latency_ms_b1: float | None


class WhatIf:
    """A checkpoint held in memory for what-if moves (see the module docstring); thread-safe."""

    def __init__(self, checkpoint: str, eval_samples: int = DEFAULT_EVAL_SAMPLES, seed: int = 0,
                 data_root: str = DEFAULT_ROOT, latency: bool = True, memo_size: int = MEMO_SIZE,
                 warm: bool = True, device: str = "auto") -> None:
        started = time.perf_counter()
        self.checkpoint = checkpoint
        original, self.meta, data = open_checkpoint(checkpoint, data_root)
        self.dataset = data.name
        self.num_classes = data.num_classes
        self.device = choose_device(device)
        self.original = original.eval()  # never changed, on the CPU: channel cuts start from it
        x, y = data.test.tensors()
        idx = eval_indices(len(y), eval_samples, seed)
        # the subset in a seeded random order, so that its every prefix is itself a random sample (progressive
        # measurement grows along it); the set of images is eval_indices' whatever the order
        order = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed + 1))
        idx = idx[order]
        self.seed = seed
        self.test_samples = len(y)
        self.x, self.y = fast(x[idx]).to(self.device), y[idx].contiguous().to(self.device)
        self.example = x[:1].contiguous()  # what the structured method traces with (CPU)
        self.eval_samples = len(self.y)
        self.latency = latency
        self.memo_size = memo_size
        # unstructured: the float model whose weights each move rewrites, and its folded twin for simulated bits
        self.work = fast(copy.deepcopy(self.original).eval()).to(self.device)
        self.layers = dict(prunable_weights(self.work))
        self.dense = {n: m.weight.detach().clone() for n, m in self.layers.items()}
        self.ranking = magnitude_ranking(self.original)  # sorted once: a sparsity is an index
        self.folded = fast(fold_batchnorm(self.original)).to(self.device)
        self.folded_layers = dict(prunable_weights(self.folded))
        self.folded_dense = {n: m.weight.detach().clone() for n, m in self.folded_layers.items()}
        self.reference = storage(self.original)
        self.dense_latency_ms: float | None = None
        self.hits = self.misses = 0
        self._local = threading.local()  # last_hit per thread: each browser session runs on its own
        self._memo: OrderedDict[tuple, WhatIfResult] = OrderedDict()
        self._masks: OrderedDict[float, dict[str, Tensor]] = OrderedDict()
        self._cuts: OrderedDict[float, _Cut] = OrderedDict()
        self._loaded: dict[int, tuple] = {}  # id(model) -> the position whose weights it holds
        self._lock = threading.RLock()  # held while a model is rewritten or run
        self._facts = threading.Lock()  # held briefly around the memo, so reading it never waits on a forward
        self.baseline_key = position_key(0.0, "unstructured", maths.FLOAT_BITS, "per_channel")
        if warm:  # the checkpoint itself on the subset; its forward also warms the kernels the moves use
            self.time_dense()
            self.evaluate(0.0, "unstructured", maths.FLOAT_BITS, "per_channel")
            self._score(self.folded)
        self.setup_s = time.perf_counter() - started

    def time_dense(self) -> float | None:
        """Times the dense float model at batch 1 once (at construction, or first thing in the background when
        the engine was built without `warm`); every unstructured position reports it, labelled estimated."""
        if self.latency and self.dense_latency_ms is None:
            lat = measure_latency(self.original, self.example, batch_sizes=(1,), policy=timing.QUICK)
            with self._lock, self._facts:
                self.dense_latency_ms = lat["latency_ms_b1"]
                for key, r in self._memo.items():  # positions measured before the timing: they report it now
                    if r.latency_estimated and r.latency_ms_b1 is None:
                        self._memo[key] = dataclasses.replace(r, latency_ms_b1=self.dense_latency_ms)
                self._loaded.clear()
        return self.dense_latency_ms

    @property
    def baseline(self) -> WhatIfResult | None:
        """The checkpoint itself on the subset (None until measured, when the engine was built without `warm`)."""
        with self._facts:
            return self._memo.get(self.baseline_key)

    def remembered(self) -> list[WhatIfResult]:
        """The positions measured on the whole subset, oldest first."""
        with self._facts:
            return list(self._memo.values())

    def loaded_fields(self, key: tuple) -> dict | None:
        """The size and latency fields of a position some working model holds now (None if none does)."""
        for loaded_key, fields in list(self._loaded.values()):
            if loaded_key == key:
                return fields
        return None

    def lookup(self, key: tuple) -> WhatIfResult | None:
        with self._facts:
            return self._memo.get(key)

    # ------------------------------------------------------------ evaluation

    def evaluate(self, sparsity: float, mode: str = "unstructured", bits: int = maths.FLOAT_BITS,
                 granularity: str = "per_channel") -> WhatIfResult:
        """The variant at this position, from the memo when it was seen before (the same object)."""
        sparsity, bits = float(sparsity), int(bits)
        check_position(sparsity, mode, bits, granularity)
        key = position_key(sparsity, mode, bits, granularity)
        with self._lock:
            hit = self.lookup(key)
            if hit is not None:
                with self._facts:
                    self._memo.move_to_end(key)
                self.hits += 1
                self._local.hit = True
                return hit
            started = time.perf_counter()
            model, fields = self.prepare(key)
            result = self.remember(key, {**fields, **self._score(model)}, time.perf_counter() - started)
            self._local.hit = False
            return result

    def prepare(self, key: tuple) -> tuple[nn.Module, dict]:
        """The model holding this position's weights (rewritten unless it holds them already) and every field of
        its result but the scores. Call with the engine's lock held for as long as the model is used."""
        sparsity, mode, bits, granularity = key
        granularity = "per_channel" if granularity == "float" else granularity
        with self._lock:
            if mode == "unstructured":
                return self._unstructured(key, sparsity, bits, granularity)
            return self._channels(key, sparsity, bits, granularity)

    def remember(self, key: tuple, fields: dict, compute_s: float) -> WhatIfResult:
        """Files the result of a position measured on the whole subset in the memo."""
        sparsity, mode, bits, granularity = key
        granularity = "per_channel" if granularity == "float" else granularity
        result = WhatIfResult(sparsity=sparsity, mode=mode, bits=bits, granularity=granularity,
                              eval_samples=self.eval_samples, test_samples=self.test_samples,
                              reference_bytes=self.reference["size_bytes"], simulated=bits < maths.FLOAT_BITS,
                              compute_ms=compute_s * 1000, **fields)
        with self._facts:
            self._memo[key] = result
            if len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
            self.misses += 1
        return result

    def score_range(self, model: nn.Module, start: int, stop: int) -> dict:
        """Sums over subset images start..stop (in the subset's seeded order): correct, top5 correct, loss."""
        with torch.inference_mode():
            logits = model(self.x[start:stop]).float()
        y = self.y[start:stop]
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        return {"correct": int((topk[:, 0] == y).sum()), "top5": int((topk == y[:, None]).any(dim=1).sum()),
                "loss_sum": float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))}

    @property
    def last_hit(self) -> bool:
        """Whether this thread's latest evaluate() was answered from the memo."""
        return getattr(self._local, "hit", False)

    def _mask(self, sparsity: float) -> dict[str, Tensor]:
        masks = self._masks.get(sparsity)
        if masks is None:
            masks = {n: m.to(self.device) for n, m in self.ranking.masks(sparsity).items()}
            self._masks[sparsity] = masks
            if len(self._masks) > MASK_MEMO_SIZE:
                self._masks.popitem(last=False)
        return masks

    def _unstructured(self, key: tuple, sparsity: float, bits: int, granularity: str) -> tuple[nn.Module, dict]:
        model = self.work if bits >= maths.FLOAT_BITS else self.folded
        loaded = self._loaded.get(id(model))
        if loaded is not None and loaded[0] == key:
            return model, loaded[1]
        masks = self._mask(sparsity)
        if bits >= maths.FLOAT_BITS:
            with torch.no_grad():
                for name, layer in self.layers.items():
                    layer.weight.copy_(self.dense[name] * masks[name])
            groups = {}
        else:
            weights = {n: w * masks[n] for n, w in self.folded_dense.items()}
            codes = quantize_weights(self.folded, weights, bits, granularity)
            groups = {n: c.scale.numel() for n, c in codes.items()}
        t = self.ranking.thresholds(sparsity)["*"]
        fields = {**self._size(model, bits, groups),
                "latency_ms_b1": self.dense_latency_ms, "latency_estimated": True,
                "latency_note": ESTIMATED_NOTE if self.latency else "not timed",
                "threshold": t if t == t else None, "channels_kept": None}
        self._loaded[id(model)] = (key, fields)
        return model, fields

    def _channels(self, key: tuple, ratio: float, bits: int, granularity: str) -> tuple[nn.Module, dict]:
        cut = self.cut(ratio)
        model = cut.model if bits >= maths.FLOAT_BITS else cut.folded
        loaded = self._loaded.get(id(model))
        if loaded is not None and loaded[0] == key:
            return model, loaded[1]
        if bits >= maths.FLOAT_BITS:
            groups = {}
        else:
            codes = quantize_weights(cut.folded, cut.folded_weights, bits, granularity)
            groups = {n: c.scale.numel() for n, c in codes.items()}
        note = CUT_NOTE + ("; simulated bits do not change it" if bits < maths.FLOAT_BITS else "")
        fields = {**self._size(model, bits, groups), "latency_ms_b1": cut.latency_ms_b1,
                  "latency_estimated": False, "latency_note": note if self.latency else "not timed",
                  "threshold": None, "channels_kept": cut.channels_kept}
        self._loaded[id(model)] = (key, fields)
        return model, fields

    def cut(self, ratio: float) -> _Cut:
        """The channel-pruned model for `ratio` (made once per ratio, Torch-Pruning traces the model)."""
        with self._lock:
            cut = self._cuts.get(ratio)
            if cut is not None:
                self._cuts.move_to_end(ratio)
                return cut
            model = channel_cut(self.original, ratio, self.example, self.meta.arch) if ratio > 0 \
                else copy.deepcopy(self.original)
            latency = None
            if self.latency:  # timed by measure()'s protocol, briefly, before the layout change below
                latency = timing.time_forms({"cut": model.eval()}, self.example, policy=SLIDER_TIMING).forms["cut"].median_ms
            model, folded = fast(model).to(self.device), fast(fold_batchnorm(model)).to(self.device)
            before = sum(m.out_channels for m in self.original.modules() if isinstance(m, nn.Conv2d))
            after = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
            cut = _Cut(model, folded, {n: m.weight.detach().clone() for n, m in prunable_weights(folded)},
                       after / before, latency)
            self._cuts[ratio] = cut
            if len(self._cuts) > CUT_MEMO_SIZE:
                _, dropped = self._cuts.popitem(last=False)
                for m in (dropped.model, dropped.folded):
                    self._loaded.pop(id(m), None)
            return cut

    def _score(self, model: nn.Module) -> dict:
        """accuracy, top5 and loss on the subset: one forward of the whole subset (chunks above EVAL_CHUNK)."""
        with torch.inference_mode():
            logits = torch.cat([model(self.x[i : i + EVAL_CHUNK]).float() for i in range(0, len(self.y), EVAL_CHUNK)])
        return scores(logits, self.y)

    def _size(self, model: nn.Module, bits: int, groups: dict[str, int]) -> dict:
        st = storage(model, bits, groups)
        return {"params_total": st["params_total"], "params_nonzero": st["params_nonzero"],
                "weight_sparsity": st["sparsity"], "size_bytes": st["size_bytes"],
                "compression": self.reference["size_bytes"] / st["size_bytes"]}

    def variant(self, sparsity: float, mode: str = "unstructured", bits: int = maths.FLOAT_BITS,
                granularity: str = "per_channel") -> nn.Module:
        """A copy of the model a position evaluates (the folded model when bits < 32), for checks and export."""
        check_position(sparsity, mode, bits, granularity)
        key = position_key(sparsity, mode, bits, granularity)
        with self._lock:
            model, _ = self.prepare(key)
            return copy.deepcopy(model).cpu()

    def subset_caption(self) -> str:
        """'on 500 of 1,000 test images (a fixed subset, seed 0)'."""
        if self.eval_samples >= self.test_samples:
            return f"on all {self.test_samples:,} test images"
        return f"on {self.eval_samples:,} of {self.test_samples:,} test images (a fixed random subset, seed {self.seed})"


# ---------------------------------------------------------------- what the page lists and draws


@dataclass(frozen=True)
class CheckpointChoice:
    path: str
    arch: str
    dataset: str
    lineage: str
    run_name: str
    steps: int  # lineage steps (a trained model has 1)

    @property
    def label(self) -> str:
        return f"{self.arch} on {self.dataset}: {self.lineage} ({self.path})"


def float_checkpoints(artifacts: pd.DataFrame, runs: pd.DataFrame) -> list[CheckpointChoice]:
    """The float checkpoints that finished runs saved (those a method can start from), models with the
    shortest lineage first (a trained model before its variants), then newest first.

    `artifacts`: rows of Store.artifacts(); `runs`: rows of Store.list_runs() (run_id, name, status).
    Directories that are gone, unreadable or hold int8/packed weights are left out."""
    if artifacts.empty or runs.empty:
        return []
    finished = runs[runs["status"] == "finished"].set_index("run_id")["name"]
    rows = artifacts[(artifacts["kind"] == "checkpoint") & artifacts["run_id"].isin(finished.index)]
    rows = rows.sort_values("created_at", ascending=False)
    out = [CheckpointChoice(path, meta.arch, meta.dataset, describe_lineage(meta), str(finished[run_id]),
                            len(meta.lineage))
           for path, run_id, meta in saved_checkpoints(zip(rows["path"], rows["run_id"]))]
    return sorted(out, key=lambda c: c.steps)  # stable: newest first within the same depth


CURVE_COLUMNS = ("run_id", "run_name", "family", "method", "stage", "level", "level_name", "accuracy",
                 "size_bytes", "sparsity", "bits", "latency_ms_b1", "simulated", "input_checkpoint", "artifact")


def checkpoint_points(points: pd.DataFrame, checkpoint: str) -> pd.DataFrame:
    """The measured points of this checkpoint's runs: those that started from it or are it, with a
    `series` label per run and method, sorted along size. Paths are compared resolved."""
    if points.empty:
        return pd.DataFrame(columns=[*CURVE_COLUMNS, "series"])
    target = os.path.realpath(checkpoint)
    resolved: dict[str, str] = {}

    def same(path) -> bool:
        if not isinstance(path, str) or not path:
            return False
        if path not in resolved:
            resolved[path] = os.path.realpath(path)
        return resolved[path] == target

    inputs = points["input_checkpoint"] if "input_checkpoint" in points else pd.Series("", index=points.index)
    keep = inputs.map(same) | points["artifact"].map(same)
    df = points.loc[keep, [c for c in CURVE_COLUMNS if c in points.columns]].copy()
    df = df[df["accuracy"].notna() & df["size_bytes"].notna()]
    df["series"] = df["run_name"].fillna(df["run_id"]).astype(str) + " (" + df["method"].astype(str) + ")"
    return df.sort_values(["series", "size_bytes"]).reset_index(drop=True)


# ---------------------------------------------------------------- "Save as a run": the whatif task


@dataclass
class WhatIfConfig(SaveOptions):
    checkpoint: str = param("", "float checkpoint directory to start from (required)", role="input")
    sparsity: float = param(0.0, "fraction removed: of all Conv/Linear weights (unstructured, one global magnitude "
                                 "threshold) or of every layer's channels (channels)", lo=0, hi=MAX_SPARSITY)
    mode: str = param("unstructured", "unstructured: zero the smallest weights; channels: remove whole channels",
                      choices=MODES)
    bits: int = param(maths.FLOAT_BITS, "weight width; 32 = float, below 32 simulated (fake-quantized)",
                      lo=maths.MIN_BITS, hi=maths.MAX_BITS)
    granularity: str = param("per_channel", "quantization scales: per_channel or per_tensor",
                             choices=maths.GRANULARITIES)
    data_root: str = param(DEFAULT_ROOT, "where torchvision datasets live", role="machine")
    latency: bool = param(True, "time the model that runs (--no-latency: latency fields stay empty)", role="runner")

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint must name a checkpoint directory")

    def position(self) -> dict:
        return {"sparsity": self.sparsity, "mode": self.mode, "bits": self.bits, "granularity": self.granularity}


@dataclass
class Built:
    """A what-if variant rebuilt from its checkpoint."""

    model: nn.Module  # what is measured: the pruned float model, or its folded copy with simulated weights
    unfolded: nn.Module  # the pruned float model (its shapes rebuild a channel cut)
    codes: dict[str, maths.Codes] | None  # the quantized weights (bits < 32)
    extra: dict


def build_variant(model: nn.Module, arch: str, example: Tensor, sparsity: float, mode: str, bits: int,
                  granularity: str) -> Built:
    """Prunes a copy of `model` (masks from one global magnitude ranking, or a channel cut), then, below 32
    bits, folds BatchNorm and fake-quantizes every Conv/Linear weight: the same steps as `WhatIf.evaluate`."""
    check_position(sparsity, mode, bits, granularity)
    extra: dict = {}
    if mode == "unstructured":
        pruned = copy.deepcopy(model).eval()
        if sparsity > 0:
            ranking = magnitude_ranking(pruned)
            apply_masks(pruned, ranking.masks(sparsity))
            t = ranking.thresholds(sparsity)["*"]
            extra["threshold"] = t if t == t else None
    else:
        pruned = channel_cut(model, sparsity, example, arch) if sparsity > 0 else copy.deepcopy(model).eval()
        before = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
        extra["channels_kept"] = sum(m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)) / before
    if bits >= maths.FLOAT_BITS:
        return Built(pruned, pruned, None, extra)
    folded = fold_batchnorm(pruned)
    weights = {n: m.weight.detach().clone() for n, m in prunable_weights(folded)}
    return Built(folded, pruned, quantize_weights(folded, weights, bits, granularity), extra)


@register_task("whatif", WhatIfConfig, "a what-if position (sparsity, mode, bits, granularity) rebuilt from a "
                                       "checkpoint, measured on the whole test split and saved")
def whatif_task(cfg: WhatIfConfig, ctx: RunContext) -> list[Point]:
    meta = read_meta(cfg.checkpoint)
    if meta.weights_format != "float":
        raise CheckpointError(f"{cfg.checkpoint} holds {meta.weights_format} weights; a what-if starts from a "
                              f"float checkpoint")
    claim = (claim_output(cfg.out or default_out_dir(meta.arch, meta.dataset, "whatif"), [cfg.checkpoint],
                          cfg.overwrite, describe={"task": "whatif", "input_checkpoint": cfg.checkpoint})
             if cfg.save else nullcontext(None))
    with claim as root:
        model, meta, data = open_checkpoint(cfg.checkpoint, cfg.data_root)
        ctx.progress(Progress(0.1, f"building {describe(**cfg.position())}"))
        built = build_variant(model, meta.arch, data.test.tensors()[0][:1], **cfg.position())
        ctx.cancel.raise_if_cancelled()
        simulated = cfg.bits < maths.FLOAT_BITS
        structured = cfg.mode == "channels" and cfg.sparsity > 0
        family = "quantize" if simulated else "prune"
        if simulated:
            level, level_name = float(cfg.bits), "bits"
        else:
            level, level_name = cfg.sparsity, "channel_ratio" if cfg.mode == "channels" else "sparsity"
        params = cfg.position()
        form = None
        artifact = ""
        if simulated:
            assert built.codes is not None
            assignment = {n: cfg.bits for n in built.codes}
            backend = simulated_backend(f"int{cfg.bits}")
            blob = formats.packed_bytes(built.model, built.codes)
            form = ModelForm(backend=backend, weight_bits=assignment,
                             quant_groups={n: c.scale.numel() for n, c in built.codes.items()}, simulated=True,
                             artifact=blob)
            if root is not None:
                quant = formats.packed_quant_meta(assignment, scheme(cfg.granularity), backend)
                if structured or meta.layer_shapes == "shape":
                    quant["arch_shapes"] = formats.arch_shapes(built.unfolded)
                artifact = _save_packed(root, blob, meta, family, params, cfg.checkpoint, level, level_name,
                                        quant, "shape" if structured else meta.layer_shapes)
        elif root is not None:
            artifact = save_float_variant(str(root), built.model, meta, family=family, method="whatif",
                                          params=params, input_checkpoint=cfg.checkpoint, level=level,
                                          level_name=level_name, by_shape=structured)
        if artifact:
            ctx.log_artifact(artifact, "checkpoint")
        ctx.progress(Progress(0.5, "measuring on the test split"))
        stage = "baseline" if cfg.sparsity == 0 and not simulated else "variant"
        point = measure_point(ctx, built.model, data, form=form, latency=cfg.latency, family=family,
                              method="whatif", stage=stage, params=params, level=level, level_name=level_name,
                              input_checkpoint=cfg.checkpoint, artifact=artifact,
                              combined=describe(**cfg.position()), **built.extra)
        ctx.progress(Progress(1.0, "done"))
        return [point]


def _save_packed(root, blob: bytes, meta: CheckpointMeta, family: str, params: dict, input_checkpoint: str,
                 level: float, level_name: str, quant: dict, layer_shapes: str) -> str:
    new = meta.derived(family=family, method="whatif", params=params, input_checkpoint=input_checkpoint,
                       level=level, level_name=level_name, weights_format="packed", quant=quant,
                       layer_shapes=layer_shapes)
    write_checkpoint(root, blob, new)
    return str(root)
