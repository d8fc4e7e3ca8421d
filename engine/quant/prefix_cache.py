"""Prefix activation cache: score many weight assignments that differ from one base assignment in a
single layer, running each from that layer's input instead of from the image.

When a candidate changes only layer k, everything the model computes before layer k is the same as
for the base assignment. The model is traced with torch.fx and its graph cut at every Conv/Linear
call; at a cut the values still needed later (the layer's input, plus whatever a skip connection
carries past it, so residual blocks stay exact) are computed once per base and kept, and each
candidate runs only the segment from the cut to the output. A model fx cannot trace, or a layer
called more than once, falls back to a full forward for the layers concerned: slower, never
different. Batches are the ones `evaluate_tensors` uses, so scores are bit-for-bit the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn

from engine.quant.common import LayerWeights, evaluate_tensors
from engine.train import scores

EVAL_BATCH = 512  # evaluate_tensors' batch size: same batches, same numbers


@dataclass
class Cut:
    """Where the graph is cut: just before `layer` is called."""

    layer: str
    live: list[fx.Node]  # values computed before the cut that the rest of the graph reads
    advance: fx.GraphModule  # live values of the previous cut (or the input) -> live values here
    suffix: fx.GraphModule  # live values here -> the model's output


def _segment(root: fx.GraphModule, body: list[fx.Node], inputs: list[fx.Node],
             outputs: list[fx.Node] | None) -> fx.GraphModule:
    """The nodes `body` as a module taking `inputs` and returning `outputs` (None: the body ends in the output)."""
    graph = fx.Graph()
    env = {n: graph.placeholder(f"live_{i}") for i, n in enumerate(inputs)}
    for node in body:
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
    for n in nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    wanted = set(layers)
    cuts: list[Cut] = []
    body_start, previous = 0, [n for n in nodes if n.op == "placeholder"]
    for i, node in enumerate(nodes):
        if node.op != "call_module" or node.target not in wanted or calls[node.target] != 1:
            continue
        live = [n for n in nodes[:i] if any(position[u] >= i for u in n.users)]
        compute = [n for n in nodes[body_start:i] if n.op != "placeholder"]
        cuts.append(Cut(node.target, live, _segment(traced, compute, previous, live),
                        _segment(traced, nodes[i:], live, None)))
        body_start, previous = i, live
    return cuts


class CandidateEvaluator:
    """Validation scores (accuracy, top5, loss) of weight assignments on fixed tensors, counting how
    many it scored and how many of those ran the whole model."""

    def __init__(self, model: nn.Module, weights: LayerWeights, x: Tensor, y: Tensor, *, cached: bool = True,
                 progress: Callable[[str], None] | None = None):
        self.model, self.weights, self.x, self.y = model.eval(), weights, x, y
        self.cuts = graph_cuts(model, list(weights.layers)) if cached else []
        self.progress = progress or (lambda _message: None)
        self.evaluations = 0  # assignments scored
        self.full_forwards = 0  # of which ran from the input (the rest from a cached layer input)

    @property
    def cached_layers(self) -> list[str]:
        return [c.layer for c in self.cuts]

    def evaluate(self, bits: dict[str, int]) -> dict[str, float]:
        """Scores of the model with every layer at `bits` (a full forward)."""
        self.weights.apply(bits)
        self.evaluations += 1
        self.full_forwards += 1
        return evaluate_tensors(self.model, self.x, self.y, EVAL_BATCH)

    def evaluate_changes(self, base: dict[str, int], changes: list[tuple[str, int]]) -> list[dict[str, float]]:
        """Scores of `base` with one layer changed, for each (layer, bits) of `changes` (in that order).
        The model is left at `base`."""
        results: dict[int, dict[str, float]] = {}
        by_layer: dict[str, list[int]] = {}
        for i, (layer, _) in enumerate(changes):
            by_layer.setdefault(layer, []).append(i)
        cut_layers = set(self.cached_layers)
        for layer, indices in by_layer.items():  # layers without a cut: full forwards
            if layer not in cut_layers:
                for i in indices:
                    self.progress(f"{layer} at {changes[i][1]} bits")
                    results[i] = self.evaluate({**base, layer: changes[i][1]})
        self.weights.apply(base)
        if any(layer in by_layer for layer in cut_layers):
            self._run_cuts(base, changes, by_layer, results)
        return [results[i] for i in range(len(changes))]

    def _run_cuts(self, base: dict[str, int], changes: list[tuple[str, int]], by_layer: dict[str, list[int]],
                  results: dict[int, dict[str, float]]) -> None:
        last = max(k for k, c in enumerate(self.cuts) if c.layer in by_layer)
        with torch.inference_mode():
            state = [(self.x[i : i + EVAL_BATCH],) for i in range(0, len(self.y), EVAL_BATCH)]
            for cut in self.cuts[: last + 1]:
                state = [cut.advance(*s) for s in state]
                for i in by_layer.get(cut.layer, []):
                    self.progress(f"{cut.layer} at {changes[i][1]} bits")
                    self._load(cut.layer, changes[i][1])
                    # clones: an in-place op of the suffix must not touch the kept activations
                    logits = torch.cat([cut.suffix(*(t.clone() for t in s)).float() for s in state])
                    results[i] = scores(logits, self.y)
                    self.evaluations += 1
                self._load(cut.layer, base[cut.layer])

    def _load(self, layer: str, bits: int) -> None:
        with torch.no_grad():
            self.weights.layers[layer].weight.copy_(self.weights.quantized(layer, bits))
