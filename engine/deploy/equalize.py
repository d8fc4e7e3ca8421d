"""Cross-layer equalization and bias correction of a BatchNorm-folded model.

Nagel, van Baalen, Blankevoort & Welling, "Data-Free Quantization Through Weight Equalization and Bias
Correction" (ICCV 2019).

**Equalization.** For two layers in a row, y = W2 f(W1 x + b1) + b2, with f positively homogeneous
(ReLU, identity, max/avg pooling: f(x / s) = f(x) / s for s > 0), scaling output channel i of the first
layer by 1 / s_i and input channel i of the second by s_i leaves y unchanged. With r1_i the range of
row i of W1 and r2_i the range of column i of W2, s_i = sqrt(r1_i * r2_i) / r2_i makes both ranges
sqrt(r1_i * r2_i), so one per-tensor grid fits every channel about equally well (the paper's
Section 4.1). A layer in two pairs (conv -> depthwise -> conv, as in MobileNetV2) is equalized by
iterating over the pairs until the scales stop changing. ReLU6 is not positively homogeneous
(its clip at 6 moves with s); as the paper does for MobileNetV2 (and as Qualcomm AIMET's
`equalize_bn_folded_model` does), `relu6="replace"` swaps a ReLU6 between two paired layers for a ReLU,
which changes the float model slightly; `relu6="keep"` ends a chain at a ReLU6, so the float model's
function is exactly kept. The range of a channel is max |w| (the symmetric range, as AIMET takes it).
High-bias absorption (the paper's Section 4.1.1) is not done.

**Bias correction.** Quantized weights W~ = W + e shift a layer's expected output by e E[x]. The
empirical correction (the paper's Appendix: "comparing the activations of the quantized and full
precision model") measures, layer by layer in execution order, the mean output per channel of the
quantized model (every earlier layer already corrected) against the float model's on calibration
batches, and subtracts the difference from the bias. So each corrected layer's mean output on those
batches matches the float model's, including the shift that earlier layers' errors carried to it.

Pure functions of a model and tensors; the methods (engine/methods/quant/) decide when to call them.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from engine.core.errors import ConfigError
from engine.deploy.quantized import module_calls

RELU6_POLICIES = ("keep", "replace")
MAX_SWEEPS = 200  # passes over all pairs; MobileNetV2's chains settle in a few dozen
TOLERANCE = 1e-6  # stop when no scale of a pass differs from 1 by more than this (in log)

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# f(x / s) = f(x) / s for s > 0, channel by channel: what may lie between two equalized layers
HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                       nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                       nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                       nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
HOMOGENEOUS_FUNCTIONS = (F.relu, torch.relu, F.leaky_relu, F.dropout, F.max_pool1d, F.max_pool2d, F.max_pool3d,
                         F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                         F.adaptive_avg_pool3d)
HOMOGENEOUS_METHODS = ("relu", "relu_")


# ---------------------------------------------------------------- finding the pairs


@dataclass(frozen=True)
class Pair:
    """Two layers in a row: output channel i of `first` feeds only input channel i of `second`."""

    first: str  # its rows (output channels) are divided by s
    second: str  # its columns (input channels) are multiplied by s
    relu6: tuple[str, ...] = ()  # ReLU6 modules between them, replaced by ReLU when equalized


def _is_layer(m: nn.Module | None) -> bool:
    return isinstance(m, (*CONVS, nn.Linear))


def _homogeneous(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), HOMOGENEOUS_MODULES)
    if node.op == "call_function":
        return node.target in HOMOGENEOUS_FUNCTIONS
    return node.op == "call_method" and node.target in HOMOGENEOUS_METHODS


def _fits(first: nn.Module, second: nn.Module) -> bool:
    """Both convolutions or both Linear, with first's outputs being second's inputs."""
    if isinstance(first, nn.Linear) != isinstance(second, nn.Linear):
        return False
    if isinstance(first, CONVS) and type(first) is not type(second):
        return False
    outs = first.out_features if isinstance(first, nn.Linear) else first.out_channels
    ins = second.in_features if isinstance(second, nn.Linear) else second.in_channels
    return outs == ins


def equalization_pairs(model: nn.Module, relu6: str = "keep") -> list[Pair]:
    """The pairs of a (BatchNorm-folded) model that can be equalized, in graph order.

    A pair is a Conv (any groups, depthwise included) or Linear whose output goes, through nothing but
    positively homogeneous ops each used once (ReLU, a folded BatchNorm's Identity, pooling, dropout),
    to one Conv (of the same kind) or Linear. A layer whose output is also used elsewhere (a residual
    addition) ends the chain; so does a BatchNorm that was not folded. A ReLU6 module ends it too unless
    `relu6="replace"` (then it is listed in the pair, to be replaced by ReLU)."""
    if relu6 not in RELU6_POLICIES:
        raise ConfigError(f"relu6 must be one of {', '.join(RELU6_POLICIES)}; got {relu6!r}")
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as e:  # noqa: BLE001 - FX raises many kinds of errors on untraceable code
        raise ConfigError(f"cross-layer equalization needs a model torch.fx can trace; {type(model).__name__} "
                          f"is not ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
                          ) from None
    modules = dict(model.named_modules())
    calls = module_calls(graph)
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not _is_layer(modules.get(node.target)) or calls[node.target] != 1:
            continue
        between: list[str] = []
        cur = node
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            mod = modules.get(nxt.target) if nxt.op == "call_module" else None
            if _is_layer(mod):
                if calls[nxt.target] == 1 and _fits(modules[node.target], mod) and nxt.args and nxt.args[0] is cur:
                    pairs.append(Pair(node.target, nxt.target, tuple(between)))
                break
            if isinstance(mod, nn.ReLU6) and relu6 == "replace" and calls[nxt.target] == 1:
                between.append(nxt.target)
            elif not _homogeneous(nxt, modules):  # these hold no state, so a shared one is fine
                break
            cur = nxt
    return pairs


# ---------------------------------------------------------------- ranges and scaling


def _rows(w: Tensor) -> Tensor:
    """The weight as [output channels, values]."""
    return w.reshape(w.shape[0], -1)


def _columns(w: Tensor, groups: int) -> Tensor:
    """The weight as [input channels, values]: every weight that multiplies input channel i (a grouped
    convolution's input channel i belongs to group i // (in / groups))."""
    if w.dim() == 2:
        return w.t()
    out, in_per_group = w.shape[0], w.shape[1]
    return (w.reshape(groups, out // groups, in_per_group, -1).permute(0, 2, 1, 3)
            .reshape(groups * in_per_group, -1))


def _scale_columns(w: Tensor, groups: int, s: Tensor) -> Tensor:
    if w.dim() == 2:
        return w * s.reshape(1, -1)
    out, in_per_group = w.shape[0], w.shape[1]
    v = w.reshape(groups, out // groups, in_per_group, -1) * s.reshape(groups, 1, in_per_group, 1)
    return v.reshape(w.shape)


def _groups(m: nn.Module) -> int:
    return getattr(m, "groups", 1)


def pair_ranges(model: nn.Module, pair: Pair) -> tuple[Tensor, Tensor]:
    """(r1, r2): max |w| of each output channel of `first` and of each input channel of `second`."""
    first, second = model.get_submodule(pair.first), model.get_submodule(pair.second)
    r1 = _rows(first.weight.detach()).abs().amax(dim=1)
    r2 = _columns(second.weight.detach(), _groups(second)).abs().amax(dim=1)
    return r1, r2


def equalizing_scales(r1: Tensor, r2: Tensor) -> Tensor:
    """s_i = sqrt(r1_i * r2_i) / r2_i (1 where either range is 0: a dead channel stays as it is)."""
    s = torch.sqrt(r1 * r2) / r2
    return torch.where((r1 > 0) & (r2 > 0), s, torch.ones_like(s))


@dataclass
class Equalization:
    """What `equalize` did."""

    pairs: list[Pair] = field(default_factory=list)
    replaced_relu6: list[str] = field(default_factory=list)  # module paths now holding nn.ReLU
    sweeps: int = 0
    converged: bool = True

    def describe(self) -> str:
        layers = len({p.first for p in self.pairs} | {p.second for p in self.pairs})
        text = (f"cross-layer equalization: {len(self.pairs)} pair(s) over {layers} layers, "
                f"{self.sweeps} sweep(s){'' if self.converged else ' (stopped before the scales settled)'}")
        if self.replaced_relu6:
            text += f"; {len(self.replaced_relu6)} ReLU6 replaced by ReLU"
        return text


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def equalize(model: nn.Module, pairs: list[Pair] | None = None, *, relu6: str = "keep",
             max_sweeps: int = MAX_SWEEPS, tolerance: float = TOLERANCE) -> Equalization:
    """Equalizes the model in place (BatchNorm folded first: see engine.deploy.quantized.fold_batchnorm).

    Every pair is scaled by `equalizing_scales`, pass after pass, until no scale of a pass differs from 1
    by more than `tolerance` (in log) or `max_sweeps` passes. The sums are kept in float64 and written
    back once, so the float model's outputs change only by round-off (except where a ReLU6 was replaced)."""
    if pairs is None:
        pairs = equalization_pairs(model, relu6)
    names = {n for p in pairs for n in (p.first, p.second)}
    layers = {n: model.get_submodule(n) for n in names}
    weights = {n: m.weight.detach().double().clone() for n, m in layers.items()}
    biases = {n: m.bias.detach().double().clone() for n, m in layers.items() if m.bias is not None}
    sweeps, change = 0, math.inf
    while pairs and sweeps < max_sweeps and change > tolerance:
        sweeps += 1
        change = 0.0
        for p in pairs:
            w1, w2, g2 = weights[p.first], weights[p.second], _groups(layers[p.second])
            s = equalizing_scales(_rows(w1).abs().amax(dim=1), _columns(w2, g2).abs().amax(dim=1))
            change = max(change, float(s.log().abs().max()))
            weights[p.first] = w1 / s.reshape(-1, *([1] * (w1.dim() - 1)))
            if p.first in biases:
                biases[p.first] = biases[p.first] / s
            weights[p.second] = _scale_columns(w2, g2, s)
    with torch.no_grad():
        for n, m in layers.items():
            m.weight.copy_(weights[n].to(m.weight.dtype))
            if n in biases:
                m.bias.copy_(biases[n].to(m.bias.dtype))
    replaced = sorted({r for p in pairs for r in p.relu6})
    for path in replaced:
        _set_module(model, path, nn.ReLU(inplace=getattr(model.get_submodule(path), "inplace", False)))
    return Equalization(list(pairs), replaced, sweeps, change <= tolerance)


# ---------------------------------------------------------------- writing a folded model back


def unfold_into(original: nn.Module, folded: nn.Module, conv_bn: list[tuple[str, str]]) -> nn.Module:
    """A copy of `original` (BatchNorm not folded) computing what `folded` computes, in original's layout.

    Each (conv, bn) pair of `conv_bn` gets the folded conv's weight, and a BatchNorm that adds the folded
    bias and otherwise passes values through (mean 0, variance 1, scale sqrt(1 + eps)); every other
    parameter and buffer is copied from `folded`. So a float checkpoint of the architecture can hold an
    equalized model, and folding it again gives the equalized weights back (up to round-off)."""
    out = copy.deepcopy(original).eval()
    folded_state = folded.state_dict()
    paired = {c for c, _ in conv_bn} | {b for _, b in conv_bn}
    with torch.no_grad():
        for name, tensor in out.state_dict().items():
            owner = name.rpartition(".")[0]
            if owner not in paired and name in folded_state:
                tensor.copy_(folded_state[name])
        for conv_path, bn_path in conv_bn:
            conv, bn, done = out.get_submodule(conv_path), out.get_submodule(bn_path), folded.get_submodule(conv_path)
            conv.weight.copy_(done.weight)
            if conv.bias is not None:
                conv.bias.zero_()
            if bn.weight is None or bn.running_var is None:
                raise ConfigError(f"{bn_path} has no affine parameters or running statistics, so it cannot "
                                  f"hold the folded bias")
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.fill_(math.sqrt(1.0 + bn.eps))
            bn.bias.copy_(done.bias)
    return out


# ---------------------------------------------------------------- bias correction


def _channel_axis(m: nn.Module) -> int:
    return -1 if isinstance(m, nn.Linear) else 1


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


def execution_order(model: nn.Module, example: Tensor) -> list[str]:
    """The Conv/Linear layers in the order one forward pass first calls them, each called exactly once
    (a layer called twice per pass has no single mean output to correct)."""
    order: list[str] = []
    counts: dict[str, int] = {}

    def seen(name: str):
        def hook(*_: object) -> None:
            counts[name] = counts.get(name, 0) + 1
            if counts[name] == 1:
                order.append(name)

        return hook

    handles = [m.register_forward_hook(seen(n)) for n, m in model.named_modules() if _is_layer(m)]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return [n for n in order if counts[n] == 1]


def output_means(model: nn.Module, layers: Iterable[str], batches: Iterable[Tensor],
                 context: contextlib.AbstractContextManager | None = None, stop_after: str | None = None
                 ) -> dict[str, Tensor]:
    """The mean output per channel (over images and positions, in float64) of each named layer on
    `batches`; with `stop_after`, each forward pass ends once that layer has run."""
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}

    def keep(name: str, axis: int):
        def hook(_m: nn.Module, _args: tuple, out: Tensor) -> None:
            y = out.detach().double().movedim(axis, 0)
            sums[name] = sums.get(name, 0) + y.reshape(y.shape[0], -1).sum(dim=1)
            counts[name] = counts.get(name, 0) + y[0].numel()
            if name == stop_after:
                raise _Stop

        return hook

    handles = [model.get_submodule(n).register_forward_hook(keep(n, _channel_axis(model.get_submodule(n))))
               for n in layers]
    try:
        with context or contextlib.nullcontext(), torch.inference_mode():
            for x in batches:
                with contextlib.suppress(_Stop):
                    model(x)
    finally:
        for h in handles:
            h.remove()
    return {n: sums[n] / counts[n] for n in sums}


def correct_biases(model: nn.Module, reference: dict[str, Tensor], batches: list[Tensor],
                   context: contextlib.AbstractContextManager | None = None,
                   check: Callable[[], None] | None = None) -> dict[str, Tensor]:
    """Empirical bias correction of a quantized model, in place: for each layer of `reference` with a bias,
    in execution order, its mean output per channel on `batches` (earlier layers already corrected;
    inside `context`, e.g. activation fake-quant) minus the float model's mean (`reference`, from
    `output_means` of the float model) is subtracted from its bias. Returns each layer's shift.

    Up to SINGLE_PASS_IMAGES calibration images run as one batch in one forward pass, each layer's hook
    correcting its bias and passing on its corrected output; more run layer by layer, a pass per layer.
    `check` is called between layers (a cancellation check)."""
    if not batches:
        raise ConfigError("bias correction needs at least one calibration batch")
    order = [n for n in execution_order(model, batches[0][:1])
             if n in reference and model.get_submodule(n).bias is not None]
    if sum(len(x) for x in batches) <= SINGLE_PASS_IMAGES:
        return _correct_in_one_pass(model, reference, torch.cat(batches), order, context, check)
    shifts = {}
    for name in order:
        if check is not None:
            check()
        layer = model.get_submodule(name)
        mean = output_means(model, [name], batches, context, stop_after=name)[name]
        shift = mean - reference[name]
        with torch.no_grad():
            layer.bias.sub_(shift.to(layer.bias.dtype))
        shifts[name] = shift
    return shifts


SINGLE_PASS_IMAGES = 2048  # calibration images bias correction runs as one batch (activations held per layer)


def _correct_in_one_pass(model: nn.Module, reference: dict[str, Tensor], x: Tensor, order: list[str],
                         context: contextlib.AbstractContextManager | None,
                         check: Callable[[], None] | None) -> dict[str, Tensor]:
    shifts: dict[str, Tensor] = {}

    def correct(name: str, axis: int):
        def hook(m: nn.Module, _args: tuple, out: Tensor) -> Tensor:
            if check is not None:
                check()
            y = out.double().movedim(axis, 0)
            shift = y.reshape(y.shape[0], -1).mean(dim=1) - reference[name]
            m.bias.sub_(shift.to(m.bias.dtype))
            shifts[name] = shift
            view = [1] * out.dim()
            view[axis] = -1
            return out - shift.to(out.dtype).reshape(view)  # what the corrected layer computes

        return hook

    handles = [model.get_submodule(n).register_forward_hook(correct(n, _channel_axis(model.get_submodule(n))))
               for n in order]
    try:
        with context or contextlib.nullcontext(), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shifts


def biased_layers(model: nn.Module) -> list[str]:
    """The Conv/Linear layers that have a bias (the ones bias correction can correct)."""
    return [n for n, m in model.named_modules() if _is_layer(m) and m.bias is not None]


def layer_biases(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every Conv/Linear bias, to put back with `load_biases`."""
    return {n: model.get_submodule(n).bias.detach().clone() for n in biased_layers(model)}


def load_biases(model: nn.Module, biases: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for n, b in biases.items():
            model.get_submodule(n).bias.copy_(b)
