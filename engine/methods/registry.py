"""The method families and, per family, its methods: both filled by the families' own packages.

A family is a package: a sub-package of engine/methods, or a module named in $COMPRESSION_LAB_PLUGINS
(comma-separated), whose `__init__` declares it once with `register_family(...)` (its name, the Launch
page's title, a one-line description, whether its methods start from a checkpoint) and then imports
its modules (`import_family_modules`). A method is one file: its config dataclass (fields declared
with `param(...)`), its function and one registration (`register_method`, usually through the
family's decorator). The CLI's `<family>` and `<family>-methods` commands, the Launch page, recipes
and the job runner read these registries, so neither a method nor a family is listed anywhere else.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.core.config import Config
from engine.core.errors import UserError
from engine.core.point import FAMILIES as POINT_FAMILIES
from engine.core.point import add_family, add_family_finder
from engine.core.registry import Registry

PLUGINS_ENV = "COMPRESSION_LAB_PLUGINS"  # modules outside the repository that declare families


@dataclass(frozen=True)
class Method:
    family: str  # the family's name: quantize | prune | distill | a plugin's
    name: str  # the --method name and each point's `method`
    config: type[Config]  # its settings
    description: str  # one line
    task: str  # the registered task that runs it (quantize.<name>, prune.<name>, distill)


@dataclass(frozen=True)
class Family:
    name: str  # the CLI command, each point's `family`, the prefix of its methods' tasks
    title: str  # what the Launch page calls it ("Quantize")
    description: str  # one line: the CLI command's help
    from_checkpoint: bool  # its methods start from a float checkpoint (Launch asks for one)
    package: str  # the package that declared it (importing it registers the methods)
    methods: Registry[Method]
    # adds options of the family's own to its CLI command: hook(parser, {flag: Option}) (quantize: --asymmetric)
    cli_options: Callable[[Any, dict], None] | None = None


FAMILIES: Registry[Family] = Registry("method family")
METHODS: dict[str, Registry[Method]] = {}  # family name -> its methods (the same registries as Family.methods)
NAME = re.compile(r"[a-z][a-z0-9_]*")


def register_family(name: str, *, package: str, title: str, description: str, from_checkpoint: bool,
                    cli_options: Callable[[Any, dict], None] | None = None) -> Family:
    """Declares a family; its package calls this once, before importing its method modules."""
    if not NAME.fullmatch(name):
        raise ValueError(f"a family name must be lower-case letters, digits and _, got {name!r}")
    if name in POINT_FAMILIES and name not in FAMILIES:
        raise ValueError(f"family '{name}' is taken by a task of its own (train, measure)")
    family = Family(name, title, description, from_checkpoint, package, Registry(f"{name} method"), cli_options)
    FAMILIES.register(name)(family)
    METHODS[name] = family.methods
    add_family(name)
    return family


def register_method(family: str, name: str, config: type[Config], description: str, task: str) -> Method:
    if family not in FAMILIES:
        raise ValueError(f"method '{name}' names family '{family}', which is not declared: its package's __init__ "
                         f"calls register_family('{family}', ...) before importing its modules")
    method = Method(family, name, config, description, task)
    FAMILIES.get(family).methods.register(name)(method)
    return method


def plugin_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def discover_families() -> Registry[Family]:
    """Every family: each sub-package of engine/methods and each module named in $COMPRESSION_LAB_PLUGINS
    is imported, and those that declare a family are the families (in the order they were declared)."""
    here = importlib.import_module(__package__)
    for info in sorted(pkgutil.iter_modules(here.__path__), key=lambda i: i.name):
        if info.ispkg:
            importlib.import_module(f"{__package__}.{info.name}")
    for module in plugin_modules():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise
            raise UserError(f"{PLUGINS_ENV} names the module '{module}', which is not on the Python path "
                            f"({PLUGINS_ENV}={os.environ.get(PLUGINS_ENV, '')})") from None
    return FAMILIES


def get_family(name: str) -> Family:
    return discover_families().get(name)


def family_methods(family: str) -> Registry[Method]:
    """The family's methods, after importing every family (which registers them)."""
    return get_family(family).methods


def import_family_modules(package: str, path: list[str]) -> None:
    """Imports every module of a family package, so each method file registers itself."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        importlib.import_module(f"{package}.{info.name}")


add_family_finder(discover_families)  # a point may name a family no module has imported yet
