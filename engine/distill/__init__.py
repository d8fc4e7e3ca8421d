"""Knowledge distillation: a registry of distillers, from vanilla KD to SimKD.

One method per file, each a `Distiller` with its loss as plain functions and a validated config
(see base.py); `features.py` captures intermediate features by module path and `adapters.py`
matches their shapes. Importing this package registers every method and the "distill" task.
"""

from engine.distill import at, crd, dkd, dml, fitnet, kd, mixup_kd, scratch, simkd, sp, vid  # noqa: F401
from engine.distill.base import DISTILLERS, Distiller, DistillSetup, register_distiller
from engine.distill.task import DistillTask

__all__ = ["DISTILLERS", "Distiller", "DistillSetup", "DistillTask", "register_distiller"]
