"""The typed point: one evaluated model variant, as every task returns it and the store records it.

Every family speaks the same words:

- `family`: train, measure or a method family (quantize, prune, distill, ...); `method`: the method's registered name.
- `stage`: `baseline` (the uncompressed reference a run measures), `variant` (a compressed model)
  or `step` (a point on a path: a mixed-precision step, a pruning iteration).
- `level` and `level_name`: the value of the swept knob as a number (sparsity 0.5, bits 4, average
  bits 3.2, iteration 2) and which knob it is.
- `role`: teacher, student, or empty.
- `input_checkpoint`: the checkpoint the method started from; `artifact`: the checkpoint directory
  holding this variant ("" when it was not saved).
- the `Measurement` fields (accuracy, sizes, latency, `simulated`, ...), the method's `params`,
  `accuracy_std` / `accuracy_runs` for repeats, and `extra`: whatever else a method reports
  (per-layer bits, notes), kept as a mapping.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from engine.core.config import check_choice


@dataclass
class Measurement:
    accuracy: float
    top5: float
    loss: float
    params_total: int
    params_nonzero: int
    sparsity: float
    bits: float
    size_bytes: int
    size_fp32_bytes: int
    file_bytes: int
    macs: int
    latency_ms_b1: float | None
    latency_p90_ms_b1: float | None
    latency_ms_b32: float | None
    latency_p90_ms_b32: float | None
    threads: int
    backend: str
    simulated: bool
    dataset: str = ""  # the dataset the accuracy is on
    model: str = ""  # the zoo architecture measured ("" when unknown)
    runtime: str = "torch"  # what ran the model for accuracy and latency: torch | onnxruntime
    # the timing protocol (engine/deploy/timing.py): spread, speed-up over the run's baseline timed in the
    # same rounds (median and 95 % interval), whether the rounds were clean, and which machine ran them
    latency_p10_ms_b1: float | None = None
    latency_p10_ms_b32: float | None = None
    speedup_b1: float | None = None
    speedup_lo_b1: float | None = None
    speedup_hi_b1: float | None = None
    speedup_b32: float | None = None
    speedup_lo_b32: float | None = None
    speedup_hi_b32: float | None = None
    latency_quality: str = ""  # "clean", "noisy: <why>", or "" when latency was not timed
    machine: str = ""  # engine.core.machine id of the machine that timed it ("" when not timed)
    # test-split counts, row = true class, column = predicted (top-1); None when not recorded (older points,
    # more than MAX_CONFUSION_CLASSES classes). Not a store column: it is stored in the point's `extra`.
    confusion: list[list[int]] | None = field(default=None, repr=False, metadata={"column": False})

    def to_dict(self) -> dict:
        return asdict(self)


# the Measurement fields stored as columns of their own (every one but `confusion`)
METRIC_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Measurement) if f.metadata.get("column", True))
MEASUREMENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Measurement))
MAX_CONFUSION_CLASSES = 100  # a larger confusion matrix is not recorded (100 x 100 ints at most per point)


# The families a point may name. Open, because core cannot import the methods layer: train and measure
# are here, and each method family adds its name when it declares itself
# (engine.methods.registry.register_family), which also installs a finder that discovers the families.
FAMILIES: list[str] = ["train", "measure"]
_FAMILY_FINDERS: list[Callable[[], object]] = []


def add_family(name: str) -> None:
    """Lets points name `name` as their family."""
    if name not in FAMILIES:
        FAMILIES.append(name)


def add_family_finder(find: Callable[[], object]) -> None:
    """`find()` registers families not yet known; check_family calls it before refusing a name."""
    if find not in _FAMILY_FINDERS:
        _FAMILY_FINDERS.append(find)


def check_family(name: str) -> None:
    if name not in FAMILIES:
        for find in _FAMILY_FINDERS:
            find()
    check_choice("family", name, FAMILIES)
STAGES = ("baseline", "variant", "step")
ROLES = ("", "teacher", "student")

# the fields a timing fills on a point, which a re-timing (engine/run/remeasure.py) replaces and the store's
# `timings` table keeps the history of
LATENCY_FIELDS = ("latency_ms_b1", "latency_p10_ms_b1", "latency_p90_ms_b1", "latency_ms_b32", "latency_p10_ms_b32",
                  "latency_p90_ms_b32", "speedup_b1", "speedup_lo_b1", "speedup_hi_b1", "speedup_b32",
                  "speedup_lo_b32", "speedup_hi_b32", "threads", "latency_quality", "machine")

# the contract's own keys, in the order a table shows them
CONTRACT_FIELDS = ("family", "method", "stage", "level", "level_name", "role", "input_checkpoint", "artifact",
                   "params", "accuracy_std", "accuracy_runs")


@dataclass
class Point:
    family: str
    method: str
    stage: str
    measurement: Measurement
    level: float | None = None  # the swept knob's value (None when nothing is swept)
    level_name: str = ""  # which knob: sparsity, bits, average_bits, channel_ratio, iteration, ...
    role: str = ""  # teacher | student | ""
    input_checkpoint: str = ""  # what the method started from
    artifact: str = ""  # the checkpoint directory of this variant; "" when not saved
    params: dict = field(default_factory=dict)  # the method's settings that produced it
    accuracy_std: float | None = None  # spread over repeats (sample std; 0 for one run)
    accuracy_runs: list[float] | None = None  # each repeat's accuracy
    extra: dict = field(default_factory=dict)  # anything else the method reports

    def __post_init__(self) -> None:
        check_family(self.family)
        check_choice("stage", self.stage, STAGES)
        check_choice("role", self.role, ROLES)
        if self.level is not None:
            self.level = float(self.level)
        clash = sorted(set(self.extra) & (set(CONTRACT_FIELDS) | set(MEASUREMENT_FIELDS) | {"extra"}))
        if clash:
            raise ValueError(f"extra must not repeat a point field: {', '.join(clash)}")

    @property
    def accuracy(self) -> float:
        return self.measurement.accuracy

    @property
    def simulated(self) -> bool:
        return self.measurement.simulated

    def to_dict(self) -> dict[str, Any]:
        """Flat: the contract fields, every Measurement field and the extra keys, side by side."""
        d = {name: getattr(self, name) for name in CONTRACT_FIELDS}
        return {**d, **self.measurement.to_dict(), **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Point:
        # a field Measurement gained later (dataset, model, runtime) takes its default in older rows
        m = Measurement(**{f.name: f.default if d.get(f.name) is None and f.default is not MISSING
                           else d.get(f.name) for f in fields(Measurement)})
        own = {k: d[k] for k in CONTRACT_FIELDS if k in d and d[k] is not None}
        extra = {k: v for k, v in d.items() if k not in CONTRACT_FIELDS and k not in MEASUREMENT_FIELDS}
        return cls(measurement=m, **own, extra=extra)

    def replace(self, **changes: Any) -> Point:
        return dataclasses.replace(self, **changes)


def json_safe(value: Any) -> Any:
    """A value for strict JSON: NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
