"""The real int8 backend, behind one small interface so it can be swapped.

An `Int8Backend` turns a float model (BatchNorm already folded) into an `Int8Model`: a runner that
computes predictions in int8, the words that say what ran, which layers run in int8 and with how
many scales, which stayed float, and the bytes of the serialised int8 model.

The default backend is `fx`: torch.ao.quantization FX graph mode (deprecated in favour of torchao's
PT2E flow, but shipped with torch 2.14.1). On this project's 2-core x86 CPU it gave about 3x over fp32
for resnet18. The PT2E flow (torch.export + torchao's X86InductorQuantizer) is the second backend,
`pt2e` (compiled by Inductor into int8 kernels, about 10 s per batch shape) and `pt2e_eager` (its
uncompiled reference), in engine/deploy/pt2e.py. A new backend is one subclass registered in
INT8_BACKENDS; one whose checkpoint is not the converted model's state overrides `restore`.

The quantized engine (`x86`: fbgemm, choosing oneDNN where it judges it faster; `onednn`; or
`qnnpack`, the mobile kernels) is a process-wide torch setting; the runner sets it before every
forward so models made for different engines can coexist.
"""

from __future__ import annotations

import copy
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from engine.core.errors import CheckpointError, ConfigError, UserError
from engine.core.progress import CancelToken
from engine.core.registry import Registry
from engine.deploy.formats import (
    folded_structure,
    int8_bytes,
    load_int8_tensors,
    read_tensors,
    register_format,
)
from engine.deploy.measure import ModelForm, prunable_weights
from engine.model.checkpoint import CheckpointMeta

ENGINES = ("x86", "qnnpack", "onednn")


class Int8ConversionError(UserError):
    """The backend could not turn this model into an int8 model."""


@dataclass
class Int8Model:
    runner: nn.Module  # computes predictions in int8 (and is what latency is measured on)
    backend: str  # what runs, in words, e.g. "int8 torch.ao FX (x86)"
    layer_groups: dict[str, int]  # prunable layer path -> scale groups, for each layer that runs in int8
    float_layers: list[str] = field(default_factory=list)  # prunable layers left in float
    artifact: bytes = b""  # the int8 checkpoint's model.safetensors (its size is file_bytes)
    extra: dict = field(default_factory=dict)  # what the run's point records beside, e.g. conversion_s, compile_s

    @property
    def weight_bits(self) -> dict[str, int]:
        return {name: 8 for name in self.layer_groups}


class EngineRunner(nn.Module):
    """Runs a quantized module with the quantized engine it was converted for."""

    def __init__(self, module: nn.Module, engine: str):
        super().__init__()
        self.module = module
        self.engine = engine

    def forward(self, x: Tensor) -> Tensor:
        if torch.backends.quantized.engine != self.engine:
            torch.backends.quantized.engine = self.engine
        return self.module(x)


class Int8Backend(ABC):
    name: str
    description: str

    @abstractmethod
    def static(self, model: nn.Module, calibration: Iterable[Tensor], engine: str,
               cancel: CancelToken | None = None, keep_float: Sequence[str] = ()) -> Int8Model:
        """Post-training static quantization: weights per channel, activations calibrated on the batches;
        the Conv/Linear layers named in `keep_float` stay in float (their inputs dequantized)."""

    @abstractmethod
    def dynamic(self, model: nn.Module, engine: str) -> Int8Model:
        """Dynamic quantization: int8 weights for Linear layers, activations quantized on the fly."""

    def restore(self, model: nn.Module, tensors: dict[str, Tensor], example: Tensor,
                keep_float: Sequence[str]) -> Int8Model | None:
        """A static int8 model from its checkpoint's tensors, for a backend whose checkpoint is not the
        converted model's state (None: the loader converts `model` and loads the tensors into the result)."""
        return None

    def search_form(self) -> Int8Backend:
        """The backend a search's trial conversions use (`ptq_int8 --max-drop`): one with the same quantization
        (same observers, same scales) that is cheaper to build; the final model is then converted with `self`."""
        return self


INT8_BACKENDS: Registry[Int8Backend] = Registry("int8 backend")


def check_engine(engine: str) -> None:
    supported = [e for e in ENGINES if e in torch.backends.quantized.supported_engines]
    if engine not in supported:
        raise Int8ConversionError(f"engine must be one of {', '.join(supported)} on this machine; got {engine!r}")


def use_engine(engine: str) -> None:
    check_engine(engine)
    torch.backends.quantized.engine = engine


def serialise(module: nn.Module) -> bytes:
    """The int8 model as an int8 checkpoint stores it: int8 weights, scales and zero points as plain
    tensors in safetensors (engine/deploy/formats.py), nothing pickled."""
    return int8_bytes(module)


