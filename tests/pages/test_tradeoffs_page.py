"""The Trade-offs page against the pre-filled store: it renders, the axis, colour and filter widgets change
the chart, a latency axis says what it leaves out, a clicked point shows its details and lineage, and an
empty store guides instead of drawing nothing."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from pages.figures.tradeoffs import CUSTOM_INDEX
from tests.pages.conftest import chart, open_page

PAGE = "pages/tradeoffs.py"


def names(at: AppTest) -> list[str]:
    """Trace names in order, once each (a colour group is split into one trace per symbol)."""
    return list(dict.fromkeys(t.get("name") for t in chart(at)["data"]))


def decode(array) -> np.ndarray:
    """A numeric array as Plotly's JSON carries it: a list, or base64 with its dtype and shape."""
    if isinstance(array, dict):
        data = np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
        return data.reshape([int(n) for n in str(array.get("shape", len(data))).split(",")])
    return np.asarray(array, dtype=float)


def select(at: AppTest, key: str, value) -> AppTest:
    next(s for s in at.selectbox if s.key == key).set_value(value)
    at.run()
    assert not at.exception, at.exception
    return at


def click_point(at: AppTest, point_id: int) -> AppTest:
    """What the browser sends when a point is clicked: the chart's selection as a JSON string, the point's
    customdata row (a typed array in the browser) as an object keyed by position."""
    element = at.get("plotly_chart")[0]
    states = at._tree.get_widget_states()
    selection = {"selection": {"points": [{"curve_number": 0, "point_number": 0, "point_index": 0,
                                           "customdata": {"0": float(point_id), "1": 0.5}}], "point_indices": [0], "box": [], "lasso": []}}
    states.widgets.append(WidgetState(id=element.proto.id, string_value=json.dumps(selection)))
    at._run(states)
    assert not at.exception, at.exception
    return at


def test_the_page_draws_every_point_with_the_pareto_front_and_simulated_points_marked(db):
    at = open_page(PAGE)
    spec = chart(at)
    assert [n for n in names(at) if not n.startswith("Pareto")] == ["prune", "quantize", "train",
                                                                    "open symbol: simulated"]
    assert any(n.startswith("Pareto front") for n in names(at))
    assert spec["layout"]["xaxis"]["title"]["text"].startswith("size")
    text = " ".join(c.value for c in at.caption)
    assert "9 points drawn" in text and "simulated quantization" in text and "Error bars" in text


def test_axis_log_colour_and_filters_change_the_chart(db):
    at = open_page(PAGE)
    select(at, "tradeoffs_x", "params")
    assert chart(at)["layout"]["xaxis"]["title"]["text"] == "nonzero parameters"
    next(t for t in at.toggle if t.key == "tradeoffs_log").set_value(True).run()
    assert chart(at)["layout"]["xaxis"]["type"] == "log"
    select(at, "tradeoffs_colour", "method")
    assert names(at)[:3] == ["prune.global_unstructured", "quantize.fake", "train"]
    next(m for m in at.multiselect if m.key == "tradeoffs_filter_family").set_value(["prune"]).run()
    assert not at.exception
    assert names(at)[0] == "prune.global_unstructured" and "quantize.fake" not in names(at)
    assert "5 points drawn" not in " ".join(c.value for c in at.caption)  # 4 prune points
    assert "4 points drawn" in " ".join(c.value for c in at.caption)


def test_a_latency_axis_without_latency_says_so_instead_of_an_empty_chart(db):
    at = select(open_page(PAGE), "tradeoffs_x", "latency_b1")
    assert "9 points with no latency measured" in " ".join(c.value for c in at.caption)
    assert any("choose another x axis" in w.value for w in at.warning)
    assert not at.get("plotly_chart")


def test_clicking_a_point_shows_its_details_and_lineage(db):
    at = open_page(PAGE)
    prune = next(t for t in chart(at)["data"] if t["name"] == "prune" and any(", sparsity 0.6<br>" in h
                                                                          for h in t["hovertext"]))
    i = next(i for i, h in enumerate(prune["hovertext"]) if ", sparsity 0.6<br>" in h)
    row = decode(prune["customdata"])[i]
    click_point(at, int(row[CUSTOM_INDEX["point_id"]]))
    assert [s.value for s in at.subheader] == ["Selected point"]
    text = " ".join(m.value for m in at.markdown)
    assert "prune cnn_s" in text and "sparsity 0.6" in text
    assert "train -> global_unstructured (sparsity 0.6)" in text  # read from the artifact's meta.json
    table = next(d for d in at.dataframe if "field" in d.value.columns).value
    fields = dict(zip(table["field"], table["value"], strict=True))
    assert float(fields["accuracy"]) == pytest.approx(row[CUSTOM_INDEX["accuracy"]], abs=5e-5)  # to 4 decimals
    assert fields["point_id"] == str(int(row[CUSTOM_INDEX["point_id"]])) and fields["artifact"].endswith("sparsity-0.600")


@pytest.fixture
def empty_db(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_LAB_DB", str(tmp_path / "empty.duckdb"))
    monkeypatch.setenv("COMPRESSION_LAB_STORE_DIR", str(tmp_path))
    yield
    from engine.run.jobs import shutdown_all

    shutdown_all("test finished")


def test_an_empty_store_guides_to_a_first_run(empty_db):
    at = open_page(PAGE)
    assert any("No points yet" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def colours(at: AppTest) -> dict[str, str]:
    return {t["name"]: t["marker"]["color"] for t in chart(at)["data"] if t.get("customdata") is not None}


def test_a_family_keeps_its_colour_and_the_filters_title_says_what_is_chosen(db):
    at = open_page(PAGE)
    before = colours(at)
    assert next(e for e in at.expander if e.label.startswith("Filters")).label == "Filters (none chosen: all points)"
    next(m for m in at.multiselect if m.key == "tradeoffs_filter_family").set_value(["quantize", "train"]).run()
    assert not at.exception
    after = colours(at)
    assert set(after) == {"quantize", "train"}
    assert all(after[f] == before[f] for f in after)  # filtering out prune repaints nothing
    assert next(e for e in at.expander if e.label.startswith("Filters")).label == "Filters (family: 2 chosen)"


def test_the_pareto_table_leads_with_accuracy_and_x_rounded_to_what_was_measured(db):
    at = open_page(PAGE)
    table = next(d for d in at.dataframe if d.key == "tradeoffs_front_table" or "run" in d.value.columns).value
    assert list(table.columns[:2]) == ["accuracy", "size_bytes"]
    assert all(a == round(a, 4) for a in table["accuracy"])


def test_point_details_show_numbers_as_measured_not_float_noise(db):
    at = open_page(PAGE)
    prune = next(t for t in chart(at)["data"] if t["name"] == "prune")
    click_point(at, int(decode(prune["customdata"])[0][CUSTOM_INDEX["point_id"]]))
    table = next(d for d in at.dataframe if "field" in d.value.columns).value
    fields = dict(zip(table["field"], table["value"], strict=True))
    assert len(fields["accuracy"]) <= 6  # "0.9722", not "0.9722222089767456"
    assert all(len(x) <= 8 for k, v in fields.items() if k.startswith(("accuracy", "loss", "top5", "sparsity"))
               for x in v.strip("[]").split(", ")), fields
