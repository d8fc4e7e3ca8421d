"""What the Launch page offers, as plain functions: the tasks a user can start, the checkpoints of
finished runs a method can start from, and the datasets with their availability.

The page draws these; the forms come from engine/core/forms.py; submitting goes to the job runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.core.errors import UserError
from engine.methods.registry import discover_families
from engine.methods.tasks import get_task, load_families
from engine.model.checkpoint import describe_lineage, saved_checkpoints
from engine.model.data import DATASETS, DEFAULT_ROOT, availability

# what the Launch page's "Method" tab offers besides the method families: single tasks, before and after them
FIRST_TASKS = {"train": "Train a model", "measure": "Measure a checkpoint"}
LAST_TASKS = {"finetune": "Fine-tune"}


@dataclass(frozen=True)
class MethodChoice:
    family: str
    method: str
    task: str  # the registered task the job runner runs
    description: str
    needs_checkpoint: bool  # starts from a float checkpoint (the family's from_checkpoint; train and distill do not)


def names_per_method(name: str | None, methods: list[str]) -> list[str | None]:
    """The run name of each distillation method's run: the user's name, with the method after it when several
    methods share it (so their runs tell apart in lists); None keeps each run's default name."""
    if name is None or len(methods) < 2:
        return [name] * len(methods)
    return [f"{name} ({method})" for method in methods]


def family_titles() -> dict[str, str]:
    """What the Launch page's "Method" tab offers, name -> title: train and measure, every method family
    (from the family registry, plugins included), then fine-tuning."""
    families = {name: f.title for name, f in discover_families().items()}
    return {**FIRST_TASKS, **families, **LAST_TASKS}


def family_names() -> list[str]:
    return list(family_titles())


def methods_of(family: str) -> list[MethodChoice]:
    """The methods of a family, each with the task that runs it."""
    load_families()
    if family in (*FIRST_TASKS, *LAST_TASKS):
        task = get_task(family)
        return [MethodChoice(family, family, family, task.description, task.input == "checkpoint")]
    families = discover_families()
    if family not in families:
        raise UserError(f"unknown family '{family}'; choose from: {', '.join(family_names())}")
    f = families.get(family)
    return [MethodChoice(family, name, m.task, m.description, f.from_checkpoint) for name, m in f.methods.items()]


def dataset_rows(root: str = DEFAULT_ROOT) -> pd.DataFrame:
    """Every registered dataset with whether it is on this machine (nothing is downloaded here)."""
    return pd.DataFrame([{"dataset": n, "availability": availability(n, root), "description": s.description}
                         for n, s in DATASETS.items()])


def checkpoint_rows(points: pd.DataFrame, float_only: bool = True) -> pd.DataFrame:
    """The checkpoints finished runs saved (a point's `artifact`), newest first, one row each: path, model,
    dataset, format, lineage and the accuracy its point measured. Gone or unreadable folders are left out.

    `points` is the store's points table joined with runs (Store.points(expand=False)); `float_only` keeps
    the checkpoints compression methods can start from (int8 and packed ones are deployable ends)."""
    columns = ["artifact", "label", "model", "dataset", "format", "lineage", "accuracy", "run_id"]
    if points.empty or "artifact" not in points:
        return pd.DataFrame(columns=columns)
    rows = []
    ordered = points[points["artifact"].fillna("") != ""].sort_values("created_at", ascending=False)
    saved = ((str(r.artifact), r) for r in ordered.itertuples(index=False))
    for path, r, meta in saved_checkpoints(saved, float_only):
        accuracy = float(r.accuracy) if r.accuracy == r.accuracy else None
        lineage = describe_lineage(meta)
        label = (f"{meta.arch} on {meta.dataset} · {lineage} · "
                 f"{'' if accuracy is None else f'{100 * accuracy:.1f}% · '}{Path(path).name}")
        rows.append({"artifact": path, "label": label, "model": meta.arch, "dataset": meta.dataset,
                     "format": meta.weights_format, "lineage": lineage, "accuracy": accuracy, "run_id": r.run_id})
    return pd.DataFrame(rows, columns=columns)
