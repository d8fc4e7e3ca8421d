"""What the Launch page offers, as plain functions: the tasks a user can start, the checkpoints of
finished runs a method can start from, and the datasets with their availability.

The page draws these; the forms come from engine/core/forms.py; submitting goes to the job runner.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.core.config import Config
from engine.core.errors import UserError
from engine.methods.registry import discover_families
from engine.methods.tasks import get_task, load_families
from engine.model.checkpoint import CheckpointMeta, describe_lineage, read_meta, saved_checkpoints
from engine.model.data import DATASETS, DEFAULT_ROOT, availability
from engine.model.outputs import default_out_dir
from engine.run.recipes import DEFAULT_OUT, RecipeTask
from engine.run.studies import StudyTask
from store.paths import checkpoints_dir, confine_output, store_dir

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


MODEL_STEPS = {"train": "trained", "upload": "uploaded"}  # a lineage's last method that makes a model, by method
CHECKPOINT_COLUMNS = ["artifact", "label", "kind", "parent", "model", "dataset", "format", "lineage", "accuracy",
                      "run_id"]


def made_how(meta: CheckpointMeta) -> str | None:
    """'trained', 'uploaded' or 'distilled (kd)' for a model a method can start from; None for a variant of one
    (a sweep level, a quantized or fine-tuned copy: what its last lineage step made from another checkpoint)."""
    if not meta.lineage:
        return "saved"
    last = meta.lineage[-1]
    if "level" in last:
        return None
    if last.get("family") == "distill":
        return f"distilled ({last.get('method', '?')})"
    return MODEL_STEPS.get(str(last.get("method")))


def step_words(meta: CheckpointMeta) -> str:
    """What the last lineage step did: 'global_unstructured sparsity 0.3'."""
    if not meta.lineage:
        return "(no recorded lineage)"
    step = meta.lineage[-1]
    level = step.get("level")
    words = str(step.get("method", "?"))
    if isinstance(level, int | float) and not isinstance(level, bool):
        words += f" {step.get('level_name', 'level')} {level:g}"
    return words


def _percent(accuracy: float | None) -> str:
    return "accuracy not measured" if accuracy is None else f"{100 * accuracy:.1f}%"


def checkpoint_rows(points: pd.DataFrame, float_only: bool = True) -> pd.DataFrame:
    """The checkpoints finished runs saved (a point's `artifact`), one row each, grouped by the model they come
    from: each trained, uploaded or distilled model (newest first) followed by its variants (sweep levels,
    quantized or fine-tuned copies, oldest first), so the first row, the default, is the newest *model* and
    never a sweep's variant. Columns: path, label (with the accuracy its point measured), kind ("model" or
    "variant"), parent (the model a variant comes from, or ""), model, dataset, format, lineage, run id.
    Variants whose model is not listed (deleted, or int8) come last, labelled with their whole lineage.
    Gone or unreadable folders are left out.

    `points` is the store's points table joined with runs (Store.points(expand=False)); `float_only` keeps
    the checkpoints compression methods can start from (int8 and packed ones are deployable ends)."""
    if points.empty or "artifact" not in points:
        return pd.DataFrame(columns=CHECKPOINT_COLUMNS)
    ordered = points[points["artifact"].fillna("") != ""].sort_values("created_at", ascending=False)
    saved = ((str(r.artifact), r) for r in ordered.itertuples(index=False))
    found = {}
    for path, r, meta in saved_checkpoints(saved, float_only):
        accuracy = float(r.accuracy) if r.accuracy == r.accuracy and r.accuracy is not None else None
        found[os.path.realpath(path)] = (path, r, meta, accuracy)

    def root_of(real: str) -> str | None:
        """The listed model a checkpoint was made from, following input checkpoints up its lineage."""
        seen = set()
        while real in found and real not in seen:
            seen.add(real)
            meta = found[real][2]
            if made_how(meta) is not None:
                return real
            parent = meta.lineage[-1].get("input_checkpoint") if meta.lineage else None
            if not parent:
                return None
            real = os.path.realpath(str(parent))
        return None

    models = sorted((k for k, v in found.items() if made_how(v[2]) is not None), key=lambda k: -found[k][2].created)
    variants: dict[str, list[str]] = {k: [] for k in models}
    orphans = []
    for k, v in found.items():
        if made_how(v[2]) is not None:
            continue
        root = root_of(k)
        variants.get(root, orphans).append(k)

    def row(k: str, kind: str, parent: str = "") -> dict:
        path, r, meta, accuracy = found[k]
        lineage = describe_lineage(meta)
        if kind == "model":
            label = f"{meta.arch} on {meta.dataset} · {made_how(meta)} · {_percent(accuracy)} · {Path(path).name}"
        elif parent:
            label = (f"  └ {step_words(meta)} of {Path(found[parent][0]).name} · {_percent(accuracy)} · "
                     f"{Path(path).name}")
        else:
            label = f"{meta.arch} on {meta.dataset} · {lineage} · {_percent(accuracy)} · {Path(path).name}"
        return {"artifact": path, "label": label, "kind": kind, "parent": found[parent][0] if parent else "",
                "model": meta.arch, "dataset": meta.dataset, "format": meta.weights_format, "lineage": lineage,
                "accuracy": accuracy, "run_id": r.run_id}

    rows = []
    for m in models:
        rows.append(row(m, "model"))
        rows.extend(row(v, "variant", m) for v in sorted(variants[m], key=lambda k: found[k][2].created))
    rows.extend(row(k, "variant") for k in sorted(orphans, key=lambda k: -found[k][2].created))
    return pd.DataFrame(rows, columns=CHECKPOINT_COLUMNS)


def checkpoint_family() -> str:
    """The family Launch opens on when a checkpoint was chosen elsewhere ("Launch from this checkpoint"): the
    first method family that starts from a checkpoint (not train, which makes one)."""
    for name in family_names():
        if name not in FIRST_TASKS and name not in LAST_TASKS and any(c.needs_checkpoint for c in methods_of(name)):
            return name
    return "measure"


def repeats_note(cfg: Config) -> str | None:
    """A warning for repeats of a deterministic config (Config.deterministic): every repeat gives the same numbers,
    so repeats above 1 only multiply the compute and report a std of 0."""
    repeats = getattr(cfg, "repeats", 1)
    if isinstance(repeats, int) and repeats > 1 and cfg.deterministic:
        return (f"{repeats} repeats of a deterministic run (without fine-tuning every repeat builds and measures "
                f"the same model): they cost {repeats}x the compute for a std of 0. Set repeats to 1, or fine-tune "
                f"(each repeat then uses its own seed).")
    return None


# ---------------------------------------------------------------- where runs started from the app write


def app_config(task_name: str, config: Config | dict, base: Path | None = None) -> Config | dict:
    """A config that came from the browser, with every folder it writes inside the store directory
    ($COMPRESSION_LAB_STORE_DIR, default the working directory): an `out` given is refused outside it
    (StoreError naming both), a missing one becomes <store dir>/checkpoints/<model>-<dataset>-<method>-<time>;
    a recipe's or a study's `out` (and a recipe's data_root, where downloads go) likewise. The CLI does not
    call this: it writes where its user says."""
    base = Path(base).resolve() if base else store_dir()
    if isinstance(config, RecipeTask):
        recipe = dict(config.recipe)
        recipe["out"] = confine_output(recipe.get("out") or DEFAULT_OUT, "the recipe's out", base)
        if recipe.get("data_root") not in (None, "", DEFAULT_ROOT):
            recipe["data_root"] = confine_output(recipe["data_root"], "the recipe's data_root", base)
        return dataclasses.replace(config, recipe=recipe)
    if isinstance(config, StudyTask):
        overrides = dict(config.overrides)
        overrides["out"] = confine_output(overrides.get("out") or DEFAULT_OUT, "the study's out", base)
        return dataclasses.replace(config, overrides=overrides)
    cls = get_task(task_name).config
    if "out" not in {f.name for f in dataclasses.fields(cls)}:
        return config
    d = config.to_dict() if isinstance(config, Config) else dict(config)
    if d.get("out"):
        d["out"] = confine_output(d["out"], "out", base)
    elif d.get("save", True):
        model, dataset = d.get("model") or d.get("student"), d.get("dataset")
        source = d.get("checkpoint") or d.get("teacher")
        if source and not (model and dataset):
            try:
                meta = read_meta(source)
                model, dataset = model or meta.arch, dataset or meta.dataset
            except UserError:
                pass  # the task names the missing checkpoint itself
        d["out"] = default_out_dir(str(model or "model"), str(dataset or "data"), task_name.rsplit(".", 1)[-1],
                                   root=checkpoints_dir(base))
    return cls.from_dict(d) if isinstance(config, Config) else d
