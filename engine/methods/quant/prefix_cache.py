"""Prefix activation cache: score many weight assignments that share the weights of their first
layers, running each from the first layer where it differs instead of from the image.

The model is traced with torch.fx and its graph cut just before every Conv/Linear call; at a cut the
values still needed later (the layer's input, plus whatever a skip connection carries past it, so
residual blocks stay exact) are the cut's *state*. What a state holds depends only on the widths of
the layers computed before its cut, so states are kept, up to a memory budget, keyed by those
widths, and reused by every later assignment that agrees on them:

- a candidate that lowers layer k of a base assignment runs from the base's state at cut k;
- the next base of a greedy search (the winning candidate) finds the states of the old base before
  the layer it lowered, and the winner's own states after it when `evaluate_changes` was told which
  candidate a search will keep (`keep`): a step then runs no layer of its base again;
- a full assignment (`evaluate`) runs from the deepest cut whose state is kept.

Every segment runs the very ops of the model in the same batches `evaluate_tensors` uses, so scores
are bit-for-bit those of a full forward. The one op replaced is a 2x2 max-pool (stride 2, no padding),
by the elementwise maximum of its four strided views: a max is exact, and it runs several times faster
than `max_pool2d`, which also computes indices nobody reads. A segment that changes one of its inputs
in place (an inplace ReLU on a skip value) gets a copy of that input, found on its first run from the
tensors' version counters, so kept states are never touched. A model fx cannot trace, or a layer
called more than once, falls back to a full forward for the layers concerned: slower, never different.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from engine.methods.quant.common import LayerWeights, evaluate_tensors
from engine.model.train import scores

EVAL_BATCH = 512  # evaluate_tensors' batch size: same batches, same numbers
STATE_BYTES = 768 << 20  # kept states (plus at most half as much for the candidate a search keeps)

CHUNK = 100  # images in the first (hardest) chunk; each next chunk is twice the one before
LOSS_MARGIN = 1e-5  # relative: a partial loss must pass the best loss by this much to prove it worse
Change = tuple[str, int]


@dataclass
class Cut:
    """Where the graph is cut: just before `layer` is called."""

    layer: str
    live: list[fx.Node]  # values computed before the cut that the rest of the graph reads
    advance: fx.GraphModule  # live values of the previous cut (or the input) -> live values here
    suffix: fx.GraphModule  # live values here -> the model's output
    before: tuple[str, ...] = ()  # the layers (of those asked for) computed before the cut


def max_pool_2x2(x: Tensor) -> Tensor:
    """`F.max_pool2d(x, 2)` exactly (the maximum of each 2x2 window, NaN propagating), without indices."""
    if x.dim() != 4:
        return F.max_pool2d(x, 2)
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[:, :, :h, :w]
    return torch.maximum(torch.maximum(x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]),
                         torch.maximum(x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]))


def _is_pool_2x2(module: nn.Module) -> bool:
    def pair(v: object) -> tuple:
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (type(module) is nn.MaxPool2d and pair(module.kernel_size) == (2, 2)
            and pair(module.stride or module.kernel_size) == (2, 2) and pair(module.padding) == (0, 0)
            and pair(module.dilation) == (1, 1) and not module.ceil_mode and not module.return_indices)


def _segment(root: fx.GraphModule, body: list[fx.Node], inputs: list[fx.Node],
             outputs: list[fx.Node] | None) -> fx.GraphModule:
    """The nodes `body` as a module taking `inputs` and returning `outputs` (None: the body ends in the output)."""
    graph = fx.Graph()
    env = {n: graph.placeholder(f"live_{i}") for i, n in enumerate(inputs)}
    for node in body:
        if (node.op == "call_module" and len(node.args) == 1 and not node.kwargs
                and _is_pool_2x2(root.get_submodule(node.target))):
            env[node] = graph.call_function(max_pool_2x2, (env[node.args[0]],))
        else:
            env[node] = graph.node_copy(node, lambda a: env[a])
    if outputs is not None:
        graph.output(tuple(env[o] for o in outputs))
    return fx.GraphModule(root, graph)  # shares the model's modules: weights loaded later are seen


def graph_cuts(model: nn.Module, layers: list[str]) -> list[Cut]:
    """The cuts before each of `layers` that fx can make, in execution order ([] if the model does not trace)."""
    try:
        traced = fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - data-dependent control flow and the like: every layer falls back
        return []
    nodes = list(traced.graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    calls: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, n in enumerate(nodes):
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
            first.setdefault(n.target, i)
    wanted = set(layers)
    cuts: list[Cut] = []
    body_start, previous = 0, [n for n in nodes if n.op == "placeholder"]
    for i, node in enumerate(nodes):
        if node.op != "call_module" or node.target not in wanted or calls[node.target] != 1:
            continue
        live = [n for n in nodes[:i] if any(position[u] >= i for u in n.users)]
        compute = [n for n in nodes[body_start:i] if n.op != "placeholder"]
        before = tuple(name for name in layers if first.get(name, len(nodes)) < i)
        cuts.append(Cut(node.target, live, _segment(traced, compute, previous, live),
                        _segment(traced, nodes[i:], live, None), before))
        body_start, previous = i, live
    return cuts


def _nbytes(state: list | tuple) -> int:
    """Bytes of the tensors in a state (a list of per-chunk tuples) or one chunk's tuple."""
    if isinstance(state, Tensor):
        return state.numel() * state.element_size()
    return sum(_nbytes(t) for t in state if isinstance(t, (Tensor, list, tuple)))


