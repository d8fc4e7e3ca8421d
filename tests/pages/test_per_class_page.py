"""The Trade-offs page's "Per class" section against the pre-filled store: a clicked pruned point shows its
per-class table beside the sweep's baseline and both confusion matrices; a point stored before per-class
results were recorded says so instead of failing."""

from __future__ import annotations

import json

import pytest

from engine.analysis.classes import NOT_RECORDED, class_accuracy
from store import open_store
from tests.pages.conftest import open_page
from tests.pages.test_tradeoffs_page import PAGE, click_point


def _points(db: str):
    store = open_store(db)
    try:
        return store.points(expand=False)
    finally:
        store.close()


def _per_class(at):
    return next(e for e in at.expander if e.label.startswith("Per class"))


def test_a_pruned_point_shows_its_classes_beside_the_baseline(db):
    points = _points(db)
    prune = points[points["method"] == "global_unstructured"]
    variant = prune[prune["level"] == 0.9].iloc[0]
    baseline = prune[prune["stage"] == "baseline"].iloc[0]
    matrix = json.loads(variant["extra"])["confusion"]
    base_matrix = json.loads(baseline["extra"])["confusion"]
    # measured by the real task: 10 digit classes, the trace over the total is the point's accuracy
    assert len(matrix) == 10 and sum(matrix[i][i] for i in range(10)) / sum(map(sum, matrix)) == pytest.approx(
        variant["accuracy"], abs=1e-6)

    at = open_page(PAGE)
    click_point(at, int(variant["point_id"]))
    section = _per_class(at)
    assert any(f"#{int(baseline['point_id'])}" in c.value for c in section.caption)
    table = next(d for d in section.dataframe).value
    assert len(table) == 10 and list(table.columns)[:5] == ["class", "test images", "baseline accuracy", "accuracy",
                                                            "change (points)"]
    change = table["change (points)"].tolist()
    assert change == sorted(change)  # the most-hurt class first
    acc, base = class_accuracy(matrix), class_accuracy(base_matrix)
    worst = min(range(10), key=lambda i: acc[i] - base[i])
    assert change[0] == pytest.approx(100 * (acc[worst] - base[worst]))
    assert len(section.get("plotly_chart")) == 1
    spec = json.loads(section.get("plotly_chart")[0].proto.spec)
    assert [t["type"] for t in spec["data"]] == ["heatmap", "heatmap"]


def test_a_point_without_a_matrix_says_to_re_measure(db):
    import duckdb

    points = _points(db)
    row = points[points["family"] == "train"].iloc[0]
    extra = {k: v for k, v in json.loads(row["extra"]).items() if k != "confusion"}  # as stored before
    with duckdb.connect(db) as con:
        con.execute("UPDATE points SET extra = ? WHERE point_id = ?", [json.dumps(extra), int(row["point_id"])])
    at = open_page(PAGE)
    click_point(at, int(row["point_id"]))
    section = _per_class(at)
    assert any(NOT_RECORDED in c.value for c in section.caption)
    assert not section.get("plotly_chart") and not section.dataframe
