"""What-if: slide sparsity and bit width on a checkpoint and see accuracy, size, compression and latency at once.

The work is engine/methods/whatif.py's and whatif_live.py's: a `LiveWhatIf` per checkpoint and evaluation
subset, kept in `st.cache_resource` (the model, the sorted magnitudes, the subset's tensors, a memo of positions
and one background thread). A move answers at once with a labelled estimate and its error bar; the thread
measures the position on a growing part of the subset, which replaces the estimate once done. The sliders live
in a fragment, so a move reruns only that part of the page; it polls while a measurement is under way.
"""

from __future__ import annotations

import streamlit as st

from engine.core.errors import UserError
from engine.deploy import qmaths as maths
from engine.methods import whatif as W
from engine.methods import whatif_live as L
from engine.model.checkpoint import read_meta
from engine.run.launch import app_config, checkpoint_rows
from pages.figures.whatif import whatif_figure
from pages.point_actions import WHATIF_CHECKPOINT, same_path
from pages.shared import open_runner_or_stop, show_error

SUBSETS = tuple(sorted({W.DEFAULT_EVAL_SAMPLES, 1000, 10_000}))

st.title("What-if")
st.caption("Prune and quantize a trained checkpoint in memory and see what it would cost, move by move. "
           "Nothing is saved until you press Save as a run, which measures the variant on the whole test split.")
runner = open_runner_or_stop()
store = runner.store


POLL_S = 0.5  # how often the page looks at a measurement under way
GRACE_S = 0.15  # a move waits this long for its measurement, so small models answer measured at once


def _close(live: L.LiveWhatIf) -> None:
    live.close()


@st.cache_resource(show_spinner="Loading the checkpoint and its evaluation subset...", max_entries=2,
                   on_release=_close)
def what_if(path: str, created: float, eval_samples: int) -> L.LiveWhatIf:
    """One engine and background thread per checkpoint (and version of it) and subset size, shared by every
    session; the thread measures the checkpoint and profiles it from the moment the page opens."""
    return L.LiveWhatIf(W.WhatIf(path, eval_samples=eval_samples, seed=0, warm=False))


try:
    choices = checkpoint_rows(store.points(expand=False))  # the same list and labels as Launch's
except Exception as e:  # noqa: BLE001 - shown as a message
    show_error(e)
    st.stop()
if choices.empty:
    st.info("No float checkpoint yet. Train a model on the Launch page (family train, or any method that saves one); "
            "every finished run's saved float checkpoint is listed here.", icon=":material/info:")
    st.stop()

labels = dict(zip(choices["artifact"], choices["label"], strict=True))
models = dict(zip(choices["artifact"], choices["model"], strict=True))
wanted = st.session_state.pop(WHATIF_CHECKPOINT, None)  # "Open in What-if" on a point
if wanted:
    match = next((a for a in labels if same_path(a, wanted)), None)
    if match is None:
        st.warning(f"`{wanted}` is not a saved float checkpoint (gone, or int8/packed weights): choose another.",
                   icon=":material/warning:")
    else:
        st.session_state["whatif_checkpoint"] = match
left, right = st.columns([3, 1])
path = left.selectbox("Checkpoint", list(labels), format_func=labels.get, key="whatif_checkpoint",
                      help="Float checkpoints saved by runs, each trained or uploaded model followed by its variants, "
                           "with the accuracy its run measured.")
eval_samples = right.selectbox(
    "Evaluation subset", SUBSETS, key="whatif_eval_samples",
    format_func=lambda n: f"{n:,} test images" + (" (fast)" if n == W.DEFAULT_EVAL_SAMPLES else " or all"),
    help="Each move evaluates a fixed, seeded subset of the test split in one forward pass. A bigger subset is "
         "more precise and slower; a saved run is always measured on the whole test split.")

try:
    live = what_if(path, read_meta(path).created, eval_samples)
    points = store.points(expand=False)
except Exception as e:  # noqa: BLE001 - shown as a message
    show_error(e)
    st.stop()
engine = live.engine
live.paused = lambda: bool(runner.active())  # no forward in the background while the job runner has work
curves = W.checkpoint_points(points, path)
live.add_stored(curves)


def _change(delta: float, unit: str) -> str | None:
    """A metric's change to one decimal, or none where it rounds to zero (Streamlit draws +0.0 as a rise)."""
    return None if round(delta, 1) == 0 else f"{delta:+,.1f} {unit}"