class StateStore:
    """Cut states by key, least recently used dropped first once they pass `budget` bytes."""

    def __init__(self, budget: int):
        self.budget, self.bytes = budget, 0
        self.entries: OrderedDict[Hashable, tuple[list[tuple], int]] = OrderedDict()

    def get(self, key: Hashable) -> list[tuple] | None:
        if key not in self.entries:
            return None
        self.entries.move_to_end(key)
        return self.entries[key][0]

    def put(self, key: Hashable, state: list[tuple]) -> None:
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        size = _nbytes(state)
        if size > self.budget:
            return
        self.entries[key] = (state, size)
        self.bytes += size
        while self.bytes > self.budget:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.bytes -= dropped


class CandidateEvaluator:
    """Validation scores (accuracy, top5, loss) of weight assignments on fixed tensors, counting how
    many it tried, how many of those ran from the input, how many it dropped part-way (`abandon`)
    and how many segments it ran.

    With cuts, the images run in chunks (`chunk` images, then twice as many each time), hardest first
    (by the loss of the first assignment scored), and the logits are put back in their order before
    scoring. The first scoring
    also runs the model as `evaluate_tensors` does and compares the logits bit for bit: chunks are used
    only where they give the very same numbers (per-image results do not depend on the batch on these
    kernels); elsewhere the evaluator keeps `evaluate_tensors`' batches and order."""

    def __init__(self, model: nn.Module, weights: LayerWeights, x: Tensor, y: Tensor, *, cached: bool = True,
                 progress: Callable[[str], None] | None = None, memory_bytes: int = STATE_BYTES,
                 chunk: int | None = None):
        self.model, self.weights, self.x, self.y = model.eval(), weights, x, y
        self.cuts = graph_cuts(model, list(weights.layers)) if cached else []
        self.progress = progress or (lambda _message: None)
        self.store = StateStore(memory_bytes)
        self.keep_bytes = memory_bytes // 2
        self.chunk = chunk or CHUNK
        self.evaluations = 0  # assignments tried (scored, or abandoned part-way)
        self.full_forwards = 0  # of which ran from the input (the rest from a kept cut state)
        self.abandoned = 0  # of which were dropped part-way: their images so far proved another one better
        self.segments = 0.0  # cut-to-cut segments run, in runs over every image (a full forward: cuts + 1)
        self.chunked: bool | None = None  # None until the first scoring checks that chunks are exact
        self._order = torch.arange(len(y))
        self._input: list[tuple] = []
        self._labels: list[Tensor] = []
        self._mutates: dict[tuple[int, bool], tuple[bool, ...]] = {}

    @property
    def cached_layers(self) -> list[str]:
        return [c.layer for c in self.cuts]

    # ------------------------------------------------------------ scoring

    def evaluate(self, bits: dict[str, int]) -> dict[str, float]:
        """Scores of the model with every layer at `bits`, run from the deepest kept state that agrees."""
        self.weights.apply(bits)
        self.evaluations += 1
        if not self.cuts:
            self.full_forwards += 1
            self.segments += 1
            return evaluate_tensors(self.model, self.x, self.y, EVAL_BATCH)
        if self.chunked is None:
            self.full_forwards += 1
            return scores(self._set_up(bits), self.y)
        start, state = self._deepest(bits)
        if start < 0:
            self.full_forwards += 1
        return scores(self._logits(self._finish(start, state, bits)), self.y)

    def evaluate_changes(self, base: dict[str, int], changes: list[Change],
                         keep: Callable[[Change, dict[str, float]], tuple] | None = None,
                         abandon: bool = False) -> list[dict[str, float] | None]:
        """Scores of `base` with one layer changed, for each (layer, bits) of `changes` (in that order).

        `keep(change, scores)` ranks the candidates (the first of equals wins): the states of the one it
        ranks highest are kept, for a search that makes it its next base. With `abandon` (a search
        that takes the highest accuracy, then the lowest loss, as greedy does), a candidate is dropped
        (None) as soon as the images it has run prove that it scores either a lower accuracy than a
        candidate already scored, or no higher accuracy and a higher loss; so the candidate the search
        takes is always scored, on every image. The model is left at `base`."""
        results: list[dict[str, float] | None] = [None] * len(changes)
        by_layer: dict[str, list[int]] = {}
        for i, (layer, _) in enumerate(changes):
            by_layer.setdefault(layer, []).append(i)
        if self.cuts and self.chunked is None:
            self.weights.apply(base)
            self._set_up(base)
        race = Race(keep, abandon, len(self.y))
        cut_of = {c.layer: k for k, c in enumerate(self.cuts)}
        for layer, indices in by_layer.items():  # layers without a cut: from the deepest state they share
            if layer not in cut_of:
                for i in indices:
                    self.progress(f"{layer} at {changes[i][1]} bits")
                    results[i] = self.evaluate({**base, layer: changes[i][1]})
                    race.scored(i, changes[i], results[i], None, [])
        self.weights.apply(base)
        wanted = sorted((cut_of[layer] for layer in by_layer if layer in cut_of), reverse=True)
        if wanted:
            held = self._base_states(base, wanted)
            if held is not None:  # every base state at hand: the cheapest candidates (deepest cuts) first
                for k in wanted:
                    self._candidates(k, held[k], base, changes, by_layer[self.cuts[k].layer], race, results)
            else:  # too big to hold at once: in cut order, advancing one base state
                state: list[tuple] = self._input
                for k in range(wanted[0] + 1):
                    state = self._base_state(k, base, state)
                    if k in wanted:
                        self._candidates(k, state, base, changes, by_layer[self.cuts[k].layer], race, results)
        for key, s in race.states:
            self.store.put(key, s)
        return results

    # ------------------------------------------------------------ candidates

    def _candidates(self, k: int, state: list[tuple], base: dict[str, int], changes: list[Change],
                    indices: list[int], race: Race, results: list) -> None:
        """Scores (or abandons) the candidates that change cut k's layer, from the base state at cut k."""
        layer, n = self.cuts[k].layer, len(self.y)
        for i in indices:
            self.progress(f"{layer} at {changes[i][1]} bits")
            bits = {**base, layer: changes[i][1]}
            self._load(layer, changes[i][1])
            collect = {j: [] for j in range(k + 1, len(self.cuts))} if race.keep is not None else None
            outs, correct, loss, done = [], 0, 0.0, 0
            for c, s in enumerate(state):
                outs.append(self._through(k, s, collect))
                if c == 0 and collect:
                    collect = _within(collect, len(state), self.keep_bytes)
                if race.bound is not None and c < len(state) - 1:
                    out, labels = outs[-1], self._labels[c]
                    correct += int((_top1(out) == labels).sum())
                    loss += float(F.cross_entropy(out, labels, reduction="sum"))
                    done += len(labels)
                    if race.loses(correct + n - done, loss / n):
                        break
            else:
                self.segments += len(self.cuts) - k
                logits = self._logits(outs)
                results[i] = scores(logits, self.y)
                self.evaluations += 1
                states = [(self._key(j, bits), st) for j, st in (collect or {}).items()]
                race.scored(i, changes[i], results[i], int((_top1(logits) == self.y).sum()), states)
                continue
            self.segments += (len(self.cuts) - k) * done / n
            self.evaluations += 1
            self.abandoned += 1
        self._load(layer, base[layer])

    def _base_states(self, base: dict[str, int], wanted: list[int]) -> dict[int, list[tuple]] | None:
        """The base's states at the `wanted` cuts (from the store, or run and stored), or None when they
        would not fit in the store together."""
        held: dict[int, list[tuple]] = {}
        state: list[tuple] = self._input
        for k in range(max(wanted) + 1):
            state = self._base_state(k, base, state)
            if k in wanted:
                held[k] = state
                if sum(_nbytes(s) for s in held.values()) > self.store.budget:
                    return None
        return held

    def _base_state(self, k: int, base: dict[str, int], previous: list[tuple]) -> list[tuple]:
        """The base's state at cut k: kept, or advanced from `previous` (its state at cut k - 1) and kept."""
        key = self._key(k, base)
        kept = self.store.get(key)
        if kept is not None:
            return kept
        state = [self._call(k, False, s) for s in previous]
        self.segments += 1
        self.store.put(key, state)
        return state

    # ------------------------------------------------------------ running segments

    def _set_up(self, bits: dict[str, int]) -> Tensor:
        """The first scoring (weights at `bits` loaded): the logits as `evaluate_tensors` computes them,
        the images ordered hardest first, and chunks used if they give the same logits bit for bit."""
        n = len(self.y)
        with torch.inference_mode():
            reference = torch.cat([self.model(self.x[i : i + EVAL_BATCH]).float() for i in range(0, n, EVAL_BATCH)])
        losses = F.cross_entropy(reference, self.y, reduction="none")
        self._use(torch.sort(losses, descending=True, stable=True).indices, self.chunk)
        same = torch.equal(self._logits(self._finish(-1, self._input, bits)), reference)
        if not same:
            self._use(torch.arange(n), EVAL_BATCH)
        self.chunked = same
        self.segments += 1
        return reference

    def _use(self, order: Tensor, size: int) -> None:
        """Images in `order`, in chunks of `size`, then each twice the one before, up to EVAL_BATCH: the
        hardest images, which settle most abandonments, in small chunks; the rest in the larger batches
        that run faster per image with several threads on a busy machine."""
        self._order = order
        x, y = self.x[order], self.y[order]
        bounds, start = [], 0
        while start < len(y):
            bounds.append((start, min(len(y), start + size)))
            start, size = start + size, min(EVAL_BATCH, size * 2)
        self._input = [(x[a:b],) for a, b in bounds]
        self._labels = [y[a:b] for a, b in bounds]
        self.store = StateStore(self.store.budget)  # states in another order are of no use

    def _logits(self, outs: list[Tensor]) -> Tensor:
        """The chunks' logits, back in the images' order."""
        chunked = torch.cat(outs)
        logits = torch.empty_like(chunked)
        logits[self._order] = chunked
        return logits

    def _key(self, k: int, bits: dict[str, int]) -> Hashable:
        return k, tuple(bits[n] for n in self.cuts[k].before)

    def _deepest(self, bits: dict[str, int]) -> tuple[int, list[tuple]]:
        """The deepest cut whose state under `bits` is kept, and that state (-1 and the input if none)."""
        for k in range(len(self.cuts) - 1, -1, -1):
            kept = self.store.get(self._key(k, bits))
            if kept is not None:
                return k, kept
        return -1, self._input

    def _finish(self, start: int, state: list[tuple], bits: dict[str, int]) -> list[Tensor]:
        """The logits of every chunk from the states at cut `start` (-1: the input), keeping each later
        cut's state under `bits`."""
        collect: dict[int, list] = {j: [] for j in range(start + 1, len(self.cuts))}
        outs = [self._through(start, s, collect) for s in state]
        self.segments += len(self.cuts) - start
        for j, st in collect.items():
            self.store.put(self._key(j, bits), st)
        return outs

    def _through(self, start: int, s: tuple, collect: dict[int, list] | None) -> Tensor:
        """One chunk from the state at cut `start` to the logits, its state at each later cut appended to
        `collect[cut]` where collect has that cut."""
        for j in range(start + 1, len(self.cuts)):
            s = self._call(j, False, s)
            if collect is not None and j in collect:
                collect[j].append(s)
        return self._call(len(self.cuts) - 1, True, s).float()

    def _call(self, k: int, suffix: bool, s: tuple) -> object:
        """Cut k's suffix (to the output) or advance (to cut k) on one chunk, never changing `s`."""
        module = self.cuts[k].suffix if suffix else self.cuts[k].advance
        with torch.no_grad():  # not inference_mode: version counters show a segment changing its inputs
            flags = self._mutates.get((k, suffix))
            if flags is None:  # first run: on copies, noting which inputs the segment changes in place
                copies = tuple(_copy(t) for t in s)
                versions = [t._version if isinstance(t, Tensor) else None for t in copies]
                out = module(*copies)
                self._mutates[(k, suffix)] = tuple(isinstance(t, Tensor) and t._version != v
                                                   for t, v in zip(copies, versions))
                return out
            return module(*(_copy(t) if f else t for t, f in zip(s, flags)))

    def _load(self, layer: str, bits: int) -> None:
        with torch.no_grad():
            self.weights.layers[layer].weight.copy_(self.weights.quantized(layer, bits))


