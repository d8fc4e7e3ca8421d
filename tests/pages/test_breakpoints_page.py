"""The Breakpoints page against the pre-filled store: it renders the chosen sweeps with the detection curve
underneath, the detector, its setting and x change the answer, a teacher curve gives seed 002's Table 3,
and an empty store guides instead of drawing nothing."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from engine.analysis.study_tables import TABLE3_ROWS
from tests.pages.conftest import chart, open_page

PAGE = "pages/breakpoints.py"


def text(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown)


def test_the_sweeps_are_drawn_with_their_breakpoints_and_the_detection_curve_underneath(db):
    at = open_page(PAGE)
    picked = at.multiselect(key="breakpoints_curves")
    picked.set_value(picked.options[:2]).run()  # the fake-quant sweep and the prune sweep, newest first
    assert not at.exception
    spec = chart(at)
    layout = spec["layout"]
    assert "xaxis2" in layout and "yaxis2" in layout  # two rows sharing x
    assert layout["yaxis2"]["title"]["text"] == "normalised difference"
    assert layout["xaxis2"]["title"]["text"] == "remaining parameters"
    names = [t.get("name") for t in spec["data"]]
    assert any(n.startswith("prune cnn_s") and n.endswith(": breakpoint") for n in names)
    assert any(t.get("yaxis") == "y2" for t in spec["data"])
    assert "breakpoint at sparsity 0.6" in text(at)
    per_curve = at.dataframe[-1].value
    assert len(per_curve) == 2 and per_curve["found"].any()


def test_detector_setting_and_x_change_the_answer(db):
    at = open_page(PAGE)
    at.selectbox(key="breakpoints_detector").set_value("tolerance").run()
    assert not at.exception
    assert chart(at)["layout"]["yaxis2"]["title"]["text"] == "gap to the tolerance"
    strict = text(at)
    at.number_input(key="breakpoints_tolerance_delta").set_value(0.5).run()
    assert not at.exception
    assert text(at) != strict  # a looser tolerance moves (or removes) the breakpoints
    at.selectbox(key="breakpoints_x").set_value("bits").run()
    assert not at.exception
    assert "does not change steadily" in text(at)  # pruning keeps 32 bits: no curve against bits
    at.toggle(key="breakpoints_log").set_value(True).run()
    assert chart(at)["layout"]["xaxis"]["type"] == "log"


def test_a_teacher_curve_gives_seed_002s_table_3(db):
    at = open_page(PAGE)
    picked = at.multiselect(key="breakpoints_curves")
    picked.set_value(picked.options[:2]).run()
    assert len(at.dataframe) == 1  # no teacher chosen: each curve against its own reference only
    teacher = at.selectbox(key="breakpoints_teacher")
    prune = next(o for o in teacher.options if o.startswith("prune cnn_s"))
    teacher.set_value(prune).run()
    assert not at.exception
    assert len(at.dataframe) == 2
    table = at.dataframe[0].value
    assert list(table.index) == TABLE3_ROWS
    assert len(table.columns) == 1 and table.columns[0].startswith("fake-quant cnn_s")


def test_pooled_curves_are_offered_by_method_and_model(db):
    at = open_page(PAGE)
    at.radio(key="breakpoints_group").set_value("method").run()
    assert not at.exception
    labels = at.multiselect(key="breakpoints_curves").options
    assert any(o.startswith("prune.global_unstructured on cnn_s, digits (1 run)") for o in labels)


@pytest.fixture
def empty_db(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_LAB_DB", str(tmp_path / "empty.duckdb"))
    monkeypatch.setenv("COMPRESSION_LAB_STORE_DIR", str(tmp_path))
    yield
    from engine.run.jobs import shutdown_all

    shutdown_all("test finished")


def test_an_empty_store_guides_to_a_first_sweep(empty_db):
    at = open_page(PAGE)
    assert any("No curves yet" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_the_page_opens_on_the_newest_sweep_with_a_breakpoint_not_on_noise(db):
    at = open_page(PAGE)
    picked = at.multiselect(key="breakpoints_curves")
    labels = [picked.format_func(i) for i in picked.value]
    # the fake-quant sweep is newer, but its parameters never change: no curve, no breakpoint
    assert len(labels) == 1 and labels[0].startswith("prune cnn_s"), labels
    assert "breakpoint at sparsity 0.6" in text(at)
    assert not any(m.value.startswith(":material/remove:") for m in at.markdown)  # no empty detector answer


def test_switching_to_pooled_curves_keeps_the_chosen_sweeps(db):
    at = open_page(PAGE)
    at.radio(key="breakpoints_group").set_value("method").run()
    assert not at.exception
    picked = at.multiselect(key="breakpoints_curves")
    assert [picked.format_func(i) for i in picked.value] == ["prune.global_unstructured on cnn_s, digits (1 run)"]
    assert chart(at)["data"]
    at.radio(key="breakpoints_group").set_value("run").run()
    picked = at.multiselect(key="breakpoints_curves")
    assert [picked.format_func(i) for i in picked.value][0].startswith("prune cnn_s")


def test_tables_say_why_a_value_is_missing_and_round_to_what_was_measured(db):
    at = open_page(PAGE)
    picked = at.multiselect(key="breakpoints_curves")
    picked.set_value(picked.options[:2]).run()
    assert any(m.value.startswith(":material/remove:") for m in at.markdown)  # kneedle finds none on fake-quant
    teacher = at.selectbox(key="breakpoints_teacher")
    teacher.set_value(next(o for o in teacher.options if o.startswith("prune cnn_s"))).run()
    assert not at.exception
    for frame in at.dataframe:
        cells = frame.value.astype(object).to_numpy().ravel().tolist()
        assert not any(c is None or (isinstance(c, float) and c != c) or c in ("None", "nan") for c in cells), cells
        assert not any(isinstance(c, str) and len(c.split(".")[-1]) > 6 and c.replace(".", "").isdigit()
                       for c in cells), cells
    shown = " ".join(str(c) for f in at.dataframe for c in f.value.astype(object).to_numpy().ravel())
    assert "no breakpoint found" in shown
    assert "seed 002" not in " ".join(c.value for c in at.caption) + " ".join(s.value for s in at.subheader)
    assert "Malihi and Heidemann" in " ".join(c.value for c in at.caption)