def explore() -> None:
    a, b = st.columns(2)
    sparsity = a.slider("Sparsity (%)", 0, int(W.MAX_SPARSITY * 100), 0, 1, key="whatif_sparsity",
                        help="Unstructured: the share of all Conv/Linear weights zeroed under one global magnitude "
                             "threshold. Channels: the share of every layer's channels removed.")
    mode = a.radio("Pruning", W.MODES, format_func=W.MODE_WORDS.get, key="whatif_mode", horizontal=True)
    bits = b.slider("Weight bits", maths.MIN_BITS, maths.MAX_BITS, maths.FLOAT_BITS, 1, key="whatif_bits",
                    help="32 = float. Below 32 the weights are fake-quantized (symmetric min-max): simulated, "
                         "computed in float.")
    granularity = b.radio("Scales", maths.GRANULARITIES, key="whatif_granularity", horizontal=True,
                          format_func=lambda g: g.replace("_", "-"), disabled=bits >= maths.FLOAT_BITS)
    try:
        answer = live.move(sparsity / 100, mode, bits, granularity)
    except UserError as e:
        show_error(e)
        return
    progress = live.wait(answer.key, GRACE_S)
    if progress is not None and progress.done:
        answer = live.answer(answer.key)
    r, est = answer.result, answer.estimate
    base = engine.baseline
    base_accuracy = base.accuracy if base is not None else None

    m1, m2, m3, m4 = st.columns(4)
    if r is not None:
        m1.metric("Accuracy (subset) · measured", f"{r.accuracy:.2%}",
                  _change((r.accuracy - base_accuracy) * 100, "pp") if base_accuracy is not None else None,
                  help=f"Top-1 accuracy {engine.subset_caption()}, measured; the change is against the "
                       f"checkpoint on the same images.")
    else:
        m1.metric(f"Accuracy (subset) · {est.label}", f"{est.accuracy:.1%} ± {est.half_width * 100:.1f}",
                  _change((est.accuracy - base_accuracy) * 100, "pp") if base_accuracy is not None else None,
                  help=f"{'Estimated' if not est.measured else 'Known'}: {est.basis}. The error bar is "
                       f"[{est.low:.1%}, {est.high:.1%}]; the measurement below replaces it.")
    size = r.size_bytes if r is not None else answer.size_bytes
    ref = engine.reference["size_bytes"]
    m2.metric("Size" + ("" if r is not None or answer.size_note == "measured" else " · estimate"),
              f"{size / 1024:,.1f} KiB", _change((size - ref) / 1024, "KiB"), delta_color="inverse",
              help="Storage of a deployed copy (engine.deploy.measure.storage): each weight tensor dense or sparse, "
                   "whichever is smaller, at its bit width, plus one scale and zero point per group. "
                   f"Here: {answer.size_note}.")
    m3.metric("Compression", f"{ref / size:.1f}x", help="The checkpoint's size divided by this size.")
    if r is not None:
        latency_label = "Latency b1 (estimated)" if r.latency_estimated else "Latency b1 (measured)"
        m4.metric(latency_label, "not timed" if r.latency_ms_b1 is None else f"{r.latency_ms_b1:.2f} ms",
                  help=r.latency_note)
    else:
        m4.metric("Latency b1 (estimated)", "measuring" if mode == "channels" else
                  ("not timed" if engine.dense_latency_ms is None else f"{engine.dense_latency_ms:.2f} ms"),
                  help=W.CUT_NOTE + " (once the cut is made)" if mode == "channels" else W.ESTIMATED_NOTE)
    busy = _progress_line(answer, progress)
    notes = [f"Accuracy {engine.subset_caption()}."]
    if r is not None:
        notes.append(f"Latency {r.latency_note}.")
    if bits < maths.FLOAT_BITS:
        notes.append("Simulated quantization: the weights are rounded to "
                     f"{bits}-bit values but computed in float; no low-bit kernel ran.")
    notes.append(f"Answered in {answer.answered_ms:.0f} ms ({'measured' if r is not None else 'estimate'}).")
    st.caption(" ".join(notes))

    shown = r.to_dict() if r is not None else {"size_bytes": size, "accuracy": est.accuracy, "sparsity": sparsity / 100,
                                               "mode": mode, "bits": bits, "granularity": granularity}
    name = f"what-if ({engine.eval_samples:,} test images)" if r is not None else \
        f"what-if estimate (± {est.half_width * 100:.1f} pts)"
    st.plotly_chart(whatif_figure(curves, shown, point_name=name,
                                  baseline=base.to_dict() if base is not None else None), key="whatif_chart")
    st.caption("Lines: the measured points of this checkpoint's runs (whole test split). Star: this position, "
               "on the evaluation subset (an estimate until measured); diamond: the checkpoint on the same subset."
               if not curves.empty else
               "No run has started from this checkpoint yet: only the what-if point and the checkpoint are drawn.")
    with st.expander("Details"):
        st.write(f"**{W.describe(sparsity / 100, mode, bits, granularity)}**")
        if r is not None:
            st.write(f"- parameters: {r.params_total:,} ({r.params_nonzero:,} nonzero); measured weight sparsity "
                     f"{r.weight_sparsity:.1%}")
            if r.threshold is not None:
                st.write(f"- global magnitude threshold |w| <= {r.threshold:.3g}")
            if r.channels_kept is not None:
                st.write(f"- conv channels kept: {r.channels_kept:.1%}")
        else:
            st.write(f"- estimate: {est.basis}; error bar [{est.low:.1%}, {est.high:.1%}]")
        status = live.status()
        st.write(f"- background profile on {status['device']}: {status['profile_done']} of {status['profile_total']} "
                 f"grid positions, {status['adaptive_done']} added where neighbours differ most, per-layer "
                 f"sensitivities of {status['sensitivity_done']} of {status['sensitivity_total']} layers")
        st.write(f"- positions measured: {len(engine.remembered())}")
        for message in status["errors"][-3:]:
            st.write(f"- skipped: {message}")
        table = live.sensitivity()
        if not table.empty:
            st.caption(f"Per-layer sensitivity: accuracy lost with one layer alone quantized (first "
                       f"{live.sensitivity_samples} images of the subset), most sensitive first.")
            st.dataframe(table.sort_values(table.columns[-1], ascending=False).head(10), hide_index=True)
    _save(r, sparsity / 100, mode, bits, granularity)
    busy = busy or not status["idle"]
    if busy != st.session_state.get("whatif_polling", True):  # start or stop polling: the fragment is redeclared
        st.session_state["whatif_polling"] = busy
        st.rerun()


