"""Knowledge distillation: a registry of distillers, from vanilla KD to SimKD.

One method per file, each a `Distiller` with its loss as plain functions and a config whose fields
are declared with `param(...)` (see base.py); `features.py` captures intermediate features by
module path and `adapters.py` matches their shapes. Importing this package imports every module in
it, so each method file registers itself (and the "distill" task) without being listed anywhere.
"""

from engine.methods.registry import import_family_modules, register_family

register_family("distill", package=__name__, title="Distil", from_checkpoint=False,
                description="distil a teacher checkpoint into a student")
import_family_modules(__name__, __path__)

from engine.methods.distill.base import DISTILLERS, Distiller, DistillSetup, register_distiller  # noqa: E402
from engine.methods.distill.task import DistillTask  # noqa: E402

__all__ = ["DISTILLERS", "Distiller", "DistillSetup", "DistillTask", "register_distiller"]
