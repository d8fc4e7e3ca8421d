"""Compare & export against the pre-filled store: choosing runs fills the seeds' tables, a CSV download parses
back to the rows shown, a variant downloads as a zip of its checkpoint, and ONNX is made only on request."""

from __future__ import annotations

import io
import types
import zipfile

import pandas as pd
import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from engine.analysis import tables
from engine.analysis.exports import measured_precision
from engine.core.errors import UserError
from engine.core.point import Measurement
from engine.methods.tasks import make_point
from tests.pages.conftest import open_page

PAGE = "pages/compare.py"


@pytest.fixture
def files(monkeypatch) -> dict:
    """The data callable behind each download button made on click (by its deferred file id)."""
    made: dict = {}
    original = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, *args, **kwargs):
        file_id = original(self, data_callable, *args, **kwargs)
        made[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return made


def download(at: AppTest, files: dict, key: str) -> bytes:
    data = files[at.download_button(key=key).proto.deferred_file_id]()
    return data if isinstance(data, bytes) else data.encode()


def open_compare(runs: list[str] | None = None) -> AppTest:
    at = open_page(PAGE)
    if runs is not None:
        at.multiselect(key="compare_runs").set_value(runs).run()
        assert not at.exception
    return at


def shown(at: AppTest, column: str) -> pd.DataFrame:
    """The first table on the page that has this column."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def finished_runs(lab_store) -> dict[str, str]:
    from store import reading

    with reading(lab_store["db"]) as store:
        runs = store.list_runs()
    return dict(zip(runs["name"], runs["run_id"], strict=True))


def test_the_page_renders_and_asks_for_runs(db, lab_store):
    at = open_compare()
    assert "Choose one or more finished runs" in at.info[0].value
    assert set(at.multiselect(key="compare_runs").options) >= {
        f"prune cnn_s (prune.global_unstructured, 4 points) · {finished_runs(lab_store)['prune cnn_s']}"}


def test_choosing_runs_fills_the_tables_and_the_csv_parses_back_to_the_rows_shown(db, lab_store, files):
    at = open_compare(list(finished_runs(lab_store).values()))
    bits = shown(at, "2-bit")
    assert list(bits.columns) == ["model", "method", "2-bit", "4-bit", "8-bit", "32-bit"]
    assert list(bits["model"]) == ["cnn_s"] and bits.loc[0, "32-bit"] > 90
    techniques = shown(at, "technique")
    assert len(techniques) == 9  # every point of the three runs
    breakpoints = shown(at, "detector")
    assert breakpoints["curve"].nunique() == 2  # the pruning and the quantization sweeps; training is one point
    for key, column in (("dl_techniques_csv", "technique"), ("dl_bits_csv", "2-bit"), ("dl_breakpoints_csv", "detector")):
        back = pd.read_csv(io.BytesIO(download(at, files, key)))
        # the download holds the shown rows rounded to what was measured (issue #22 item 14)
        expected = measured_precision(shown(at, column))
        for c in expected.columns:  # CSV has no empty string: an empty text cell reads back as missing
            if not pd.api.types.is_numeric_dtype(expected[c]) and expected[c].eq("").any():
                back[c] = back[c].astype(object).where(back[c].notna(), "")
        pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    assert {b.label for b in at.download_button} >= {"CSV", "Excel", "Markdown", "LaTeX", "Parquet", "JSON"}


def test_choosing_points_narrows_the_tables_and_the_pivot_follows_its_settings(db, lab_store):
    ids = finished_runs(lab_store)
    at = open_compare([ids["fake-quant cnn_s"]])
    options = at.multiselect(key="compare_points").options
    assert len(options) == 4
    two = [int(o.split(" ")[0].lstrip("#")) for o in options[:2]]
    at.multiselect(key="compare_points").set_value(two).run()
    assert not at.exception
    assert set(shown(at, "technique")["point_id"]) == set(two)
    at.selectbox(key="compare_pivot_index").set_value("bits").run()
    at.selectbox(key="compare_pivot_columns").set_value("(none)").run()
    pivot = shown(at, "accuracy (mean)")
    assert list(pivot.columns) == ["bits", "accuracy (mean)"] and len(pivot) == 2


def test_a_variant_downloads_as_a_zip_of_its_checkpoint(db, lab_store, files):
    ids = finished_runs(lab_store)
    at = open_compare([ids["prune cnn_s"]])
    variant = at.selectbox(key="compare_variant")
    assert len(variant.options) == 4  # the reference and three pruned levels, each saved
    last = next(o for o in variant.options if "sparsity=0.9" in o)
    variant.set_value(int(last.split(" ")[0].lstrip("#"))).run()
    assert not at.exception
    with zipfile.ZipFile(io.BytesIO(download(at, files, "dl_checkpoint_zip"))) as zf:
        names = zf.namelist()
    assert any(n.endswith("/meta.json") for n in names) and any(n.endswith(".safetensors") for n in names)
    assert all(n.startswith("sparsity-0.900/") for n in names)


def test_a_variant_whose_checkpoint_is_gone_is_refused_with_a_message(db, tmp_path):
    from store import Store

    m = Measurement(accuracy=0.5, top5=1.0, loss=1.0, params_total=10, params_nonzero=10, sparsity=0.0, bits=32.0,
                    size_bytes=40, size_fp32_bytes=40, file_bytes=40, macs=10, latency_ms_b1=None,
                    latency_p90_ms_b1=None, latency_ms_b32=None, latency_p90_ms_b32=None, threads=1, backend="fp32",
                    simulated=False)  # hand-made: only its artifact matters here
    store = Store(db)
    run_id = store.create_run("measure", {}, name="moved away", status="running")
    store.add_point(run_id, make_point(m, family="measure", method="measure", stage="baseline",
                                       artifact=str(tmp_path / "deleted-checkpoint")))
    store.end_run(run_id, "finished")
    store.close()
    at = open_compare([run_id])
    assert "is gone" in at.error[0].value
    assert not [b for b in at.download_button if b.key == "dl_checkpoint_zip"]


def test_onnx_is_made_only_on_request_and_a_failure_is_a_message(db, lab_store, monkeypatch):
    calls = []

    def export_checkpoint(directory, out=None):
        calls.append(directory)
        return types.SimpleNamespace(data=b"onnx-bytes", max_abs_diff=2.5e-6)

    from engine.analysis import exports

    monkeypatch.setattr(exports, "export_checkpoint", export_checkpoint)
    at = open_compare([finished_runs(lab_store)["prune cnn_s"]])
    assert not calls and not [b for b in at.download_button if b.key == "dl_onnx"]
    at.button(key="compare_onnx_export").click().run()
    assert len(calls) == 1 and not at.exception
    assert at.download_button(key="dl_onnx").label == "ONNX file"
    assert any("2.50e-06" in c.value for c in at.caption)
    at.run()
    assert len(calls) == 1  # a rerun does not export again

    def refuse(directory, out=None):
        raise UserError("ONNX cannot export the op 'aten::foo'")

    monkeypatch.setattr(exports, "export_checkpoint", refuse)
    at.button(key="compare_onnx_export").click().run()
    assert not at.exception and at.error[0].value == "ONNX cannot export the op 'aten::foo'"
    def missing(directory, out=None):
        raise ModuleNotFoundError("No module named 'onnx'")  # what deploy.onnx raises without the package

    monkeypatch.setattr(exports, "export_checkpoint", missing)
    at.button(key="compare_onnx_export").click().run()
    assert not at.exception and "ONNX export is not available" in at.error[0].value


def test_the_seed_tables_on_the_stores_real_points(lab_store):
    """Engine level: the tables from the real points of the pre-filled store (no page)."""
    from store import reading

    with reading(lab_store["db"]) as store:
        points, known = store.points(), store.points(expand=False)
    bits = tables.accuracy_by_bits(points, known).data
    assert list(bits.columns) == ["model", "method", "2-bit", "4-bit", "8-bit", "32-bit"] and len(bits) == 1
    assert bits.loc[0, "2-bit"] < bits.loc[0, "32-bit"]
    compared = tables.method_comparison(points, known).data
    assert len(compared) == len(points)
    assert compared.loc[compared["point_id"] == tables.default_reference(points), "compression rate (x)"].item() == 1
    assert (compared.loc[compared["simulated"], "technique"].str.endswith("(simulated)")).all()
    summary = tables.breakpoint_summary(points, known)
    prune = summary.data[summary.data["curve"] == "cnn_s · global_unstructured"]
    assert len(prune) == 3 and prune["P before"].eq(prune["P before"].iloc[0]).all()
    found = prune[prune["found"]]
    assert (found["compression rate (x)"] > 1).all()
    table3 = tables.teacher_student_table(points, finished_runs(lab_store)["prune cnn_s"], known)
    assert len(table3.data.columns) == 3  # the quantization sweep as the other curve, one column per detector


def test_full_precision_downloads_keep_every_digit_when_asked(db, lab_store, files):
    """Issue #22 item 14: rounded to what was measured, unless the user asks for full precision."""
    at = open_compare([finished_runs(lab_store)["prune cnn_s"]])
    rounded = pd.read_csv(io.BytesIO(download(at, files, "dl_points_csv")))
    at.toggle(key="compare_full_precision").set_value(True).run()
    full = pd.read_csv(io.BytesIO(download(at, files, "dl_points_csv")))
    assert (rounded["accuracy"] == rounded["accuracy"].round(4)).all()
    assert (full["accuracy"] != full["accuracy"].round(4)).any()  # k/360 needs more than 4 decimals
    assert full["accuracy"].round(4).tolist() == rounded["accuracy"].tolist()