def int8_layers(qmodel: nn.Module) -> dict[str, int]:
    """Path -> number of weight scales, for every quantized Conv/Linear in a converted model."""
    import torch.ao.nn.quantized as nnq

    out = {}
    for name, m in qmodel.named_modules():
        if isinstance(m, (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnq.Linear)):
            w = m.weight()
            per_channel = w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
            out[name] = w.q_per_channel_scales().numel() if per_channel else 1
    return out


def without_identities(model: nn.Module) -> nn.Module:
    """The model as an FX graph with Identity calls (folded BatchNorms) bypassed, so conv+relu fuse.

    Module paths are kept, so the int8 layers keep the float layers' names."""
    from torch import fx

    graph_module = fx.symbolic_trace(model)
    modules = dict(graph_module.named_modules())
    for node in list(graph_module.graph.nodes):
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.Identity) and node.args:
            node.replace_all_uses_with(node.args[0])
            graph_module.graph.erase_node(node)
    graph_module.graph.lint()
    graph_module.recompile()
    return graph_module


def check_keep_float(model: nn.Module, keep_float: Sequence[str]) -> list[str]:
    """The layer paths of `keep_float`, each a Conv/Linear layer of `model` (else a ConfigError listing them)."""
    valid = [n for n, _ in prunable_weights(model)]
    unknown = [n for n in keep_float if n not in valid]
    if unknown:
        raise ConfigError(f"keep_float names no Conv/Linear layer of {type(model).__name__}: {', '.join(unknown)}; "
                          f"its layers are {', '.join(valid)}")
    return list(dict.fromkeys(keep_float))


def unfused(layer: nn.Module) -> nn.Module:
    """The Conv/Linear inside a fused float module (ConvReLU2d, LinearReLU: a layer kept float), else the layer."""
    from torch.ao.nn.intrinsic import _FusedModule

    return layer[0] if isinstance(layer, _FusedModule) else layer


def untraceable_layer(model: nn.Module) -> str:
    """' at <path> (<Class>)': the innermost module FX was tracing when tracing failed ('' when it traces or
    failed at the top level), so a refusal names the block to rewrite or keep out."""
    from torch import fx

    class PathTracer(fx.Tracer):
        def __init__(self):
            super().__init__()
            self.stack: list[str] = []

        def call_module(self, m, forward, args, kwargs):
            self.stack.append(self.path_of_module(m))
            out = super().call_module(m, forward, args, kwargs)
            self.stack.pop()
            return out

    tracer = PathTracer()
    try:
        tracer.trace(model)
    except Exception:  # noqa: BLE001 - the failure is what is looked for
        if tracer.stack:
            path = tracer.stack[-1]
            return f" at layer '{path}' ({type(model.get_submodule(path)).__name__})"
    return ""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


