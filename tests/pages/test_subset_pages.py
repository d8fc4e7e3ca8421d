"""The Trade-offs and Breakpoints pages with a sweep scored on a seeded test subset in the store: they render, and
the subset levels carry their 95 % interval as error bars (the ends and the breakpoints, measured on the whole
split, carry none)."""

from __future__ import annotations

from engine.run.jobs import run_sync
from tests.pages.conftest import chart, open_page
from tests.pages.test_tradeoffs_page import decode


def subset_sweep(db: str, checkpoint: str) -> int:
    """Records a one-shot sweep scored on 60 test images; how many of its levels stayed on the subset."""
    points = run_sync("prune.global_unstructured", {"checkpoint": checkpoint, "latency": False, "save": False,
                                                    "eval_samples": 60, "sparsities": [0.0, 0.5, 0.8, 0.9, 0.99]},
                      db, name="subset sweep")
    on_subset = sum(bool(p.extra.get("eval_subset")) for p in points)
    assert on_subset, "the middle levels that are not breakpoints stay on the subset"
    return on_subset


def test_the_tradeoffs_page_draws_subset_points_with_their_interval(db, lab_store):
    on_subset = subset_sweep(db, lab_store["checkpoint"])
    at = open_page("pages/tradeoffs.py")
    bars = [t for t in chart(at)["data"] if (t.get("error_y") or {}).get("arrayminus") is not None]
    assert sum(int((decode(t["error_y"]["arrayminus"]) > 0).sum()) for t in bars) >= on_subset
    assert any("subset of 60 images, 95 % interval" in h for t in bars for h in t["hovertext"])
    assert any("95 % interval of an accuracy scored on a seeded test subset" in c.value for c in at.caption)


def test_the_breakpoints_page_draws_a_subset_sweep_with_its_interval(db, lab_store):
    on_subset = subset_sweep(db, lab_store["checkpoint"])
    at = open_page("pages/breakpoints.py")
    picked = at.multiselect(key="breakpoints_curves")
    picked.set_value([o for o in picked.options if o.startswith("subset sweep")][:1]).run()
    assert not at.exception, at.exception
    line = next(t for t in chart(at)["data"] if (t.get("name") or "").startswith("subset sweep")
                and t.get("mode") == "lines+markers")
    assert (decode(line["error_y"]["array"]) > 0).sum() == on_subset
