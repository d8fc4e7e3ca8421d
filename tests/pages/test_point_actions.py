"""A point's actions (pages/point_actions.py) and the checkpoint choice on Launch and What-if."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.pages.test_compare_page import download, files, finished_runs, open_compare  # noqa: F401 - fixture
from tests.pages.test_launch_page import by_key, launch


def _variant(at: AppTest, text: str) -> None:
    variant = at.selectbox(key="compare_variant")
    option = next(o for o in variant.options if text in o)
    variant.set_value(int(option.split(" ")[0].lstrip("#"))).run()
    assert not at.exception, at.exception


def _sparse(lab_store) -> str:
    return str(next(Path(lab_store["root"], "pruned").glob("sparsity-0.9*")))


def test_open_in_whatif_from_compare_lands_on_whatif_with_that_checkpoint(db, lab_store):
    at = open_compare([finished_runs(lab_store)["prune cnn_s"]])
    _variant(at, "sparsity=0.9")
    at.button(key="compare.point.whatif").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="whatif_checkpoint").value == _sparse(lab_store)


def test_launch_from_this_checkpoint_lands_on_launch_with_that_checkpoint(db, lab_store):
    at = open_compare([finished_runs(lab_store)["prune cnn_s"]])
    _variant(at, "sparsity=0.9")
    at.button(key="compare.point.launch").click().run()
    assert not at.exception, at.exception
    picker = next(s for s in at.selectbox if str(s.key).endswith(".ckpt.run"))
    assert picker.value == _sparse(lab_store)


def _actions_app(artifact: str) -> None:
    from pages.point_actions import point_actions

    point_actions({"artifact": artifact}, "t")


def test_download_zips_the_points_checkpoint_and_a_point_without_one_says_why(lab_store, files):  # noqa: F811
    at = AppTest.from_function(_actions_app, args=(lab_store["checkpoint"],)).run()
    with zipfile.ZipFile(io.BytesIO(download(at, files, "t.download"))) as zf:
        assert "cnn_s/meta.json" in zf.namelist()
    gone = AppTest.from_function(_actions_app, args=(str(Path(lab_store["root"]) / "nowhere"),)).run()
    assert not gone.button and "is gone" in gone.caption[0].value


def test_launch_defaults_to_the_trained_model_not_the_newest_sweep_variant(db, lab_store):
    at = launch(db)
    by_key(at.selectbox, "launch.family").set_value("prune").run()
    picker = by_key(at.selectbox, "launch.prune.ckpt.run")
    assert picker.value == lab_store["checkpoint"]
    assert any(o.lstrip().startswith("└ global_unstructured sparsity 0.9") for o in picker.options)
    assert all("%" in o for o in picker.options)  # each choice shows its accuracy


def test_whatif_lists_the_same_labels_as_launch(db, lab_store):
    from engine.run.launch import checkpoint_rows
    from store import open_store

    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=60).run()
    at.switch_page("pages/whatif.py").run()
    store = open_store(db)
    try:
        labels = list(checkpoint_rows(store.points(expand=False))["label"])
    finally:
        store.close()
    picker = at.selectbox(key="whatif_checkpoint")
    assert picker.options == labels and len(set(labels)) == len(labels)


def test_a_recipe_writing_outside_the_store_dir_is_refused_and_nothing_is_queued(db, tmp_path):
    at = launch(db)
    at.text_area(key="launch.recipe.text").set_value(
        "name: r\ndataset: digits\nmodel: cnn_s\nout: /anywhere/x\nstages:\n  - name: t\n    task: train\n"
        "    config: {train: {epochs: 1}}\n").run()
    at.button(key="launch.recipe.submit").click().run()
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "/anywhere/x" in message and str(tmp_path) in message
    assert not at.session_state["launch.queued"] if "launch.queued" in at.session_state else True


def test_repeats_of_one_shot_pruning_are_flagged_in_the_form(db):
    at = launch(db)
    by_key(at.selectbox, "launch.family").set_value("prune").run()
    by_key(at.selectbox, "launch.method.prune").set_value("global_unstructured").run()
    assert not any("std of 0" in w.value for w in at.warning)
    by_key(at.number_input, "launch.form.prune.global_unstructured.repeats").set_value(3).run()
    assert any("3 repeats of a deterministic run" in w.value for w in at.warning)
