"""bf16 as a deployable form: the float model's weights and compute in bfloat16, on CPUs that have it.

A bf16 model stores every parameter in 16 bits (no scales: bfloat16 is a float format with fp32's exponent
range) and computes in bf16 where the CPU has AVX512-BF16 or AMX-BF16 instructions (oneDNN's kernels, which
torch eager calls for bf16 convolutions and matrix products). Elsewhere torch would emulate bf16 in software,
slower than fp32, so the form is refused there with the reason rather than measured as a "compressed"
model that no one would deploy. Only float forms become bf16: an int8 model is already integer, and a
simulated low-bit (packed) model's weights are not bf16 values.

The runner takes the fp32 input, casts it to bf16, and returns fp32 logits, so accuracy is scored on what
bf16 computed and latency includes the two casts (as a deployment would).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from engine.core.errors import ConfigError
from engine.core.machine import describe, fingerprint
from engine.model.checkpoint import state_dict_bytes

if TYPE_CHECKING:
    from engine.deploy.measure import ModelForm

BF16_FEATURES = ("avx512_bf16", "amx_bf16")


def has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16)."""
    return any(f in fingerprint()["isa"] for f in BF16_FEATURES)


def check_bf16_cpu() -> None:
    if not has_bf16():
        raise ConfigError(f"bf16 needs a CPU with AVX512-BF16 or AMX-BF16 instructions; this one "
                          f"({describe(fingerprint())}) has neither, so torch would emulate bf16, slower than "
                          f"fp32: measure fp32 or int8 here")


class Bf16Runner(nn.Module):
    """A float module run in bf16: weights and activations; fp32 in, fp32 logits out."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(module).to(torch.bfloat16).eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.to(torch.bfloat16)).float()


def bf16_form(model: nn.Module, form: ModelForm) -> ModelForm:
    """`form` (a float form of `model`) deployed in bf16: its runner, 16-bit storage without scales, and the
    bf16 safetensors as the artifact. Refuses int8 and simulated forms, and CPUs without bf16, by name."""
    if form.simulated:
        raise ConfigError("bf16 runs float models; this checkpoint holds simulated low-bit weights (packed), "
                          "which bf16 would not store: measure it on torch")
    if form.runner is not None:
        raise ConfigError(f"bf16 runs float models; this checkpoint runs as {form.backend!r} (already "
                          f"quantized): measure it on torch")
    check_bf16_cpu()
    runner = Bf16Runner(model)
    bits = {name: 16 for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    return replace(form, runner=runner, backend="bf16 eager (weights and compute in bfloat16)", weight_bits=bits,
                   quant_groups={name: 0 for name in bits}, float_bytes=2,
                   artifact=state_dict_bytes(runner.module))
