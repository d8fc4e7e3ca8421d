"""What this CPU can do: fp32, int8 and bf16 speed on one convolution and one linear layer, measured once per
machine and kept, told in plain words ("why is my int8 model not faster?" answered before a run is spent).

`calibrate()` times a 3x3 convolution (64 to 64 channels on 28x28, batch 32) and a 1024x1024 linear layer
(batch 32) in three forms side by side with the timing protocol (engine/deploy/timing.py): fp32 eager; int8
by torch.ao FX with the x86 engine (the kernels `ptq_int8` deploys); bf16 weights and activations where the
CPU has AVX512-BF16 or AMX-BF16 (elsewhere it is not timed: torch would emulate it, slower than fp32). It
takes a few seconds. `capability()` returns the result cached for this machine (by its fingerprint id, in
`$COMPRESSION_LAB_STORE_DIR/.compression-lab/cpu-<id>.json`), or None before the first calibration.
`in_words()` says what it found.
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from engine.core.machine import describe, fingerprint
from engine.deploy import timing
from engine.deploy.bf16 import Bf16Runner, has_bf16

INT8_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass
class Capability:
    machine: str  # engine.core.machine id
    describe: str  # the machine in words
    conv_int8: float  # speed-up over fp32 (fp32 time / int8 time), median over rounds
    linear_int8: float
    conv_bf16: float | None  # None where the CPU has no bf16 instructions (not timed)
    linear_bf16: float | None
    quality: str  # the timing protocol's verdict over the calibration
    seconds: float  # how long the calibration took
    when: float  # time.time() of the calibration


def cache_file(machine: str) -> Path:
    root = Path(os.environ.get("COMPRESSION_LAB_STORE_DIR") or ".").expanduser()
    return root / ".compression-lab" / f"cpu-{machine}.json"


def _int8(module: nn.Module, example: torch.Tensor) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(module).eval(), get_default_qconfig_mapping("x86"), (example,))
        with torch.inference_mode():
            prepared(example)
        return convert_fx(prepared).eval()


def _speedups(module: nn.Module, example: torch.Tensor, policy: timing.Policy) -> tuple[float, float | None, str]:
    forms = {"fp32": module.eval(), "int8": _int8(module, example)}
    if has_bf16():
        forms["bf16"] = Bf16Runner(module)
    t = timing.time_forms(forms, example, reference="fp32", policy=policy)
    bf16 = t.speedups["bf16"].median if "bf16" in t.speedups else None
    return t.speedups["int8"].median, bf16, t.quality


def calibrate(policy: timing.Policy = timing.QUICK, save: bool = True) -> Capability:
    """Times the two layers in the three forms now (see the module docstring) and caches the result."""
    start = time.perf_counter()
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())
    linear = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU())
    conv_int8, conv_bf16, q1 = _speedups(conv, torch.randn(32, 64, 28, 28), policy)
    linear_int8, linear_bf16, q2 = _speedups(linear, torch.randn(32, 1024), policy)
    fp = fingerprint()
    noisy = [q for q in (q1, q2) if q != "clean"]
    cap = Capability(fp["id"], describe(fp), conv_int8, linear_int8, conv_bf16, linear_bf16,
                     "; ".join(noisy) if noisy else "clean", time.perf_counter() - start, time.time())
    if save:
        path = cache_file(cap.machine)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(cap), indent=1), encoding="utf-8")
    return cap


def capability() -> Capability | None:
    """This machine's cached calibration, or None before the first one (or when the file is unreadable)."""
    path = cache_file(fingerprint()["id"])
    try:
        return Capability(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def in_words(cap: Capability) -> str:
    """What the calibration found, for a user deciding whether int8 or bf16 is worth a run here."""
    isa = fingerprint()["isa"] if cap.machine == fingerprint()["id"] else []
    vnni = [f.upper().replace("_", "-") for f in INT8_FEATURES if f in isa]
    int8 = (f"int8 convolutions ran {cap.conv_int8:.1f}x and linear layers {cap.linear_int8:.1f}x as fast as fp32 "
            f"here")
    if vnni:
        head = f"This CPU has {' and '.join(vnni)}: {int8}."
    else:
        head = f"This CPU has no VNNI: {int8}; expect little from int8 (at most about 1.5x on such CPUs)."
    if cap.conv_bf16 is None:
        tail = " It has no bf16 instructions: bf16 would be emulated, slower than fp32."
    else:
        tail = f" bf16: {cap.conv_bf16:.1f}x (convolution) and {cap.linear_bf16:.1f}x (linear)."
    noisy = "" if cap.quality == "clean" else " (timed while the machine was busy: re-measure when it is quiet)"
    return head + tail + noisy
