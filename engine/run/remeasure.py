"""Re-measure: which checkpoint and which baseline each chosen point has, read from the store, as the config
of one `remeasure` job (engine/methods/remeasure.py).

A point is re-timed on the checkpoint it was measured on: its artifact, or, for a baseline that a run did not
save again (quantization's float reference), the checkpoint it started from. Its baseline is its run's first
baseline point (the one the run timed every later point beside, engine.methods.tasks.measure_point), else the
checkpoint the point started from. Points that have nothing to time (a run that did not save its variants, a
checkpoint since deleted from disk) are left out, each with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from engine.core.errors import UserError
from engine.methods.remeasure import RemeasureTask
from store import Store


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _checkpoint(row) -> str:
    artifact = _text(row["artifact"])
    if artifact:
        return artifact
    return _text(row["input_checkpoint"]) if row["stage"] == "baseline" else ""


def remeasure_config(store: Store, point_ids: Iterable[int]) -> tuple[RemeasureTask | None, list[str]]:
    """The config that re-times these points (None when none can be), and why each left out was left out."""
    ids = list(dict.fromkeys(int(i) for i in point_ids))
    if not ids:
        raise UserError("choose at least one point to time again")
    df = store.points(expand=False)
    by_id = {int(r["point_id"]): r for _, r in df.iterrows()}
    chosen: dict[str, list] = {"points": [], "checkpoints": [], "baselines": [], "families": [], "runtimes": []}
    skipped = []
    for pid in ids:
        row = by_id.get(pid)
        if row is None:
            skipped.append(f"point {pid} is not in the store")
            continue
        path = _checkpoint(row)
        if not path:
            skipped.append(f"point {pid} ({row['method']}) has no saved checkpoint: its run did not save it")
            continue
        if not Path(path).is_dir():
            skipped.append(f"point {pid} ({row['method']}): its checkpoint {path} is no longer on disk")
            continue
        same_run = df[(df["run_id"] == row["run_id"]) & (df["stage"] == "baseline")
                      & (df["runtime"].fillna("torch") == (_text(row["runtime"]) or "torch"))]
        baselines = [b for b in (_checkpoint(r) for _, r in same_run.iterrows()) if b and Path(b).is_dir()]
        baseline = baselines[0] if baselines else _text(row["input_checkpoint"])
        chosen["points"].append(pid)
        chosen["checkpoints"].append(path)
        chosen["baselines"].append(baseline if baseline and Path(baseline).is_dir() else "")
        chosen["families"].append(_text(row["family"]))
        chosen["runtimes"].append(_text(row["runtime"]) or "torch")
    if not chosen["points"]:
        return None, skipped
    return RemeasureTask(**{k: tuple(v) for k, v in chosen.items()}), skipped
