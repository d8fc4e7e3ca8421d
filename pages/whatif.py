"""What-if: slide sparsity and bit width on a checkpoint and see accuracy, size, compression and latency at once.

The work is engine/methods/whatif.py's: a `WhatIf` object per checkpoint and evaluation subset, kept in
`st.cache_resource` (the model, the sorted magnitudes, the subset's tensors and a memo of positions).
The sliders live in a fragment, so a move reruns only that part of the page.
"""

from __future__ import annotations

import time

import streamlit as st

from engine.core.errors import UserError
from engine.deploy import qmaths as maths
from engine.methods import whatif as W
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


@st.cache_resource(show_spinner="Loading the checkpoint and its evaluation subset...", max_entries=2)
def what_if(path: str, created: float, eval_samples: int) -> W.WhatIf:
    """One engine per checkpoint (and version of it) and subset size, shared by every session."""
    return W.WhatIf(path, eval_samples=eval_samples, seed=0)


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
    engine = what_if(path, read_meta(path).created, eval_samples)
    points = store.points(expand=False)
except Exception as e:  # noqa: BLE001 - shown as a message
    show_error(e)
    st.stop()
curves = W.checkpoint_points(points, path)


def _change(delta: float, unit: str) -> str | None:
    """A metric's change to one decimal, or none where it rounds to zero (Streamlit draws +0.0 as a rise)."""
    return None if round(delta, 1) == 0 else f"{delta:+,.1f} {unit}"


@st.fragment
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
    started = time.perf_counter()
    try:
        r = engine.evaluate(sparsity / 100, mode, bits, granularity)
    except UserError as e:
        show_error(e)
        return
    answered_ms = (time.perf_counter() - started) * 1000
    base = engine.baseline

    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Accuracy (subset)", f"{r.accuracy:.2%}", _change((r.accuracy - base.accuracy) * 100, "pp"),
              help=f"Top-1 accuracy {engine.subset_caption()}; the change is against the checkpoint on the "
                   f"same images ({base.accuracy:.2%}).")
    m2.metric("Size", f"{r.size_bytes / 1024:,.1f} KiB", _change((r.size_bytes - base.size_bytes) / 1024, "KiB"),
              delta_color="inverse",
              help="Storage of a deployed copy (engine.deploy.measure.storage): each weight tensor dense or sparse, "
                   "whichever is smaller, at its bit width, plus one scale and zero point per group.")
    m3.metric("Compression", f"{r.compression:.1f}x", help="The checkpoint's size divided by this size.")
    latency_label = "Latency b1 (estimated)" if r.latency_estimated else "Latency b1 (measured)"
    m4.metric(latency_label, "not timed" if r.latency_ms_b1 is None else f"{r.latency_ms_b1:.2f} ms",
              help=r.latency_note)
    notes = [f"Accuracy {engine.subset_caption()}.", f"Latency {r.latency_note}."]
    if r.simulated:
        notes.append("Simulated quantization: the weights are rounded to "
                     f"{r.bits}-bit values but computed in float; no low-bit kernel ran.")
    how = "remembered" if engine.last_hit else "computed"
    notes.append(f"Answered in {answered_ms:.0f} ms ({how}).")
    st.caption(" ".join(notes))

    st.plotly_chart(whatif_figure(curves, r.to_dict(), point_name=f"what-if ({r.eval_samples:,} test images)",
                                  baseline=base.to_dict()), key="whatif_chart")
    st.caption("Lines: the measured points of this checkpoint's runs (whole test split). Star: this position, "
               "on the evaluation subset; diamond: the checkpoint on the same subset."
               if not curves.empty else
               "No run has started from this checkpoint yet: only the what-if point and the checkpoint are drawn.")
    with st.expander("Details"):
        st.write(f"**{r.description}**")
        st.write(f"- parameters: {r.params_total:,} ({r.params_nonzero:,} nonzero); measured weight sparsity "
                 f"{r.weight_sparsity:.1%}")
        if r.threshold is not None:
            st.write(f"- global magnitude threshold |w| <= {r.threshold:.3g}")
        if r.channels_kept is not None:
            st.write(f"- conv channels kept: {r.channels_kept:.1%}")
        st.write(f"- positions remembered: {engine.hits} answered from memory, {engine.misses} computed")

    save_model = st.checkbox("Also save the model as a checkpoint", value=True, key="whatif_save_model",
                             help="Packed at its bit width when below 32 bits, float otherwise.")
    if st.button("Save as a run", icon=":material/save:", key="whatif_save"):
        config = {"checkpoint": path, "sparsity": r.sparsity, "mode": r.mode, "bits": r.bits,
                  "granularity": r.granularity, "save": save_model}
        try:
            run_id = runner.submit("whatif", app_config("whatif", config), name=f"what-if {models[path]}: {r.description}")
        except Exception as e:  # noqa: BLE001 - shown as a message
            show_error(e)
        else:
            st.session_state["whatif_queued"] = run_id
    queued = st.session_state.get("whatif_queued")
    if queued:
        st.success(f"Queued run {queued}: it measures this variant on the whole test split.",
                   icon=":material/check_circle:")
        st.page_link("pages/runs.py", label="Follow it on Runs", icon=":material/list_alt:")


explore()
