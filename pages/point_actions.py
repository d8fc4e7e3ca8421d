"""What a user can do with one measured point that has a checkpoint (not a page: pages import it).

`recommendation_view(rec, key)` draws a recommendation's winner (its numbers, Open its run and the point
actions), its notes, and the comparison of every variant (which budget each breaks) with its exports; the
Recommend and Plan pages share it.

`point_actions(point, key)` draws three buttons: open the checkpoint in What-if, launch a method from it, and
download it as a zip (engine/analysis/exports.py). What-if and Launch read the choice from the session
(WHATIF_CHECKPOINT, LAUNCH_CHECKPOINT) once, when they are drawn next. A point without a checkpoint on disk
says why instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pandas as pd
import streamlit as st

from engine.analysis.exports import (
    FORMATS,
    arrow_ready,
    checkpoint_directory,
    export_table,
    file_name,
    zip_checkpoint,
)
from engine.analysis.recommend import Recommendation, comparison
from engine.core.errors import UserError
from engine.model.checkpoint import read_meta
from engine.run.remeasure import remeasure_config
from pages.shared import runner, show_error, store

LAUNCH_CHECKPOINT = "launch.preselect"  # the checkpoint Launch's Checkpoint box starts on, once
WHATIF_CHECKPOINT = "whatif.preselect"  # the checkpoint What-if's Checkpoint box starts on, once


def same_path(a: object, b: object) -> bool:
    """Whether two artifact paths name the same folder."""
    return os.path.realpath(str(a)) == os.path.realpath(str(b))


def _artifact(point: Mapping) -> str:
    value = point.get("artifact")
    return value.strip() if isinstance(value, str) else ""


def point_actions(point: Mapping, key: str, download: bool = True) -> None:
    """Open in What-if, Launch from this checkpoint and Download for a point whose checkpoint is on disk;
    otherwise a line saying why there is none. `key` keeps the widgets of several calls apart; `download=False`
    leaves the download out where the page has its own."""
    artifact = _artifact(point)
    try:
        directory = checkpoint_directory(artifact)
        meta = read_meta(directory)
    except UserError as e:
        st.caption(f"No checkpoint to open, launch from or download: {e}")
        return
    is_float = meta.weights_format == "float"
    why = None if is_float else (f"it holds {meta.weights_format} weights: What-if and the methods start from "
                                 f"float weights (download it, or choose the float model it was made from)")
    whatif, launch, zipped = st.columns(3)
    if whatif.button("Open in What-if", key=f"{key}.whatif", icon=":material/tune:", disabled=not is_float,
                     help=why or "slide sparsity and bit width on this checkpoint"):
        st.session_state[WHATIF_CHECKPOINT] = artifact
        st.switch_page("pages/whatif.py")
    if launch.button("Launch from this checkpoint", key=f"{key}.launch", icon=":material/rocket_launch:",
                     disabled=not is_float, help=why or "start any method (pruning, quantization, ...) from it"):
        st.session_state[LAUNCH_CHECKPOINT] = artifact
        st.switch_page("pages/launch.py")
    if download:
        zipped.download_button("Download", data=lambda a=artifact: zip_checkpoint(a), file_name=f"{directory.name}.zip",
                               mime="application/zip", key=f"{key}.download", on_click="ignore",
                               icon=":material/download:", help=f"`{directory}` as a zip (meta.json, model.safetensors)")
    if why:
        st.caption(f"Not openable in What-if or Launch: {why}.")


def points_actions(points: pd.DataFrame, key: str) -> None:
    """A choice among `points` that saved a checkpoint (one per artifact), then point_actions for it."""
    if points.empty or "artifact" not in points:
        return
    saved = points[points["artifact"].fillna("").astype(str) != ""].drop_duplicates("artifact")
    if saved.empty:
        st.caption("None of these points saved a checkpoint (a run with --no-save keeps none).")
        return
    rows = {i: r for i, r in saved.iterrows()}

    def label(i) -> str:
        r = rows[i]
        level = r.get("level")
        level = f" {r.get('level_name') or 'level'} {level:g}" if isinstance(level, int | float) and level == level else ""
        return f"{r.get('method', '?')}{level} · {r.get('stage', '')} · {r['artifact']}"

    chosen = st.selectbox("Checkpoint of a point", list(rows), format_func=label, key=f"{key}.choice")
    point_actions(rows[chosen], key)


def retime(point_ids: list[int], key: str, label: str = "Re-time now") -> None:
    """A button that times these stored points again now, each beside its baseline, as one background run
    (engine/run/remeasure.py); each point keeps its latency history and shows the newest clean timing."""
    ids = [int(i) for i in point_ids]
    if not st.button(label, key=f"{key}.retime", icon=":material/timer:", disabled=not ids,
                     help="time the chosen points again now, paired with their baselines, as one run; the run's "
                          "timings join each point's latency history, and a point shows its newest clean one"):
        return
    try:
        cfg, skipped = remeasure_config(runner().store, ids)
        for reason in skipped:
            st.caption(f"Left out: {reason}.")
        if cfg is None:
            st.warning("None of the chosen points can be timed again.", icon=":material/timer_off:")
            return
        run_id = runner().submit("remeasure", cfg, name=f"re-time {len(cfg.points)} point(s)")
    except UserError as e:
        show_error(e)
        return
    st.success(f"Re-timing {len(cfg.points)} point(s) as run `{run_id}`: follow it on Runs.", icon=":material/timer:")


def latency_history(point_id: int) -> None:
    """A point's timings, oldest first, the one it shows marked; nothing for a point never timed."""
    history = store().latency_history(int(point_id))
    if len(history) < 2:
        return
    with st.expander(f"Latency history of point #{point_id} ({len(history)} timings)"):
        cols = ["shown", "measured_at", "latency_ms_b1", "latency_ms_b32", "speedup_b1", "speedup_lo_b1",
                "speedup_hi_b1", "speedup_b32", "machine", "latency_quality", "run_id"]
        st.dataframe(history[cols], hide_index=True, key=f"history.{point_id}")
        st.caption("The point shows its newest clean timing (else its newest).")


