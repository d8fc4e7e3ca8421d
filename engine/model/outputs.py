"""Every variant is a checkpoint directory that reloads: where runs write, and how any format loads.

Writing is safe by default: a run claims its output directory before it does any work. A directory
that exists is refused (unless `overwrite` is set and this tool created it: it holds MARKER), and
so is one that is, or lies inside, an input checkpoint. Sweeps write one sub-directory per level.

Reading: `load_variant(dir)` gives the float structure (for storage and MACs), the `ModelForm` it is
deployed as (the int8 runner, or the packed low-bit widths) and the meta, whatever the weights
format. Formats other than float are provided by the method family that writes them (quantization),
imported on first use, so this module does not depend on it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.core.config import Config, param
from engine.core.errors import ConfigError
from engine.model.checkpoint import WEIGHTS

CHECKPOINT_ROOT = "checkpoints"
MARKER = ".compression-lab-output"  # a directory a run created (so --overwrite may replace it)



@dataclass
class SaveOptions(Config):
    """Where a run writes its checkpoints; every task that makes models has these fields."""

    out: str | None = param(None, "directory for this run's checkpoints (default checkpoints/<model>-<dataset>-"
                                  "<method>-<time>)", role="output")
    save: bool = param(True, "save every variant as a checkpoint directory (--no-save: measure only)", role="runner")
    overwrite: bool = param(False, "replace --out if an earlier run of this tool created it", role="output")


# ---------------------------------------------------------------- output directories


def default_out_dir(model: str, dataset: str, tag: str = "", root: str | Path = CHECKPOINT_ROOT) -> str:
    """<root>/<model>-<dataset>[-tag]-<time> (root: checkpoints/ of the working directory; the app passes its
    store directory's), made unique with a counter if taken."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.split(":", 1)[0])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{safe_name(model)}-{safe}{'-' + safe_name(tag) if tag else ''}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return str(path)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "_"


def level_dir(level_name: str, level: float) -> str:
    """The sub-directory of one sweep level, e.g. 'sparsity-0.500' or 'bits-4'."""
    text = f"{level:g}" if float(level).is_integer() else f"{level:.3f}"
    return safe_name(f"{level_name}-{text}")


def check_output(out: str, inputs: list[str | None], overwrite: bool = False) -> Path:
    """Refuses an output that would destroy an input or a directory this tool did not make."""
    target = Path(out).expanduser().resolve()
    for given in filter(None, inputs):
        source = Path(given).expanduser().resolve()
        if target == source or source in target.parents:
            raise ConfigError(f"out {out} is {'the' if target == source else 'inside the'} input checkpoint {given}: "
                              f"writing there would overwrite it; choose another directory")
        if target in source.parents:
            raise ConfigError(f"out {out} contains the input checkpoint {given}; choose a directory outside it")
    if target.exists():
        if not overwrite:
            raise ConfigError(f"out {out} already exists; choose a new directory, or pass --overwrite to replace "
                              f"one that an earlier run of this tool created")
        if not target.is_dir() or not (target / MARKER).is_file():
            raise ConfigError(f"out {out} exists and was not created by Compression Lab (no {MARKER} in it); "
                              f"it is never overwritten: choose a new directory")
    return target


@contextlib.contextmanager
def claim_output(out: str, inputs: list[str | None], overwrite: bool = False, *,
                 describe: dict | None = None) -> Iterator[Path]:
    """Checks and creates a run's output directory; if the run fails before writing into it, removes it."""
    target = check_output(out, inputs, overwrite)
    if target.exists():
        shutil.rmtree(target)
    try:
        target.mkdir(parents=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"out {out} cannot be created: a file stands where a folder of its path should be") from None
    (target / MARKER).write_text(json.dumps({"created": time.time(), **(describe or {})}, default=str))
    try:
        yield target
    except BaseException:
        if [p.name for p in target.iterdir()] == [MARKER]:
            shutil.rmtree(target, ignore_errors=True)
        raise


def made_by_us(path: str | Path) -> bool:
    """Whether a run of this tool created `path`: it, or the output folder it lies in, holds MARKER."""
    p = Path(path).resolve()
    return any((d / MARKER).is_file() for d in (p, *p.parents))


def remove_artifacts(paths: list[str], keep: Mapping[str, str] | Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """Removes the artifact folders and files of deleted runs: only what this tool created (MARKER), never
    a path in `keep` (still used by a remaining run: its points, or a queued or running run's config; a
    mapping says why, as Store.paths_in_use does) or a folder holding one. Returns (removed, left with why)."""
    why = dict(keep) if isinstance(keep, Mapping) else dict.fromkeys(keep, "another run uses it")
    kept_resolved = {Path(k).resolve(): reason for k, reason in why.items() if k}
    removed, left = [], []
    for path in paths:
        p = Path(path)
        if not p.exists():
            continue
        r = p.resolve()
        reason = kept_resolved.get(r) or next((w for k, w in kept_resolved.items() if r in k.parents), None)
        if reason:
            left.append(f"{path} ({reason})")
        elif not made_by_us(p):
            left.append(f"{path} (not created by Compression Lab)")
        else:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(path)
            parent = p.parent
            if (parent / MARKER).is_file() and [c.name for c in parent.iterdir()] == [MARKER]:
                shutil.rmtree(parent)  # a sweep's output folder with nothing left in it
    return removed, left


def is_checkpoint(directory: str | Path) -> bool:
    d = Path(directory)
    return (d / WEIGHTS).is_file() and (d / "meta.json").is_file()


