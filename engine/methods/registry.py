"""One registry of compression methods per family, filled by each method's own file.

A method is one file: its config dataclass (fields declared with `param(...)`), its function and
one registration. The family's CLI command, its `*-methods` listing and the app's forms read this
registry, so a new method touches nothing else. Each family's package imports all of its modules
(`import_family_modules`), so a new file is found without being listed anywhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from engine.core.config import Config
from engine.core.registry import Registry

FAMILY_PACKAGES = {"quantize": "engine.methods.quant", "prune": "engine.methods.prune", "distill": "engine.methods.distill"}


@dataclass(frozen=True)
class Method:
    family: str  # quantize | prune | distill
    name: str  # the --method name and each point's `method`
    config: type[Config]  # its settings
    description: str  # one line
    task: str  # the registered task that runs it (quantize.<name>, prune.<name>, distill)


METHODS: dict[str, Registry[Method]] = {
    "quantize": Registry("quantization method"),
    "prune": Registry("pruning method"),
    "distill": Registry("distillation method"),
}


def register_method(family: str, name: str, config: type[Config], description: str, task: str) -> Method:
    method = Method(family, name, config, description, task)
    METHODS[family].register(name)(method)
    return method


def family_methods(family: str) -> Registry[Method]:
    """The family's methods, after importing its package (which registers them)."""
    importlib.import_module(FAMILY_PACKAGES[family])
    return METHODS[family]


def import_family_modules(package: str, path: list[str]) -> None:
    """Imports every module of a family package, so each method file registers itself (its `cli`
    module, which builds on engine.cli.main, is left to the CLI)."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        if info.name != "cli":
            importlib.import_module(f"{package}.{info.name}")
