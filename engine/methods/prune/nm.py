"""N:M semi-structured sparsity: n weights kept in every group of m (2:4 as NVIDIA's Ampere-and-later sparse tensor
cores run it). Mishra, Latorre, Pool, Stosic, Stosic, Venkatesh, Yu & Micikevicius 2021, "Accelerating Sparse Deep
Neural Networks" (the 2:4 format and its recipe: prune once by magnitude, then fine-tune with the pattern fixed);
the N:M generalisation of Zhou, Ma, Zhu, Liu, Zhang, Yuan, Sun & Li 2021, "Learning N:M Fine-grained Structured
Sparse Neural Networks From Scratch" (ICLR). Their SR-STE training from scratch is not done here: the masks come
from the trained checkpoint's magnitudes, as in NVIDIA's ASP.

- Groups: m consecutive weights along the input channels, at every (output, kh, kw) position of a Conv2d and along
  in_features of a Linear (`engine.deploy.measure.nm_groups`), the layout of NVIDIA apex's ASP (`create_mask`
  permutes a conv to (kh, kw, out) x in_channels) and of torch's `to_sparse_semi_structured` for a Linear weight.
  In each group the n largest |w| stay (ties: the lower position).
- Layers: every Conv2d and Linear (`--keep-first-last` leaves the first conv and the classifier dense). A layer
  whose input channels (per conv group) are not a multiple of m cannot hold the pattern (a first conv on one
  grey channel, a depthwise conv): it is skipped and stays dense, as ASP skips it, and the point lists it with
  the reason (`nm_skipped`). A model with no layer that fits is refused.
- Fine-tuning (`--finetune`, default `all` for 1 epoch): the pruning family's (finetune.py), the masks re-applied
  after every step, so the pattern survives.
- Size: the variant is measured as N:M storage (`ModelForm.nm`): n values and a ceil(log2 m)-bit position per
  value in every group (`engine.deploy.measure.nm_tensor_bytes`).
- Latency: this CPU has no N:M kernel, so the pruned model runs through the same dense fp32 kernels and its
  latency is that dense model's, which the backend says. Where torch has a 2:4 kernel (CUDA, fp16, Linear layers
  of fitting shapes) `sparse_kernel_timing` also times the dense and the semi-structured model on the GPU and
  records both (`cuda_dense_ms_b32`, `cuda_sparse_ms_b32`); elsewhere it records why it did not.

Points: the unpruned input (`baseline`, sparsity 0) and the N:M model (`variant`, level 1 - n/m, the sparsity of
the pruned layers), saved as root/nm-<n>-<m>.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.core.config import param
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.core.point import Point
from engine.core.progress import Progress, scaled
from engine.deploy.measure import ModelForm, measure, nm_groups
from engine.methods.prune.common import (
    PruneTask,
    candidate_layers,
    claim,
    open_for_pruning,
    point_params,
    prune_method,
    pruning_point,
    save_pruned,
)
from engine.methods.prune.finetune import FinetuneConfig, finetune
from engine.methods.prune.masks import apply_masks, mask_sparsity
from engine.model.zoo import get_module

GROUP_SIZES = (4, 8, 16)  # m: the group sizes N:M hardware and libraries use (2:4 on NVIDIA, 4:8, 1:16 in papers)
KERNEL_PATTERN = (2, 4)  # the one pattern torch's semi-structured kernels run (fp16 / bf16 / int8)


@dataclass
class NMConfig(PruneTask):
    n: int = param(2, "weights kept in every group of m (1 <= n < m); 2 of 4 is what sparse tensor cores run",
                   lo=1, hi=15)
    m: int = param(4, "group size: m consecutive weights along the input channels", choices=GROUP_SIZES)
    keep_first_last: bool = param(False, "leave the first conv and the classifier dense")
    finetune: FinetuneConfig = param(default_factory=lambda: FinetuneConfig(mode="all"))

    def validate(self) -> None:
        super().validate()
        if self.n >= self.m:
            raise ConfigError(f"n must be below m (n of every m weights are kept), got n={self.n}, m={self.m}")

    @property
    def pattern(self) -> str:
        return f"{self.n}:{self.m}"


# ---------------------------------------------------------------- the maths


def nm_mask(weight: Tensor, n: int, m: int) -> Tensor:
    """The keep mask (True = kept) of `weight` with the n largest |w| of every group of m consecutive
    input-channel weights (engine.deploy.measure.nm_groups); ties keep the lower position."""
    groups = nm_groups(weight.detach().abs().float().cpu(), m)
    kept = torch.argsort(groups, dim=1, descending=True, stable=True)[:, :n]
    keep = torch.zeros(groups.shape, dtype=torch.bool).scatter_(1, kept, True)
    moved = weight.movedim(1, -1).shape  # (out, kh, kw, in) for a conv: the order nm_groups cut
    return keep.reshape(moved).movedim(-1, 1).contiguous()


def why_not_nm(module: nn.Module, m: int) -> str:
    """Why a layer cannot hold an N:M pattern with groups of m ("" when it can)."""
    c = module.weight.shape[1]
    if c % m == 0:
        return ""
    depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and c == 1
    kind = "a depthwise conv: 1 input channel per group" if depthwise else f"{c} input channel{'s' if c != 1 else ''}"
    return f"{kind}, not a multiple of m={m}"


def split_layers(layers: list[tuple[str, nn.Module]], m: int) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """The layers that fit groups of m, and those that do not with the reason (they stay dense)."""
    reasons = {name: why_not_nm(module, m) for name, module in layers}
    return [(n, mod) for n, mod in layers if not reasons[n]], {n: r for n, r in reasons.items() if r}


# ---------------------------------------------------------------- a real sparse kernel, where there is one


def sparse_kernel_timing(model: nn.Module, masks: dict[str, Tensor], n: int, m: int, example: Tensor,
                         runs: int = 50) -> dict:
    """Times the model with torch's 2:4 semi-structured kernel beside the same model dense, on CUDA in fp16.

    Taken only when torch.cuda.is_available() and the pattern is 2:4; only Linear layers whose shapes the kernel
    accepts are converted (the others stay dense and are listed with torch's reason). Elsewhere nothing is
    timed and `sparse_kernel` says why: the model's latency is then the dense model's alone."""
    if (n, m) != KERNEL_PATTERN:
        return {"sparse_kernel": f"none: torch's semi-structured kernels run 2:4 only, not {n}:{m}; the model ran "
                                 f"dense"}
    if not torch.cuda.is_available():
        return {"sparse_kernel": "none: no sparse kernel on CPU (torch.sparse.to_sparse_semi_structured needs "
                                 "CUDA); the model ran dense"}
    return _cuda_semi_structured(model, masks, example, runs)


def _cuda_semi_structured(model: nn.Module, masks: dict[str, Tensor], example: Tensor, runs: int) -> dict:
    from torch.sparse import to_sparse_semi_structured

    dense = copy.deepcopy(model).eval().half().cuda()
    sparse = copy.deepcopy(dense)
    converted, refused = [], {}
    for name in masks:
        layer = get_module(sparse, name)
        if not isinstance(layer, nn.Linear):
            refused[name] = "a convolution: torch's 2:4 kernel runs Linear layers only"
            continue
        try:
            layer.weight = nn.Parameter(to_sparse_semi_structured(layer.weight.detach().contiguous()),
                                        requires_grad=False)
            converted.append(name)
        except (RuntimeError, ValueError) as e:  # shape, dtype or GPU the kernel does not take
            refused[name] = str(e).strip().splitlines()[0]
    out: dict = {"sparse_kernel_layers": converted, "sparse_kernel_refused": refused}
    if not converted:
        out["sparse_kernel"] = (f"none: no pruned layer fits torch's 2:4 kernel on {torch.cuda.get_device_name()}; "
                                f"the model ran dense")
        return out
    x = example.half().cuda()
    with torch.inference_mode():
        out["cuda_max_abs_diff"] = float((dense(x).float() - sparse(x).float()).abs().max())
        out["cuda_dense_ms_b32"] = _cuda_median_ms(dense, x, runs)
        out["cuda_sparse_ms_b32"] = _cuda_median_ms(sparse, x, runs)
    backend = "cuSPARSELt" if torch.backends.cusparselt.is_available() else "CUTLASS"
    out["sparse_kernel"] = (f"torch semi-structured 2:4 ({backend}, fp16) on {torch.cuda.get_device_name()}, "
                            f"{len(converted)} Linear layer(s); the rest dense")
    return out


def _cuda_median_ms(model: nn.Module, x: Tensor, runs: int) -> float:
    for _ in range(5):
        model(x)
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(x)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


# ---------------------------------------------------------------- the method


def dense_backend(pattern: str) -> str:
    return f"fp32 dense ({pattern} mask, no sparse kernel on CPU)"


@prune_method("nm", NMConfig,
              "keep n of every m consecutive input-channel weights (2:4 for sparse tensor cores), then fine-tune "
              "with the pattern fixed")
def nm(cfg: NMConfig, ctx: RunContext) -> list[Point]:
    with claim(cfg, "nm") as root:
        model, meta, data, classifier = open_for_pruning(cfg)
        layers, skipped = split_layers(candidate_layers(model, classifier, cfg.keep_first_last), cfg.m)
        if not layers:
            raise ConfigError(f"no layer can hold {cfg.pattern} sparsity: every candidate's input channels must be "
                              f"a multiple of m={cfg.m} ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})")
        if skipped:
            ctx.log_event(f"nm: {len(skipped)} layer(s) stay dense, their input channels do not fit groups of "
                          f"{cfg.m}: {', '.join(skipped)}")
        params = point_params(cfg)
        level = 1 - cfg.n / cfg.m

        ctx.progress(Progress(0.0, "measuring the unpruned model"))
        reference = copy.deepcopy(model).eval() if cfg.latency else None
        points = [pruning_point(ctx, measure(model, data, latency=cfg.latency), cfg, method="nm", stage="baseline",
                                params=params, level=0.0, level_name="sparsity",
                                artifact=cfg.checkpoint if root is not None else "", nm_pattern=cfg.pattern)]

        masks = {name: nm_mask(module.weight, cfg.n, cfg.m) for name, module in layers}
        pruned = copy.deepcopy(model)
        apply_masks(pruned, masks)
        ctx.log_event(f"nm: {cfg.pattern} masks on {len(masks)} layer(s), "
                      f"{sum(int(k.numel()) for k in masks.values()):,} weights")
        finetune(pruned, data, cfg.finetune, classifier=classifier, masks=masks,
                 progress=scaled(ctx.progress, 0.05, 0.9), cancel=ctx.cancel)
        ctx.cancel.raise_if_cancelled()
        form = ModelForm(backend=dense_backend(cfg.pattern), nm={name: (cfg.n, cfg.m) for name in masks})
        measured = measure(pruned, data, form, latency=cfg.latency, reference=reference)
        kernel = sparse_kernel_timing(pruned, masks, cfg.n, cfg.m, data.test.tensors()[0][:32])
        artifact = save_pruned(ctx, root, f"nm-{cfg.n}-{cfg.m}", pruned, meta, cfg, method="nm", params=params,
                               level=level, level_name="sparsity")
        points.append(pruning_point(
            ctx, measured, cfg, method="nm", stage="variant", params=params, level=level, level_name="sparsity",
            artifact=artifact, nm_pattern=cfg.pattern, nm_layers=list(masks), nm_skipped=skipped,
            pruned_layer_sparsity=mask_sparsity(masks),
            layer_sparsity={name: float((~k).float().mean()) for name, k in masks.items()},
            latency_note=("timed on the pruned model beside the unpruned one: with no N:M kernel on the CPU its "
                          "zeros run through the same dense kernels" if cfg.latency else "not timed"),
            **kernel))
        ctx.progress(Progress(1.0, f"{cfg.pattern}: accuracy {measured.accuracy:.4f}",
                              metrics={"accuracy": measured.accuracy}))
        return points
