"""Which machine a latency came from: a fingerprint of the CPU and the software that decide its speed.

Latencies from two machines are not one series: an int8 model runs 1.4x faster than fp32 on a CPU with
AVX2 alone and 5-10x on one with AVX-512 VNNI. `fingerprint()` reads what decides that (the CPU model,
the ISA features for int8 and bf16 kernels, physical cores and logical CPUs, the torch, ONNX Runtime
and quantized-engine versions) without importing torch, and `machine_id()` names it in twelve hex
digits. Every timed point records the id (`Measurement.machine`); the store keeps each fingerprint
once (its `machines` table).

Torch-free (core): versions come from the installed distributions' metadata, and the quantized engine
only when torch is already imported.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import sys

# The ISA features that decide int8 and bf16 speed on x86, as /proc/cpuinfo spells them.
ISA_FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
                "amx_int8", "amx_bf16")
# What takes part in the id: a new torch or another CPU is another machine; the host name is not.
ID_KEYS = ("cpu", "isa", "physical_cores", "logical_cpus", "torch", "onnxruntime", "arch")


def _cpuinfo() -> tuple[str, set[str], int]:
    """(CPU model, its feature flags, physical cores) from /proc/cpuinfo; ("", set(), 0) elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return "", set(), 0
    model, flags, cores, physical = "", set(), set(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and not model:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    return model, flags, len(cores)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def usable_cpus() -> int:
    """The logical CPUs this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@functools.cache
def fingerprint() -> dict:
    """This machine, as the `machines` table stores it (see the module docstring)."""
    model, flags, physical = _cpuinfo()
    logical = usable_cpus()
    torch = sys.modules.get("torch")
    engine = ""
    if torch is not None:
        engine = str(getattr(getattr(torch.backends, "quantized", None), "engine", "") or "")
    fp = {
        "cpu": model or platform.processor() or platform.machine(),
        "isa": [f for f in ISA_FEATURES if f in flags],
        "physical_cores": min(physical, logical) if physical else logical,
        "logical_cpus": logical,
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "quantized_engine": engine,
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    fp["id"] = machine_id(fp)
    return fp


def machine_id(fp: dict) -> str:
    """Twelve hex digits naming a fingerprint (over ID_KEYS)."""
    text = json.dumps({k: fp.get(k) for k in ID_KEYS}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def describe(fp: dict) -> str:
    """One line: 'Intel Xeon ..., 2 cores (2 CPUs), AVX2 AVX-512 VNNI AMX, torch 2.14.1'."""
    isa = " ".join(f.upper().replace("_", "-") for f in fp.get("isa", [])) or "no AVX2"
    return (f"{fp.get('cpu') or 'unknown CPU'}, {fp.get('physical_cores')} cores ({fp.get('logical_cpus')} CPUs), "
            f"{isa}, torch {fp.get('torch') or '?'}")