def recommendation_view(rec: Recommendation, key: str) -> None:
    """The winner of `rec` with its numbers and actions, the notes, and the ranked comparison (each variant's
    change, x smaller, x faster, and the budget it breaks) with one download per export format."""
    if rec.best is not None:
        w = rec.best
        st.success(f"**Ship point {w['point_id']}**: {w['method']} {w['level']} ({w['run']}): {rec.reason}.",
                   icon=":material/recommend:")
        m1, m2, m3, m4 = st.columns(4)
        spread = f"± {w['spread_points']:.2f} over {w['repeats']} repeats" if w["repeats"] > 1 else "one run"
        m1.metric("accuracy change", f"{w['change_points']:+.2f} points", help=spread)
        m2.metric("smaller", f"{w['smaller']:.2f}x" if w["smaller"] == w["smaller"] else "-")
        interval = (f" [{w['faster_lo']:.2f}–{w['faster_hi']:.2f}]" if w["faster_lo"] == w["faster_lo"] else "")
        m3.metric("faster", f"{w['faster']:.2f}x" if w["faster"] == w["faster"] else "not timed",
                  help=f"timing: {w['timing']}{interval}")
        m4.metric("repeats", w["repeats"])
        if w["simulated"]:
            st.caption("Simulated quantization: its size counts the low-bit weights, but no low-bit kernel ran.")
        if w["run_id"] and st.button("Open its run (lineage, config, log)", key=f"{key}.open_run",
                                     icon=":material/account_tree:"):
            st.session_state["runs.selected"] = w["run_id"]
            st.switch_page("pages/runs.py")
        point_actions(w, f"{key}.best")  # Open in What-if, Launch from this checkpoint, Download
    else:
        st.warning(f"No recommendation: {rec.reason}.", icon=":material/block:")
    for note in rec.notes:
        st.caption(note)
    if rec.table.empty:
        return
    table = comparison(rec)
    winner = rec.best["point_id"] if rec.best is not None else None

    def highlight(row: pd.Series) -> list[str]:
        colour = "background-color: rgba(44, 160, 44, 0.25)" if winner is not None and row["point"] == winner else ""
        return [colour] * len(row)

    st.dataframe(arrow_ready(table).style.apply(highlight, axis=1), hide_index=True, key=f"{key}.table",
                 column_config={"change (points)": st.column_config.NumberColumn(format="%+.2f"),
                                "smaller (x)": st.column_config.NumberColumn(format="%.2f"),
                                "faster (x)": st.column_config.NumberColumn(format="%.2f"),
                                "accuracy": st.column_config.NumberColumn(format="percent")})
    st.caption("Confirmed: a checkpoint on disk that reloads. Estimates (a planner's proxies) are never recommended.")
    title = f"recommendation for point {rec.baseline['point_id']}"
    for col, fmt in zip(st.columns(len(FORMATS)), FORMATS.values(), strict=True):
        col.download_button(fmt.label, data=lambda f=fmt.name: export_table(table, f, title)[0],
                            file_name=file_name(title, fmt.extension), mime=fmt.mime, key=f"{key}.dl.{fmt.name}",
                            on_click="ignore", icon=":material/download:")