class Race:
    """The candidates of one `evaluate_changes` call scored so far: the best by `keep` (whose states
    are kept) and, with `abandon`, the best by (accuracy, -loss) that the others must beat."""

    def __init__(self, keep: Callable | None, abandon: bool, n: int):
        self.keep, self.n = keep, n
        self.bound: tuple[int, float] | None = None if not abandon else (-1, math.inf)
        self.rank: tuple | None = None
        self.states: list[tuple[Hashable, list[tuple]]] = []

    def scored(self, i: int, change: Change, val: dict[str, float], correct: int | None, states: list) -> None:
        if self.bound is not None:
            if correct is None:
                correct = round(val["accuracy"] * self.n)
            if (correct, -val["loss"]) > (self.bound[0], -self.bound[1]):
                self.bound = (correct, val["loss"])
        if self.keep is not None:
            rank = (self.keep(change, val), -i)
            if self.rank is None or rank > self.rank:
                self.rank, self.states = rank, states

    def loses(self, most_correct: int, least_loss: float) -> bool:
        """Whether a candidate that can get at most `most_correct` right, at a mean loss of at least
        `least_loss`, certainly ranks below the best so far (the loss with a margin for rounding)."""
        best_correct, best_loss = self.bound
        return most_correct < best_correct or (
            most_correct <= best_correct and least_loss > best_loss * (1 + LOSS_MARGIN) + 1e-12)


def _within(collect: dict[int, list], chunks: int, budget: int) -> dict[int, list] | None:
    """The cuts of `collect` (filled for one chunk) whose states for every chunk fit in `budget`, in cut order."""
    kept, total = {}, 0
    for j, first in collect.items():
        total += _nbytes(first) * chunks
        if total > budget:
            break
        kept[j] = first
    return kept or None


def _top1(logits: Tensor) -> Tensor:
    """The predicted class as `scores` takes it (the first of topk)."""
    return logits.topk(min(5, logits.shape[1]), dim=1).indices[:, 0]


def _copy(t: object) -> object:
    return t.clone() if isinstance(t, Tensor) else t
