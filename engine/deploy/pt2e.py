"""The PT2E int8 backend: torch.export, torchao's X86InductorQuantizer, and (for `pt2e`) torch.compile.

PT2E is the flow that replaces the deprecated torch.ao.quantization FX mode: the model is exported
(`torch.export`, a batch dimension left dynamic), annotated by `X86InductorQuantizer` (int8 weights per
channel, uint8 activations per tensor, calibrated by histogram observers), calibrated on the batches and
converted (`torchao.quantization.pt2e`, torchao 0.18.0). Two backends share it:

- `pt2e`: the converted program compiled by Inductor, which lowers the quantize/dequantize patterns to
  oneDNN int8 kernels. That lowering needs the *global* `torch._inductor.config.freezing = True`, so it is
  set only while the conversion compiles and restored after (another thread compiling at that moment
  would see it too); `dynamic=True` failed in the qconv lowering, so each batch shape is its own compile
  (about 10 s each on a 2-core CPU). Two shapes are compiled, 1 and 32 (the latency batch sizes); any other
  batch runs as chunks of 32, the last padded with zeros, so accuracy is measured on the same int8
  kernels. The compile's seconds are recorded (`compile_s`) beside the conversion's (`conversion_s`).
- `pt2e_eager`: the converted program uncompiled: it dequantizes and runs fp32 ops (a reference for the
  int8 numerics, with no speed-up; it says so in its words).

Export is strict (Dynamo): the default non-strict export names a module's every call after the module,
so a ReLU module called twice (as in the ResNet BasicBlock, `layer1.0.relu`) made one partition with two
outputs, and the quantizer's conv+add+ReLU pattern failed with "Input partition has more than one output
node" (the resnet18 failure with torchao 0.18). Where the quantizer still fails, the error names the
module called more than once, if any.

The checkpoint (`weights_format` int8, `meta.quant.backend` pt2e or pt2e_eager) cannot store the converted
program: its activation scales are literals in the graph. It stores, in safetensors, the BN-folded float
weights (`float.<name>`) and the calibration: every observer's state (`observer.<name>`). The loader
exports the folded architecture again, prepares it (observer names follow the graph, so they are the
same), loads the observers and converts, which gives the same int8 program. So its file_bytes are the
float weights' plus the calibration's, not int8 weights'.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save as st_save
from torch import Tensor, nn

from engine.core.errors import CheckpointError, ConfigError, UserError
from engine.core.progress import CancelToken
from engine.deploy.int8 import INT8_BACKENDS, Int8Backend, Int8ConversionError, Int8Model, check_keep_float
from engine.deploy.measure import prunable_weights

COMPILED_BATCHES = (1, 32)  # the latency batch sizes; every other batch runs as padded chunks of 32
LAYER_OPS = ("aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default", "aten.linear.default")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def shared_modules(model: nn.Module, x: Tensor) -> list[str]:
    """Paths of the leaf modules that one forward pass calls more than once (e.g. a ReLU reused in a block)."""
    calls: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda *_, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
             for n, m in model.named_modules() if n and not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [f"{n} ({type(model.get_submodule(n)).__name__}, {k} calls)" for n, k in calls.items() if k > 1]


def failing_modules(model: nn.Module, error: BaseException) -> str:
    """Where in `model` tracing failed: the innermost traced frame (Dynamo's `real_stack`) that is a module's
    code, as the paths of the modules of that class and the line, e.g. " in gate (Gate), model.py:5"."""
    for frame in reversed(list(getattr(error, "real_stack", None) or [])):
        paths = []
        for path, module in model.named_modules():
            code = getattr(type(module).forward, "__code__", None)
            if code is not None and code.co_filename == frame.filename and \
                    (frame.lineno or 0) in {line for *_, line in code.co_lines()}:
                paths.append(f"{path or '(the model)'} ({type(module).__name__})")
        if paths:
            return f" in {', '.join(paths[:4])}{' ...' if len(paths) > 4 else ''}, " \
                   f"{Path(frame.filename).name}:{frame.lineno} `{(frame.line or '').strip()}`"
    return ""


def export(model: nn.Module, example: Tensor) -> nn.Module:
    """The model as an exported program's module, its batch dimension dynamic (any batch size runs).

    Strict (Dynamo) first: it names each call of a module apart, which the quantizer's pattern matching needs
    (module docstring); non-strict if Dynamo cannot trace the model; the strict error if neither can."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    x = example[:2] if len(example) >= 2 else torch.cat([example, example])  # a size-1 batch would be specialised
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}}, strict=True)
        except Exception as strict_error:  # noqa: BLE001 - Dynamo raises Unsupported, UserError, ...
            try:
                program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}}, strict=False)
            except Exception:  # noqa: BLE001
                raise strict_error from None
    return program.module()


