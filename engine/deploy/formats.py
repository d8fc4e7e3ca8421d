"""The checkpoint formats of quantized models: real int8 (`int8`) and packed low-bit weights (`packed`).

Both are ordinary checkpoint directories: `meta.json` (the float architecture as usual, plus
`weights_format` and `quant`) and `model.safetensors`. Nothing is pickled: every value is a tensor.
Both keep the model as it is deployed, BatchNorm folded into the preceding convolution (as
`engine.methods.quant.common.fold_batchnorm` does), so a loader first rebuilds that folded float
architecture. `engine.model.outputs.load_variant` reads either and returns the float structure holding
the weights the file stands for, and the `ModelForm` it is deployed as.

**int8** (ptq_int8, dynamic_int8, QAT at 8 bits): the state_dict of the converted int8 model, made
safetensors-compatible. A quantized tensor K is stored as `K.int_repr` (int8 or uint8) with
`K.q_scale` (float64) and `K.q_zero_point` (int64) per tensor, or `K.q_per_channel_scales` (float64),
`K.q_per_channel_zero_points` (int64) and `K.q_per_channel_axis` (int64) per channel; a packed
parameter tuple K (a quantized Linear's weight and bias) as `K.0`, `K.1`; a layer's output scale in
float64 (torch's own state_dict rounds it to float32); every other tensor under its own name.
`meta.quant` = {mode: static | dynamic, engine, backend, runs (what runs, in words), batchnorm_folded}.
The loader rebuilds the int8 model through the same backend (prepare/convert on a random input),
then loads the stored tensors into it, so it computes what the run measured.

**packed** (fake, mixed and QAT below 8 bits; simulated: no low-bit kernel runs). For every
Conv/Linear layer L quantized to b < 32 bits:

- `L.weight.codes`: uint8, ceil(n * b / 8) bytes for the weight's n values in row-major (C) order.
  Each value is stored as the unsigned code u = q - qmin, where q is its integer in [qmin, qmax]
  (symmetric: qmin = -(2^(b-1) - 1), qmax = 2^(b-1) - 1; asymmetric: qmin = 0, qmax = 2^b - 1), so
  0 <= u < 2^b. The codes form one little-endian bit stream: code i occupies stream bits
  [i*b, (i+1)*b), its least significant bit first, and stream bit k is bit (k mod 8) of byte
  k div 8 (bit 0 = the least significant). So at 4 bits byte j holds code 2j in its low nibble and
  code 2j+1 in its high nibble; at 3 bits code 0 is bits 0-2 of byte 0, code 1 bits 3-5, code 2
  bits 6-7 of byte 0 and bit 0 of byte 1; at 8 bits one byte per code; at 16 bits little-endian
  uint16. Unused high bits of the last byte are 0.
- `L.weight.scale`: float32 [g] and `L.weight.zero_point`: int32 [g], g = the output channels
  (per-channel: one pair per slice along axis 0) or 1 (per-tensor).
- the weight is w = (q - zero_point) * scale, computed in float32 (with q = u + qmin).
- with activation quantization, `L.input_range`: float32 [2], the calibrated [lo, hi] of the
  layer's input, fake-quantized per tensor at `quant.activations.bits` when the model runs.

Every other tensor of the folded model's state_dict (biases, weights of layers left at 32 bits) is
stored as float under its own name. `meta.quant` = {bits: {layer: b} for every Conv/Linear layer
(32 = float), scheme: {granularity, symmetric, observer, percentile}, batchnorm_folded: true,
activations: {bits, symmetric} or null, runs (the backend in words), simulated: true}.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from engine.core.errors import CheckpointError
from engine.core.registry import Registry
from engine.deploy import qmaths as maths
from engine.deploy.measure import ModelForm, prunable_weights
from engine.deploy.quantized import ActivationQuant, fold_batchnorm
from engine.model.checkpoint import (
    WEIGHTS,
    CheckpointMeta,
    load_checkpoint,
    load_into,
    read_meta,
    resize_to_state_dict,
)
from engine.model.zoo import build_model

# ---------------------------------------------------------------- reading any format

# format -> fn(directory, meta) -> (float structure with the weights it stands for, deployed form)
Loader = Callable[[Path, CheckpointMeta], tuple[nn.Module, ModelForm]]
WEIGHT_LOADERS: Registry[Loader] = Registry("weights format")


def register_format(name: str):
    return WEIGHT_LOADERS.register(name)


# ---------------------------------------------------------------- bit packing (pure)


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Unsigned codes (each in [0, 2^bits)) as a little-endian bit stream of ceil(n * bits / 8) bytes."""
    maths.check_bits("bits", bits, 1, 32)
    u = codes.detach().reshape(-1).to(torch.int64).numpy()
    if u.size and (u.min() < 0 or u.max() >= 1 << bits):
        raise ValueError(f"codes must be in [0, {(1 << bits) - 1}] to pack at {bits} bits")
    stream = ((u[:, None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(stream.reshape(-1), bitorder="little"))


def unpack_codes(packed: Tensor, bits: int, count: int) -> Tensor:
    """The `count` codes of a bit stream written by `pack_codes`, as int64."""
    maths.check_bits("bits", bits, 1, 32)
    if packed.numel() != math.ceil(count * bits / 8):
        raise CheckpointError(f"{count} codes of {bits} bits need {math.ceil(count * bits / 8)} bytes, "
                              f"the file holds {packed.numel()}")
    stream = np.unpackbits(packed.numpy().astype(np.uint8), count=count * bits, bitorder="little")
    weights = np.int64(1) << np.arange(bits, dtype=np.int64)
    return torch.from_numpy(stream.reshape(count, bits).astype(np.int64) @ weights)


# ---------------------------------------------------------------- the float architecture


def arch_shapes(model: nn.Module) -> dict[str, list[int]]:
    """The state_dict shapes of a model whose layers were resized (what `layer_shapes: shape` needs)."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def folded_structure(meta: CheckpointMeta) -> nn.Module:
    """The float architecture of `meta`, BatchNorm folded as the quantized model was (random weights)."""
    model = build_model(meta.arch, meta.num_classes, meta.in_channels, meta.image_size, meta.width)
    if meta.layer_shapes == "shape":
        shapes = meta.quant.get("arch_shapes")
        if not isinstance(shapes, dict):
            raise CheckpointError("meta.json: quant.arch_shapes is needed to rebuild a resized architecture")
        resize_to_state_dict(model, {k: torch.empty(v) for k, v in shapes.items()})
    return fold_batchnorm(model)


def read_tensors(directory: Path) -> tuple[bytes, dict[str, Tensor]]:
    data = (directory / WEIGHTS).read_bytes()
    try:
        return data, st_load(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises several kinds
        raise CheckpointError(f"{directory / WEIGHTS} is not a valid safetensors file: {e}") from None


def _take(tensors: dict[str, Tensor], key: str) -> Tensor:
    try:
        return tensors.pop(key)
    except KeyError:
        raise CheckpointError(f"{WEIGHTS} lacks {key}") from None


def _check_used(tensors: dict[str, Tensor]) -> None:
    if tensors:
        names = sorted(tensors)
        raise CheckpointError(f"{WEIGHTS} holds tensors the model has no place for: {', '.join(names[:5])}"
                              + (" ..." if len(names) > 5 else ""))


# ---------------------------------------------------------------- int8


def int8_tensors(qmodel: nn.Module) -> dict[str, Tensor]:
    """A converted int8 model's state_dict as plain tensors (see the module docstring)."""
    out: dict[str, Tensor] = {}
    output_scales = {f"{name}.scale": float(m.scale) for name, m in qmodel.named_modules()
                     if isinstance(getattr(m, "scale", None), float)}

    def put(key: str, value) -> None:
        if isinstance(value, tuple):
            for i, item in enumerate(value):
                if item is not None:
                    put(f"{key}.{i}", item)
        elif isinstance(value, Tensor) and value.is_quantized:
            out[f"{key}.int_repr"] = value.int_repr().contiguous()
            if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                out[f"{key}.q_per_channel_scales"] = value.q_per_channel_scales().to(torch.float64)
                out[f"{key}.q_per_channel_zero_points"] = value.q_per_channel_zero_points().to(torch.int64)
                out[f"{key}.q_per_channel_axis"] = torch.tensor(value.q_per_channel_axis(), dtype=torch.int64)
            else:
                out[f"{key}.q_scale"] = torch.tensor(value.q_scale(), dtype=torch.float64)
                out[f"{key}.q_zero_point"] = torch.tensor(value.q_zero_point(), dtype=torch.int64)
        elif isinstance(value, Tensor):
            if key in output_scales:
                value = torch.tensor(output_scales[key], dtype=torch.float64)
            out[key] = value.detach().contiguous().clone()
        # torch.dtype entries (a packed Linear's dtype) are rebuilt with the model

    for key, value in qmodel.state_dict().items():
        put(key, value)
    return out


def int8_bytes(qmodel: nn.Module) -> bytes:
    """The bytes of an int8 checkpoint's model.safetensors (its file_bytes)."""
    return st_save(int8_tensors(qmodel))


def _rebuild_value(tensors: dict[str, Tensor], key: str, template):
    if isinstance(template, tuple):
        return tuple(None if item is None else _rebuild_value(tensors, f"{key}.{i}", item)
                     for i, item in enumerate(template))
    if isinstance(template, Tensor) and template.is_quantized:
        ints = _take(tensors, f"{key}.int_repr")
        if template.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            return torch._make_per_channel_quantized_tensor(
                ints, _take(tensors, f"{key}.q_per_channel_scales").to(torch.float64),
                _take(tensors, f"{key}.q_per_channel_zero_points").to(torch.int64),
                int(_take(tensors, f"{key}.q_per_channel_axis")))
        return torch._make_per_tensor_quantized_tensor(ints, float(_take(tensors, f"{key}.q_scale")),
                                                       int(_take(tensors, f"{key}.q_zero_point")))
    if isinstance(template, Tensor):
        value = _take(tensors, key)
        if value.shape != template.shape:
            raise CheckpointError(f"{WEIGHTS}: {key} has shape {tuple(value.shape)}, the model "
                                  f"{tuple(template.shape)}")
        return value
    return template


def load_int8_tensors(qmodel: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Loads tensors written by `int8_tensors` into an int8 model of the same architecture."""
    template = qmodel.state_dict()
    tensors = dict(tensors)
    rebuilt = type(template)((k, _rebuild_value(tensors, k, v)) for k, v in template.items())
    rebuilt._metadata = template._metadata  # the modules' state_dict versions
    _check_used(tensors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qmodel.load_state_dict(rebuilt)


def int8_quant_meta(mode: str, engine: str, backend: str, runs: str) -> dict:
    return {"mode": mode, "engine": engine, "backend": backend, "runs": runs, "batchnorm_folded": True}


# ---------------------------------------------------------------- packed


def packed_tensors(model: nn.Module, quantized: dict[str, maths.Codes],
                   input_ranges: dict[str, tuple[Tensor, Tensor]] | None = None) -> dict[str, Tensor]:
    """The tensors of a packed checkpoint: `quantized` maps a layer path to its weight's codes; every
    other tensor of the model's state_dict is kept as it is (see the module docstring)."""
    out: dict[str, Tensor] = {}
    packed = {f"{name}.weight" for name in quantized}
    for key, value in model.state_dict().items():
        if key not in packed:
            out[key] = value.detach().contiguous().clone()
    for name, c in quantized.items():
        out[f"{name}.weight.codes"] = pack_codes(c.codes - c.qmin, c.bits)
        out[f"{name}.weight.scale"] = c.scale.reshape(-1).to(torch.float32).contiguous()
        out[f"{name}.weight.zero_point"] = c.zero_point.reshape(-1).to(torch.int32).contiguous()
    for name, (lo, hi) in (input_ranges or {}).items():
        out[f"{name}.input_range"] = torch.stack([lo.reshape(()), hi.reshape(())]).to(torch.float32)
    return out


def packed_bytes(model: nn.Module, quantized: dict[str, maths.Codes],
                 input_ranges: dict[str, tuple[Tensor, Tensor]] | None = None) -> bytes:
    """The bytes of a packed checkpoint's model.safetensors (its file_bytes), made in memory."""
    return st_save(packed_tensors(model, quantized, input_ranges))


def packed_quant_meta(bits: dict[str, int], scheme: dict, runs: str, activations: dict | None = None) -> dict:
    return {"bits": dict(bits), "scheme": dict(scheme), "batchnorm_folded": True, "activations": activations,
            "runs": runs, "simulated": True}


class ActivationQuantRunner(nn.Module):
    """Runs a model with each layer's input fake-quantized to the stored ranges."""

    def __init__(self, model: nn.Module, quant):
        super().__init__()
        self.model = model
        self.quant = quant

    def forward(self, x: Tensor) -> Tensor:
        with self.quant:
            return self.model(x)


@register_format("packed")
def load_packed(directory: Path, meta: CheckpointMeta) -> tuple[nn.Module, ModelForm]:
    """The float structure holding the unpacked low-bit weights; the form says simulated."""
    q = meta.quant
    bits, scheme = q.get("bits"), q.get("scheme")
    if not isinstance(bits, dict) or not isinstance(scheme, dict) or "symmetric" not in scheme:
        raise CheckpointError(f"meta.json: quant must hold bits per layer and the scheme; got {q}")
    data, tensors = read_tensors(directory)
    model = folded_structure(meta)
    per_channel = scheme.get("granularity", "per_channel") == "per_channel"
    sd: dict[str, Tensor] = {}
    groups: dict[str, int] = {}
    layer_bits: dict[str, int] = {}
    for name, layer in prunable_weights(model):
        b = int(bits.get(name, maths.FLOAT_BITS))
        maths.check_bits(f"quant.bits[{name}]", b)
        layer_bits[name] = b
        if b >= maths.FLOAT_BITS:
            continue
        shape = layer.weight.shape
        qmin, _ = maths.int_range(b, bool(scheme["symmetric"]))
        codes = unpack_codes(_take(tensors, f"{name}.weight.codes"), b, layer.weight.numel()) + qmin
        scale = _take(tensors, f"{name}.weight.scale")
        zero_point = _take(tensors, f"{name}.weight.zero_point").to(torch.int64)
        axis = 0 if per_channel and len(shape) > 1 else None
        if scale.numel() != (shape[0] if axis == 0 else 1) or zero_point.numel() != scale.numel():
            raise CheckpointError(f"{WEIGHTS}: {name} has {scale.numel()} scales for a weight of shape "
                                  f"{tuple(shape)} ({scheme.get('granularity')})")
        sd[f"{name}.weight"] = maths.dequantize(codes.reshape(shape), scale, zero_point, axis)
        groups[name] = scale.numel()
    ranges = {k[: -len(".input_range")]: tensors.pop(k) for k in list(tensors) if k.endswith(".input_range")}
    for key in model.state_dict():
        if key not in sd:
            sd[key] = _take(tensors, key)
    _check_used(tensors)
    load_into(model, sd)
    runner = None
    acts = q.get("activations")
    if acts:
        quant = ActivationQuant(model, int(acts["bits"]), {k: (r[0], r[1]) for k, r in ranges.items()},
                                symmetric=bool(acts["symmetric"]))
        runner = ActivationQuantRunner(model, quant)
    form = ModelForm(runner=runner, backend=q.get("runs", "fp32 eager (simulated low-bit weights)"),
                     weight_bits=layer_bits, quant_groups=groups, simulated=bool(q.get("simulated", True)),
                     artifact=data)
    return model, form


# ---------------------------------------------------------------- reading any format


def load_variant(directory: str | Path) -> tuple[nn.Module, ModelForm, CheckpointMeta]:
    """Any checkpoint directory: its float structure, the form it is deployed as, and its meta."""
    meta = read_meta(directory)
    if meta.weights_format == "float":
        model, meta = load_checkpoint(directory)
        return model, ModelForm(), meta
    model, form = WEIGHT_LOADERS.get(meta.weights_format)(Path(directory), meta)
    return model.eval(), form, meta
