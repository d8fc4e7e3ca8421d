"""One way to measure any model: accuracy, parameters, sparsity, bits, sizes, MACs and latency.

Definitions (the "prunable weights" are the weight tensors of every Conv and Linear layer):

- `sparsity`: the fraction of prunable weights that are exactly zero.
- `bits`: the mean bit-width of the prunable weights, weighted by their element counts.
- `size_fp32_bytes`: 4 bytes x every parameter (the dense fp32 model).
- `size_bytes`: what a deployed copy needs to store its parameters. For each prunable weight
  tensor with n elements, nnz non-zeros, b bits and g quantization groups (1 per tensor, one
  per output channel, or 0 for a float format such as bf16, which has no scales):
      dense  = ceil(n * b / 8)
      sparse = ceil(nnz * b / 8) + min(ceil(n / 8), 4 * nnz)   (a bitmap, or int32 coordinates)
      bytes  = min(dense, sparse) + (8 * g if b < 32 else 0)     (an fp32 scale + an int32 zero point)
  A layer the form stores N:M sparse (`ModelForm.nm`: n kept in every group of m consecutive input-channel
  weights, as NVIDIA's 2:4 sparse tensor cores store them) is sized by its format instead, `nm_tensor_bytes`:
      bytes  = ceil((n_elements / m) * n * (b + ceil(log2 m)) / 8) + (8 * g if b < 32 else 0)
  (n values and one ceil(log2 m)-bit position per value, per group: 2:4 keeps 2 values + 2x2 bits per 4).
  Every other parameter (biases, BatchNorm affine) is stored dense at 4 bytes (2 in bf16). Buffers such as
  BatchNorm running statistics are not counted: a deployed model folds them into the weights.
- `file_bytes`: the length of the artifact actually serialised (safetensors for float models).
- `macs`: multiply-accumulates for one sample, from `torch.utils.flop_counter` (flops / 2).
- latency: median, p10 and p90 wall time of a forward pass at batch 1 and batch 32 on the CPU, on the
  form that actually runs (`ModelForm.runner`), by the timing protocol of engine/deploy/timing.py:
  rotated rounds beside the run's baseline (the speed-up over it, with a 95 % interval), each round
  checked for other processes' load (`latency_quality`: clean, or noisy with the reason), the thread
  count chosen and recorded (`threads`), and the machine's id (`machine`, engine/core/machine.py).
  `backend` names what ran. Simulated forms say `simulated=True`: their latency is that of the float
  model that ran, never an estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from engine.core.point import LATENCY_FIELDS, MAX_CONFUSION_CLASSES, Measurement
from engine.deploy import runtimes, timing
from engine.model.checkpoint import state_dict_bytes
from engine.model.data import Dataset
from engine.model.train import confusion_matrix, scores

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
# what the timing protocol adds to a Measurement besides the medians and p90s
TIMING_FIELDS = tuple(f for f in LATENCY_FIELDS if f not in ("latency_ms_b1", "latency_p90_ms_b1", "latency_ms_b32",
                                                            "latency_p90_ms_b32", "threads"))
QPARAM_BYTES = 8  # one fp32 scale and one int32 zero point per quantization group


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path, module) for every Conv2d and Linear: the layers pruning and quantization act on."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]


@dataclass
class ModelForm:
    """How a model is deployed: what runs it and how its prunable weights are stored."""

    runner: nn.Module | None = None  # computes predictions and latency; None = the float model itself
    backend: str = "fp32 eager"  # what runs it, in words
    weight_bits: dict[str, int] | int = 32  # bits per prunable layer (module path), or one width for all
    quant_groups: dict[str, int] = field(default_factory=dict)  # scale groups per layer; default 1
    simulated: bool = False  # quantization simulated in float: no smaller or faster kernel ran
    artifact: bytes | None = None  # the serialised deployable; None = safetensors of the float model
    float_bytes: int = 4  # bytes per stored parameter besides the prunable weights (2 in bf16)
    nm: dict[str, tuple[int, int]] = field(default_factory=dict)  # layers stored N:M sparse: path -> (n, m)


# ---------------------------------------------------------------- storage


def tensor_bytes(n: int, nnz: int, bits: int, groups: int) -> int:
    """Storage for one weight tensor: dense or sparse, whichever is smaller, plus its qparams."""
    dense = math.ceil(n * bits / 8)
    sparse = math.ceil(nnz * bits / 8) + min(math.ceil(n / 8), 4 * nnz)
    return min(dense, sparse) + (QPARAM_BYTES * groups if bits < 32 else 0)


def nm_groups(weight: Tensor, m: int) -> Tensor:
    """The weight as rows of m consecutive input-channel weights, one row per group: for a Conv2d the input
    channels at each (output, kh, kw) position, as NVIDIA's ASP lays a convolution out; for a Linear its rows
    cut along in_features. The input-channel count (per conv group) must be a multiple of m."""
    if weight.dim() < 2 or weight.shape[1] % m:
        raise ValueError(f"an N:M group runs along the input channels, so their count must be a multiple of "
                         f"m={m}; got a weight of shape {tuple(weight.shape)}")
    return weight.movedim(1, -1).reshape(-1, m)


def nm_tensor_bytes(n_elements: int, n: int, m: int, bits: int, groups: int = 1) -> int:
    """Storage for one N:M sparse weight tensor (Mishra et al. 2021, "Accelerating Sparse Deep Neural
    Networks"): every group of m weights keeps n values of `bits` bits and one ceil(log2 m)-bit position per
    value (NVIDIA's layout: 2:4 stores 2 values + 2x2 bits of metadata per 4 weights), plus the qparams of
    `groups` quantization groups below 32 bits."""
    if not 1 <= n < m or n_elements % m:
        raise ValueError(f"N:M storage needs 1 <= n < m and a multiple of m elements; got n={n}, m={m}, "
                         f"{n_elements} elements")
    index_bits = math.ceil(math.log2(m))
    return math.ceil(n_elements // m * n * (bits + index_bits) / 8) + (QPARAM_BYTES * groups if bits < 32 else 0)


def storage(model: nn.Module, weight_bits: dict[str, int] | int = 32,
            quant_groups: dict[str, int] | None = None, float_bytes: int = 4,
            nm: dict[str, tuple[int, int]] | None = None) -> dict:
    """params_total, params_nonzero, sparsity, bits, size_bytes and size_fp32_bytes (see module doc).

    `nm` names the layers stored N:M sparse, (n, m) each; a layer with a group holding more than n
    non-zeros cannot be stored so and is refused."""
    quant_groups = quant_groups or {}
    nm = nm or {}
    layers = prunable_weights(model)
    weight_ids = set()
    size = 0
    n_w = zeros_w = bit_sum = 0
    for name, m in layers:
        w = m.weight.detach()
        weight_ids.add(id(m.weight))
        b = weight_bits if isinstance(weight_bits, int) else weight_bits.get(name, 32)
        n, nnz = w.numel(), int(torch.count_nonzero(w))
        if name in nm:
            keep, group = nm[name]
            most = int((nm_groups(w, group) != 0).sum(dim=1).max())
            if most > keep:
                raise ValueError(f"layer {name} is not {keep}:{group} sparse: a group of {group} holds {most} "
                                 f"non-zeros")
            size += nm_tensor_bytes(n, keep, group, b, quant_groups.get(name, 1))
        else:
            size += tensor_bytes(n, nnz, b, quant_groups.get(name, 1))
        n_w += n
        zeros_w += n - nnz
        bit_sum += b * n
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
        if id(p) not in weight_ids:
            size += float_bytes * p.numel()
    return {
        "params_total": total,
        "params_nonzero": nonzero,
        "sparsity": zeros_w / n_w if n_w else 0.0,
        "bits": bit_sum / n_w if n_w else 32.0,
        "size_bytes": size,
        "size_fp32_bytes": 4 * total,
    }


# ---------------------------------------------------------------- compute


def count_macs(model: nn.Module, example: Tensor) -> int:
    """MACs of one forward pass on `example` (batch 1), from torch's flop counter."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    model.train(was_training)
    return counter.get_total_flops() // 2


def measure_latency(runner: nn.Module, example: Tensor, batch_sizes: tuple[int, ...] = (1, 32),
                    reference: nn.Module | None = None, policy: timing.Policy | None = None) -> dict:
    """The latency fields of a Measurement for `runner` at each batch size, on the CPU, by the timing
    protocol (engine/deploy/timing.py): median, p10 and p90 over clean rounds, the quality of the rounds,
    the machine, and, when `reference` (the run's baseline runner) is given, the speed-up over it timed
    in the same rounds with its 95 % interval."""
    runner = runner.eval().to("cpu")
    forms = {"form": runner}
    if reference is not None and reference is not runner:
        forms["reference"] = reference.eval().to("cpu")
    out: dict = {}
    qualities = []
    for b in batch_sizes:
        t = timing.time_forms(forms, timing.batch_of(example, b), reference="reference" if len(forms) > 1 else None,
                              policy=policy)
        f = t.forms["form"]
        out[f"latency_ms_b{b}"], out[f"latency_p10_ms_b{b}"], out[f"latency_p90_ms_b{b}"] = f.median_ms, f.p10_ms, f.p90_ms
        if "form" in t.speedups:  # the reference's time over the form's: how much faster the form runs
            s = t.speedups["form"]
            out[f"speedup_b{b}"], out[f"speedup_lo_b{b}"], out[f"speedup_hi_b{b}"] = s.median, s.lo, s.hi
        elif reference is runner:
            out[f"speedup_b{b}"] = out[f"speedup_lo_b{b}"] = out[f"speedup_hi_b{b}"] = 1.0
        qualities.append(t.quality if t.clean else f"batch {b} {t.quality}")
        out["threads"], out["machine"] = t.threads, t.machine
    noisy = [q for q in qualities if q != "clean"]
    out["latency_quality"] = "; ".join(noisy) if noisy else "clean"
    return out


# ---------------------------------------------------------------- the one entry point


def measure(model: nn.Module, data: Dataset, form: ModelForm | None = None, *, split: str = "test",
            latency: bool | dict = True, batch_size: int = 512, runtime: str | None = None,
            reference: nn.Module | None = None, device: torch.device | str = "cpu") -> Measurement:
    """Measures `model` (the float structure whose weights are stored) deployed as `form`.

    `latency` is True to time the runner now, False to skip (fields are None), or the latency
    dict of an earlier `measure_latency` call on the very same runner (e.g. a sweep whose every
    point runs the same float model).
    `runtime` runs the form for accuracy and latency on `torch` or `onnxruntime` (engine/deploy/runtimes.py;
    default: the running task's runtime, else torch). A latency dict is torch's timing, so on another
    runtime the runner is timed afresh. `reference` is the run's baseline runner: the form is timed beside
    it, round by round, and the point carries its speed-up over it (engine/deploy/timing.py).
    `device` runs the accuracy forward of a torch runner there (engine.model.evaluation.choose_device); the
    runner goes back to the CPU afterwards, where latency is always timed.
    """
    runtime = runtime or runtimes.active()
    form = form or ModelForm()
    if runtime != "torch":
        form = runtimes.deploy(runtime, model, form, data)
        latency = True if isinstance(latency, dict) else latency
    runner = (form.runner or model).eval().to("cpu")
    model = model.eval().to("cpu")
    x_all, y_all = data.split(split).tensors()
    device = torch.device(device) if runtime == "torch" else torch.device("cpu")
    runner.to(device)  # outside inference mode: parameters moved inside it could not be trained again
    with torch.inference_mode():
        logits = torch.cat([runner(x_all[i : i + batch_size].to(device)).float().cpu()
                            for i in range(0, len(y_all), batch_size)])
    runner.to("cpu")
    result = scores(logits, y_all)
    n_classes = max(logits.shape[1], data.num_classes)
    confusion = confusion_matrix(logits, y_all, n_classes) if n_classes <= MAX_CONFUSION_CLASSES else None
    st = storage(model, form.weight_bits, form.quant_groups, form.float_bytes, form.nm)
    example = x_all[:1]
    if latency is True:
        lat = measure_latency(runner, x_all[:32], reference=reference if runtime in runtimes.PAIRED_RUNTIMES else None)
    elif isinstance(latency, dict):
        lat = latency
    else:
        lat = {}
    return Measurement(
        **result,
        **st,
        file_bytes=len(form.artifact) if form.artifact is not None else len(state_dict_bytes(model)),
        macs=count_macs(model, example),
        latency_ms_b1=lat.get("latency_ms_b1"),
        latency_p90_ms_b1=lat.get("latency_p90_ms_b1"),
        latency_ms_b32=lat.get("latency_ms_b32"),
        latency_p90_ms_b32=lat.get("latency_p90_ms_b32"),
        threads=lat.get("threads") or torch.get_num_threads(),
        backend=f"{form.backend} cpu",
        simulated=form.simulated,
        dataset=data.name,
        model=str(getattr(model, "arch", "")),
        runtime=runtime,
        confusion=confusion,
        **{k: lat.get(k) for k in TIMING_FIELDS if lat.get(k) is not None},
    )