def _progress_line(answer, progress) -> bool:
    """The measurement under way, with its Wilson interval; True while it is not done."""
    if answer.result is not None:
        return False
    if progress is not None and progress.state == "failed":
        st.error(progress.message, icon=":material/error:")
        return False
    if progress is not None and progress.state == "paused":
        st.info("The measurement waits while a job runs (the estimate stands until then).",
                icon=":material/pause_circle:")
        return True
    if progress is None or progress.n == 0:
        st.info("Measuring this position in the background...", icon=":material/hourglass_top:")
        return True
    st.progress(progress.n / progress.total,
                text=f"Measured so far on {progress.n:,} of {progress.total:,} images: {progress.accuracy:.1%} "
                     f"(95% Wilson interval {progress.low:.1%} to {progress.high:.1%})")
    return progress.state != "cancelled"


def _save(r, sparsity: float, mode: str, bits: int, granularity: str) -> None:
    save_model = st.checkbox("Also save the model as a checkpoint", value=True, key="whatif_save_model",
                             help="Packed at its bit width when below 32 bits, float otherwise.")
    if st.button("Save as a run", icon=":material/save:", key="whatif_save"):
        config = {"checkpoint": path, "sparsity": sparsity, "mode": mode, "bits": bits,
                  "granularity": granularity, "save": save_model}
        try:
            run_id = runner.submit("whatif", app_config("whatif", config),
                                   name=f"what-if {models[path]}: {W.describe(sparsity, mode, bits, granularity)}")
        except Exception as e:  # noqa: BLE001 - shown as a message
            show_error(e)
        else:
            st.session_state["whatif_queued"] = run_id
    queued = st.session_state.get("whatif_queued")
    if queued:
        st.success(f"Queued run {queued}: it measures this variant on the whole test split.",
                   icon=":material/check_circle:")
        st.page_link("pages/runs.py", label="Follow it on Runs", icon=":material/list_alt:")


# poll while a measurement or the background profile is under way; still once everything is known
st.fragment(run_every=POLL_S if st.session_state.get("whatif_polling", True) else None)(explore)()