def prepared(model: nn.Module, example: Tensor, keep: Sequence[str], name: str) -> nn.Module:
    """The exported model with X86InductorQuantizer's observers inserted (`keep` left unannotated: float)."""
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e
    except ImportError as e:
        raise Int8ConversionError(f"the {name} int8 backend needs torchao ({e}); install requirements.txt "
                                  f"(torchao==0.18.0) or use --backend fx") from None
    try:
        exported = export(model, example)
    except Exception as e:  # noqa: BLE001 - export raises many kinds for untraceable code
        raise Int8ConversionError(f"the {name} int8 backend cannot export {type(model).__name__} with torch.export"
                                  f"{failing_modules(model, e)} ({_first_line(e)}); use --backend fx") from None
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    for layer in keep:
        quantizer.set_module_name_qconfig(layer, None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return prepare_pt2e(exported, quantizer)
    except Exception as e:  # noqa: BLE001 - the quantizer's pattern matching raises ValueError, AssertionError, ...
        shared = shared_modules(model, example[:1])
        cause = (f"; modules called more than once, which its pattern matching cannot split: {', '.join(shared)}"
                 if shared else "")
        raise Int8ConversionError(f"X86InductorQuantizer cannot annotate {type(model).__name__} "
                                  f"({_first_line(e)}){cause}; use --backend fx") from None


def observers(model: nn.Module) -> dict[str, nn.Module]:
    from torchao.quantization.pt2e import ObserverBase

    return {n: m for n, m in model.named_modules() if isinstance(m, ObserverBase)}


def quantized_layers(prepared_model: nn.Module) -> dict[str, int]:
    """Layer path -> weight scales, for every conv/linear whose weight the quantizer observed."""
    obs = observers(prepared_model)
    out = {}
    for node in prepared_model.graph.nodes:
        if node.op != "call_function" or str(node.target) not in LAYER_OPS or len(node.args) < 2:
            continue
        weight = node.args[1]
        if getattr(weight, "op", None) == "call_module" and weight.target in obs and weight.args \
                and getattr(weight.args[0], "op", None) == "get_attr":
            layer = weight.args[0].target.rsplit(".", 1)[0]
            out[layer] = obs[weight.target].min_val.numel()
    return out


@contextmanager
def inductor_freezing():
    """Inductor's global `freezing` flag on for a compile, restored after (the int8 lowering needs it)."""
    import torch._inductor.config as inductor_config

    before = inductor_config.freezing
    inductor_config.freezing = True
    try:
        yield
    finally:
        inductor_config.freezing = before


class Pt2eRunner(nn.Module):
    """The converted program, eager or compiled for batches of 1 and 32 (other batches then run as chunks of
    32, the last padded). It was exported in eval mode, so `.train()`/`.eval()` only set the flag here
    (torchao's own train/eval switch re-traces patterns, seconds per call)."""

    def __init__(self, program: nn.Module, example: Tensor | None = None):
        super().__init__()
        self.program = program
        self.compiled = None
        self.compile_s = 0.0
        if example is not None:  # kept out of the submodules, so the program is listed (and saved) once
            object.__setattr__(self, "compiled", torch.compile(program, dynamic=False))
            t0 = time.perf_counter()
            with inductor_freezing(), torch.inference_mode():
                for b in COMPILED_BATCHES:
                    self.compiled(example[:1].expand(b, *example.shape[1:]).clone())
            self.compile_s = time.perf_counter() - t0

    def train(self, mode: bool = True) -> Pt2eRunner:
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.compiled is None:
            return self.program(x)
        with torch.inference_mode():
            return self.run_compiled(x)

    def run_compiled(self, x: Tensor) -> Tensor:
        # the compiled code is guarded on the input's kind: an ordinary tensor here would recompile it (seconds,
        # and without the int8 lowering), so inputs are made inference tensors as at compile time
        n = len(x)
        if n in COMPILED_BATCHES:
            return self.compiled(x if x.is_inference() else x.clone())
        size = COMPILED_BATCHES[-1]
        outs = []
        for i in range(0, n, size):
            chunk = x[i:i + size]
            # padded with zeros (each image's prediction is its own); cat and clone make inference tensors
            chunk = torch.cat([chunk, chunk.new_zeros(size - len(chunk), *chunk.shape[1:])]) if len(chunk) < size \
                else chunk.clone()
            outs.append(self.compiled(chunk)[: n - i])
        return torch.cat(outs)


class Pt2eBackend(Int8Backend):
    """torch.export + torchao X86InductorQuantizer (+ torch.compile when `compile`): static int8 only."""

    description = "PT2E: torch.export + torchao X86InductorQuantizer"

    def __init__(self, name: str, compile: bool):
        self.name, self.compile = name, compile

    def check(self, engine: str) -> None:
        if engine != "x86":
            raise Int8ConversionError(f"the {self.name} int8 backend (X86InductorQuantizer) runs on the x86 engine "
                                      f"only; got engine {engine!r}")

    def convert(self, model: nn.Module, example: Tensor, keep: Sequence[str],
                calibrate, t0: float) -> Int8Model:
        """Prepare, `calibrate(prepared)`, convert and (if compiling) compile: the Int8Model."""
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        float_model = copy.deepcopy(model).eval().cpu()
        observed = prepared(float_model, example, keep, self.name)
        with torch.no_grad():
            calibrate(observed)
        groups = quantized_layers(observed)  # after calibration: a per-channel observer sizes its scales then
        state = {f"float.{k}": v.detach().clone().contiguous() for k, v in float_model.state_dict().items()}
        for name, obs in observers(observed).items():
            state.update({f"observer.{name}.{k}": v.detach().clone().contiguous()
                          for k, v in obs.state_dict().items()})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = convert_pt2e(observed)
            conversion_s = time.perf_counter() - t0
            runner = Pt2eRunner(program, example if self.compile else None)
            with torch.no_grad():
                out = runner(example[:1])
        except Exception as e:  # noqa: BLE001 - convert and Inductor's lowering raise many kinds
            raise Int8ConversionError(f"the {self.name} int8 backend cannot convert {type(model).__name__} "
                                      f"({_first_line(e)}); use --backend fx") from None
        if not torch.isfinite(out).all():
            raise Int8ConversionError(f"the int8 {type(model).__name__} produced NaN or Inf outputs; "
                                      f"check the calibration data")
        floats = [n for n, _ in prunable_weights(model) if n not in groups]
        extra = {"conversion_s": conversion_s}
        if self.compile:
            extra["compile_s"] = runner.compile_s
            words = (f"int8 PT2E X86InductorQuantizer + torch.compile (oneDNN int8 kernels; batches 1 and 32 "
                     f"compiled in {runner.compile_s:.0f} s, others as padded chunks of 32)")
        else:
            words = "int8 PT2E X86InductorQuantizer, uncompiled (dequantize + fp32 ops: int8 numerics, no speed-up)"
        if keep:
            words += f", {len(keep)} layer(s) kept float"
        return Int8Model(runner, words, groups, floats, st_save(state), extra)

    def static(self, model: nn.Module, calibration: Iterable[Tensor], engine: str,
               cancel: CancelToken | None = None, keep_float: Sequence[str] = ()) -> Int8Model:
        t0 = time.perf_counter()
        self.check(engine)
        keep = check_keep_float(model, keep_float)
        batches = iter(calibration)
        first = next(batches, None)
        if first is None or len(first) == 0:
            raise UserError("the calibration set is empty: int8 quantization needs at least one batch "
                            "(calib_batches >= 1 on a dataset with training images)")

        def calibrate(observed: nn.Module) -> None:
            for x in [first, *batches]:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                observed(x)

        return self.convert(model, first, keep, calibrate, t0)

    def search_form(self) -> Int8Backend:
        """Uncompiled for a search's trials: the same prepared, calibrated and converted program without the ~10 s
        compile per trial (its fp32 ops on dequantized values round slightly differently from the compiled int8
        kernels, so the final, compiled model is measured again)."""
        return Pt2eBackend(f"{self.name}_eager", compile=False) if self.compile else self

    def dynamic(self, model: nn.Module, engine: str) -> Int8Model:
        raise Int8ConversionError(f"the {self.name} int8 backend does static int8 only; use --backend fx for "
                                  f"dynamic int8")

    def restore(self, model: nn.Module, tensors: dict[str, Tensor], example: Tensor,
                keep_float: Sequence[str]) -> Int8Model:
        """The int8 model a checkpoint stores: `model` (the folded structure) gets the float weights, the
        observers of a fresh preparation get the stored calibration, and it is converted."""
        weights = {k.removeprefix("float."): v for k, v in tensors.items() if k.startswith("float.")}
        stored = {k.removeprefix("observer."): v for k, v in tensors.items() if k.startswith("observer.")}
        unknown = [k for k in tensors if not k.startswith(("float.", "observer."))]
        if unknown:
            raise CheckpointError(f"a {self.name} int8 checkpoint holds float.* and observer.* tensors; found "
                                  f"{', '.join(unknown[:4])}")
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise CheckpointError(f"the {self.name} checkpoint's float weights do not fit its architecture: "
                                  f"{_first_line(e)}") from None

        def calibrate(observed: nn.Module) -> None:
            names = set(observers(observed))
            expected = {f"{n}.{k}" for n, m in observers(observed).items() for k in m.state_dict()}
            if expected != set(stored):
                raise CheckpointError(f"the {self.name} checkpoint's calibration does not match the observers of "
                                      f"this model ({len(stored)} stored tensors, {len(expected)} expected)")
            for name in names:
                obs = observed.get_submodule(name)
                obs.load_state_dict({k.removeprefix(f"{name}."): v for k, v in stored.items()
                                     if k.startswith(f"{name}.")})

        try:
            keep = check_keep_float(model, keep_float)
        except ConfigError as e:
            raise CheckpointError(f"meta.json: quant.keep_float: {e}") from None
        return self.convert(model, example, keep, calibrate, time.perf_counter())


INT8_BACKENDS.register("pt2e")(Pt2eBackend("pt2e", compile=True))
INT8_BACKENDS.register("pt2e_eager")(Pt2eBackend("pt2e_eager", compile=False))