class FxBackend(Int8Backend):
    """torch.ao.quantization FX graph mode: trace, fuse conv+relu (and conv+bn), observe, convert."""

    name = "fx"
    description = "torch.ao.quantization FX graph mode"

    def qconfig_mapping(self, engine: str):
        from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig_mapping
        from torch.ao.quantization.observer import HistogramObserver, default_per_channel_weight_observer

        if engine in ("x86", "onednn"):
            # per-channel weights; x86 keeps activations to 7 bits so AVX2 int16 accumulation cannot overflow
            return get_default_qconfig_mapping(engine)
        # qnnpack's default is per-tensor weights; the issue asks for per-channel, which qnnpack runs
        return QConfigMapping().set_global(QConfig(activation=HistogramObserver.with_args(reduce_range=False),
                                                   weight=default_per_channel_weight_observer))

    def static(self, model: nn.Module, calibration: Iterable[Tensor], engine: str,
               cancel: CancelToken | None = None, keep_float: Sequence[str] = ()) -> Int8Model:
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        use_engine(engine)
        keep = check_keep_float(model, keep_float)
        mapping = self.qconfig_mapping(engine)
        for name in keep:  # FX keeps a module with no qconfig in float (a fused conv+relu stays a float ConvReLU2d)
            mapping.set_module_name(name, None)
        batches = iter(calibration)
        first = next(batches, None)
        if first is None or len(first) == 0:
            raise UserError("the calibration set is empty: int8 quantization needs at least one batch "
                            "(calib_batches >= 1 on a dataset with training images)")
        float_model = copy.deepcopy(model).eval().cpu()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice on every call
            try:
                prepared = prepare_fx(without_identities(float_model), mapping, (first[:1],))
            except Exception as e:  # noqa: BLE001 - FX raises TraceError, TypeError, ... for untraceable code
                raise Int8ConversionError(
                    f"the {self.name} int8 backend cannot trace {type(model).__name__}{untraceable_layer(float_model)} "
                    f"({_first_line(e)}); use dynamic_int8 or simulated (fake) quantization for this model") from None
            with torch.inference_mode():
                for x in [first, *batches]:
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    prepared(x)
            try:
                qmodel = convert_fx(prepared)
                runner = EngineRunner(qmodel, engine).eval()
                with torch.inference_mode():
                    # one image: the x86 engine fixes its kernels at a model's first call, and a first call at
                    # batch 2 made every later batch-1 call 1.6x slower on an AMX/VNNI Xeon (bench_latency.py)
                    out = runner(first[:1])
            except Exception as e:  # noqa: BLE001 - an op without an int8 kernel fails here
                raise Int8ConversionError(
                    f"the {self.name} int8 backend cannot convert {type(model).__name__} ({_first_line(e)}); "
                    f"use dynamic_int8 or simulated (fake) quantization for this model") from None
        if not torch.isfinite(out).all():
            raise Int8ConversionError(f"the int8 {type(model).__name__} produced NaN or Inf outputs; "
                                      f"check the calibration data")
        groups = int8_layers(qmodel)
        floats = [n for n, _ in prunable_weights(model) if n not in groups]
        words = f"int8 torch.ao FX ({engine})" + (f", {len(keep)} layer(s) kept float" if keep else "")
        return Int8Model(runner, words, groups, floats, serialise(qmodel))

    def dynamic(self, model: nn.Module, engine: str) -> Int8Model:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        use_engine(engine)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qmodel = quantize_dynamic(copy.deepcopy(model).eval().cpu(), {nn.Linear: per_channel_dynamic_qconfig},
                                      dtype=torch.qint8)
        groups = int8_layers(qmodel)
        if not groups:
            raise Int8ConversionError(f"dynamic int8 quantizes Linear layers and {type(model).__name__} has none; "
                                      f"use ptq_int8 for convolutional models")
        floats = [n for n, _ in prunable_weights(model) if n not in groups]
        return Int8Model(EngineRunner(qmodel, engine).eval(), f"fp32 eager + dynamic int8 Linear ({engine})",
                         groups, floats, serialise(qmodel))


INT8_BACKENDS.register("fx")(FxBackend())


# ---------------------------------------------------------------- the int8 checkpoint format's loader


@register_format("int8")
def load_int8(directory: Path, meta: CheckpointMeta) -> tuple[nn.Module, ModelForm]:
    """The int8 model rebuilt through its backend, and the float structure holding its dequantized weights."""
    q = meta.quant
    mode, engine = q.get("mode"), q.get("engine")
    if mode not in ("static", "dynamic") or not isinstance(engine, str):
        raise CheckpointError(f"meta.json: quant must name mode (static or dynamic) and engine; got {q}")
    data, tensors = read_tensors(directory)
    model = folded_structure(meta)
    backend = INT8_BACKENDS.get(q.get("backend", "fx"))
    keep = q.get("keep_float", [])
    if not isinstance(keep, list) or not all(isinstance(n, str) for n in keep):
        raise CheckpointError(f"meta.json: quant.keep_float must be a list of layer paths; got {keep!r}")
    if mode == "static":
        example = torch.randn(4, meta.in_channels, meta.image_size, meta.image_size,
                              generator=torch.Generator().manual_seed(0))
        restored = backend.restore(model, tensors, example, keep)
        if restored is not None:  # e.g. pt2e: the folded float weights and the calibration, converted again
            return model, ModelForm(runner=restored.runner, backend=q.get("runs", restored.backend),
                                    weight_bits=restored.weight_bits, quant_groups=restored.layer_groups,
                                    artifact=data)
        try:
            int8 = backend.static(model, [example], engine, keep_float=keep) if keep else \
                backend.static(model, [example], engine)
        except ConfigError as e:
            raise CheckpointError(f"meta.json: quant.keep_float: {e}") from None
    else:
        int8 = backend.dynamic(model, engine)
    qmodel = int8.runner.module
    load_int8_tensors(qmodel, tensors)
    groups = int8_layers(qmodel)
    with torch.no_grad():
        for name, layer in prunable_weights(model):
            qlayer = unfused(qmodel.get_submodule(name))
            if name in groups:
                layer.weight.copy_(qlayer.weight().dequantize())
                bias = qlayer.bias()
            else:
                layer.weight.copy_(qlayer.weight)
                bias = qlayer.bias
            if layer.bias is not None and bias is not None:
                layer.bias.copy_(bias)
    form = ModelForm(runner=int8.runner, backend=q.get("runs", int8.backend), weight_bits={n: 8 for n in groups},
                     quant_groups=groups, artifact=data)
    return model, form
