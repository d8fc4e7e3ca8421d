"""The Recommend page against tests/test_recommend.py's store of known points (no training): it opens on the
checkpoint with the most variants, highlights the winner the analysis picks, says why nothing fits under an
impossible budget, and opens the winner's run on Runs."""

from __future__ import annotations

import pytest

from tests.pages.conftest import chart, open_page
from tests.test_recommend import fill_store

PAGE = "pages/recommend.py"


@pytest.fixture
def known(tmp_path, monkeypatch) -> dict:
    out = fill_store(tmp_path / "rec.duckdb", tmp_path)
    monkeypatch.setenv("COMPRESSION_LAB_DB", out["db"])
    yield out
    from engine.run.jobs import shutdown_all

    shutdown_all("test finished")


def test_the_page_ranks_the_variants_and_highlights_the_winner(known):
    at = open_page(PAGE)
    ids = known["ids"]
    assert at.selectbox(key="recommend.baseline").value == ids["base"]
    at.selectbox(key="recommend.size_kind").set_value("x smaller").run()
    at.number_input(key="recommend.size.x smaller").set_value(1.5).run()
    assert not at.exception, at.exception
    assert any(f"Ship point {ids['qp']}" in s.value for s in at.success)
    table = at.dataframe[0].value
    assert table["rank"].iloc[0] == "baseline" and table["point"].iloc[1] == ids["qp"]
    names = [t["name"] for t in chart(at)["data"]]
    assert "recommended" in names and any(n.startswith("Pareto front, digits") for n in names)
    downloads = {str(d.proto.id).rsplit("-", 1)[-1] for d in at.get("download_button")}
    assert "recommend.best.download" in downloads  # the winner's checkpoint as a zip
    assert {f"recommend.dl.{f}" for f in ("csv", "json")} <= downloads  # the comparison
    at.button(key="recommend.open_run").click().run()
    assert at.session_state["runs.selected"] == known["runs"]["qp"]


def test_an_impossible_budget_says_which_budget_rules_everything_out(known):
    at = open_page(PAGE)
    at.number_input(key="recommend.max_drop").set_value(0.0).run()
    at.selectbox(key="recommend.size_kind").set_value("x smaller").run()
    at.number_input(key="recommend.size.x smaller").set_value(100.0).run()
    assert not at.exception, at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "No recommendation: nothing fits" in warning
