"""How to cut channels: Torch-Pruning removes them physically, following its dependency graph.

Residual additions, concatenations (DenseNet, SqueezeNet's Fire modules), depthwise convolutions
and squeeze-excitation blocks are coupled by Torch-Pruning's DependencyGraph (Fang et al. 2023,
"DepGraph: Towards Any Structural Pruning"), so every layer that shares a channel loses it
together. The result is a smaller dense model: fewer parameters and MACs, faster on dense hardware.

Vision transformers (timm's Attention blocks: a `qkv` Linear, `num_heads`, `head_dim`) lose whole
attention heads (Torch-Pruning's `num_heads` / `prune_num_heads`, head_dim kept) and MLP hidden
channels, at the same ratio; the embedding width (the residual stream: patch embedding, attention
projections, MLP outputs) stays, so the model reloads from its Linear shapes alone.

Torch-Pruning is imported by plan_channels, the one place that builds its pruner, not with this module:
importing it loads timm, seconds that every command touching the prune family would otherwise pay.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from engine.core.config import check_range
from engine.core.errors import ConfigError, UserError
from engine.methods.prune.importance import channel_importance, check_importance_fits
from engine.model.checkpoint import fit_attention_heads
from engine.model.zoo import get_module

if TYPE_CHECKING:
    import torch_pruning as tp


def plan_channels(model: nn.Module, example: Tensor, *, importance: str = "l1", ratio: float = 0.0,
                  layer_ratios: dict[str, float] | None = None, keep: tuple[str, ...] = (),
                  arch: str = "the model") -> tp.pruner.BasePruner:
    """Traces the model and checks the ratios; the returned pruner's step() cuts (nothing is cut yet).

    `ratio` is the fraction of channels removed from every prunable group; `layer_ratios` sets it
    for the groups of named layers instead. `keep` lists module paths whose output channels must
    stay (the classifier, whose outputs are the classes).
    """
    import torch_pruning as tp  # lazy: see the module docstring

    layer_ratios = dict(layer_ratios or {})
    check_range("ratio", ratio, 0, 1, hi_open=True)
    for path, r in layer_ratios.items():
        check_range(f"ratio of layer '{path}'", r, 0, 1, hi_open=True)
    check_importance_fits(importance, model, arch)
    ratio_by_module = {sub: r for path, r in layer_ratios.items() for sub in get_module(model, path).modules()}
    ignored = [get_module(model, path) for path in keep]
    mha = next((n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)), None)
    if mha is not None:
        raise UserError(f"structured pruning does not cut torch's nn.MultiheadAttention (at '{mha}' in {arch}): its "
                        f"packed in_proj weights would not reload from their shapes; use a timm ViT/DeiT (its heads "
                        f"are cut) or unstructured pruning")
    heads = attention_heads(model)
    if heads:
        check_keeps_a_head(model, heads, ratio, layer_ratios)
        ignored += residual_writers(model)
    model.eval()  # tracing runs a forward pass: BatchNorm statistics must not move
    try:
        pruner = tp.pruner.BasePruner(
            model, example, importance=channel_importance(importance), pruning_ratio=ratio,
            pruning_ratio_dict=dict(ratio_by_module) or None, ignored_layers=ignored,
            **({"num_heads": {m.qkv: m.num_heads for m in heads}, "prune_num_heads": True, "prune_head_dims": False,
                "head_pruning_ratio": ratio,
                "head_pruning_ratio_dict": {m: r for m in heads if m in ratio_by_module
                                            for r in [ratio_by_module[m]]} or None} if heads else {}))
    except Exception as e:  # noqa: BLE001 - tracing fails in many ways; the user needs one message
        raise UserError(f"Torch-Pruning cannot trace {arch} ({type(e).__name__}: {e}); structured pruning "
                        f"needs a model whose forward pass it can follow; use unstructured pruning") from None
    check_keeps_a_channel(pruner, ratio, ratio_by_module)
    return pruner


def prune_channels(model: nn.Module, example: Tensor, *, importance: str = "l1", ratio: float = 0.0,
                   layer_ratios: dict[str, float] | None = None, keep: tuple[str, ...] = (),
                   arch: str = "the model") -> nn.Module:
    """Removes channels in place (see plan_channels) and returns the model, checked to still run.

    Pass a copy: a failure can leave the model half-cut.
    """
    model.eval()
    with torch.no_grad():
        out = model(example)
    if not isinstance(out, Tensor):
        raise UserError(f"Torch-Pruning cannot trace {arch}: its forward returns a {type(out).__name__}, "
                        f"not a tensor of logits")
    expected = tuple(out.shape)
    pruner = plan_channels(model, example, importance=importance, ratio=ratio, layer_ratios=layer_ratios,
                           keep=keep, arch=arch)
    pruner.step()
    fit_attention_heads(model)  # Torch-Pruning counts the heads it cut; the blocks must reshape by the new count
    try:
        with torch.no_grad():
            got = tuple(model(example).shape)
    except Exception as e:  # noqa: BLE001 - see above
        raise UserError(f"after structured pruning {arch} no longer runs ({type(e).__name__}: {e}): Torch-Pruning "
                        f"could not trace one of its dependencies (e.g. a hard-coded reshape); use unstructured "
                        f"pruning") from None
    if got != expected:
        raise UserError(f"structured pruning changed the output of {arch} from {expected} to {got}")
    return model


def check_keeps_a_channel(pruner: tp.pruner.BasePruner, ratio: float, ratio_by_module: dict[nn.Module, float]) -> None:
    """Refuses a ratio that would leave a layer with no channels (Torch-Pruning would cut them all)."""
    dg = pruner.DG
    for group in dg.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types):
        root = group[0].dep.target.module
        channels = dg.get_out_channels(root)
        if not channels:
            continue
        r = ratio
        for item in group:
            dep = item.dep
            hits = [ratio_by_module[m] for m, fn in ((dep.source.module, dep.trigger), (dep.target.module, dep.handler))
                    if m in ratio_by_module and dg.is_out_channel_pruning_fn(fn)]
            if hits:
                r = hits[0]
                break
        if r > 0 and int(channels * (1 - r)) < 1:
            name = dg._module2name.get(root, type(root).__name__)
            raise ConfigError(f"ratio {r:g} would remove every channel of layer '{name}' ({channels} channels); "
                              f"the largest ratio that keeps one is {(channels - 1) / channels:.3f}")


def attention_heads(model: nn.Module) -> list[nn.Module]:
    """The multi-head attention blocks whose heads can be cut (timm's Attention and its look-alikes)."""
    return [m for m in model.modules() if isinstance(getattr(m, "qkv", None), nn.Linear)
            and isinstance(getattr(m, "num_heads", None), int) and isinstance(getattr(m, "head_dim", None), int)]


def residual_writers(model: nn.Module) -> list[nn.Module]:
    """The layers that write a transformer's residual stream (kept whole): the patch embedding's projection,
    each attention block's output projection and each MLP's second layer."""
    out = []
    for name, m in model.named_modules():
        if name.split(".")[-1] == "patch_embed":
            out += [c for c in m.modules() if isinstance(c, nn.Conv2d | nn.Linear)]
        if isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "proj", None), nn.Linear):
            out.append(m.proj)
        if isinstance(getattr(m, "fc1", None), nn.Linear) and isinstance(getattr(m, "fc2", None), nn.Linear):
            out.append(m.fc2)
    return out


def check_keeps_a_head(model: nn.Module, heads: list[nn.Module], ratio: float, layer_ratios: dict[str, float]) -> None:
    """Refuses a ratio that would cut every head of an attention block (Torch-Pruning removes ceil(r * heads))."""
    by_module = {sub: r for path, r in layer_ratios.items() for sub in get_module(model, path).modules()}
    names = {m: n for n, m in model.named_modules()}
    for m in heads:
        r = by_module.get(m, ratio)
        if m.num_heads - math.ceil(r * m.num_heads - 1e-9) < 1:
            raise ConfigError(f"ratio {r:g} would remove every attention head of '{names[m]}' ({m.num_heads} heads); "
                              f"the largest ratio that keeps one is {(m.num_heads - 1) / m.num_heads:.3f}")


def first_conv(model: nn.Module) -> str:
    """Module path of the first Conv2d (the stem), the layer `keep_first_last` leaves alone."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name
    raise ConfigError(f"{type(model).__name__} has no Conv2d layer")
