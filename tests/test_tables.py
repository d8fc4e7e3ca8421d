"""The seeds' table forms and the free pivot, built from hand-made points stored in a real store (so the frame
is exactly what Store.points gives). The pre-filled store's real points are tabled in tests/pages/test_compare_page.py."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from engine.analysis import tables
from engine.analysis.study_tables import TABLE3_ROWS
from engine.core.errors import UserError
from engine.core.point import Measurement
from engine.methods.tasks import make_point
from engine.run import studies

TEACHER, STUDENT = "/lab/teacher", "checkpoints/student"  # one absolute, one relative path: both must resolve


def measurement(accuracy: float, params: int, nonzero: int | None = None, bits: float = 32.0, model: str = "cnn_l",
                latency: float | None = None, simulated: bool = False) -> Measurement:
    """Hand-made numbers (nothing here was measured): the size follows the bits and the non-zero weights."""
    nonzero = params if nonzero is None else nonzero
    size = int(nonzero * bits / 8)
    return Measurement(accuracy=accuracy, top5=1.0, loss=0.1, params_total=params, params_nonzero=nonzero,
                       sparsity=1 - nonzero / params, bits=bits, size_bytes=size, size_fp32_bytes=4 * params,
                       file_bytes=size + 100, macs=10 * params, latency_ms_b1=latency, latency_p90_ms_b1=latency,
                       latency_ms_b32=None if latency is None else 8 * latency, latency_p90_ms_b32=None, threads=2,
                       backend="fp32 eager cpu", simulated=simulated, dataset="digits", model=model)


TEACHER_CURVE = [0.95, 0.95, 0.94, 0.60, 0.20]  # falls hard after 50 %
STUDENT_CURVE = [0.90, 0.90, 0.89, 0.88, 0.50]  # after 70 %
LEVELS = [0.0, 0.3, 0.5, 0.7, 0.9]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Runs as tasks would log them: a trained teacher, a kd student, fake-quant sweeps of both, pruning sweeps
    of both, and a QAT run with its three kinds of 8-bit model."""
    from store import Store

    store = Store(str(tmp_path_factory.mktemp("tables") / "t.duckdb"))
    ids = {}

    def run(name: str, kind: str, points: list) -> None:
        rid = store.create_run(kind, {}, name=name, status="running")
        for p in points:
            store.add_point(rid, p)
        store.end_run(rid, "finished")
        ids[name] = rid

    run("train", "train", [make_point(measurement(0.95, 4000, latency=2.0), family="train", method="train",
                                      stage="baseline", artifact=TEACHER)])
    run("distill", "distill", [
        make_point(measurement(0.95, 4000), family="distill", method="kd", stage="baseline", role="teacher",
                   input_checkpoint=TEACHER, artifact=TEACHER),
        make_point(measurement(0.90, 400, model="cnn_s", latency=0.5), family="distill", method="kd", stage="variant",
                   role="student", input_checkpoint=TEACHER, artifact="/work/x/" + STUDENT)])
    for name, src, model, params, accs in (("fake teacher", TEACHER, "cnn_l", 4000, [0.50, 0.93, 0.95, 0.95]),
                                           ("fake student", STUDENT, "cnn_s", 400, [0.30, 0.85, 0.90, 0.90])):
        run(name, "quantize.fake", [
            make_point(measurement(a, params, bits=b, model=model, simulated=b < 32), family="quantize", method="fake",
                       stage="baseline" if b == 32 else "variant", level=b, level_name="bits", input_checkpoint=src,
                       artifact="" if b == 32 else f"{src}-bits-{b}")
            for b, a in zip([2, 4, 8, 32], accs, strict=True)])
    for name, src, model, params, accs in (("prune teacher", TEACHER, "cnn_l", 4000, TEACHER_CURVE),
                                           ("prune student", STUDENT, "cnn_s", 400, STUDENT_CURVE)):
        run(name, "prune.global_unstructured", [
            make_point(measurement(a, params, round(params * (1 - s)), model=model), family="prune",
                       method="global_unstructured", stage="baseline" if s == 0 else "variant", level=s,
                       level_name="sparsity", input_checkpoint=src, accuracy_std=0.0,
                       artifact=src if s == 0 else f"{src}-sparsity-{s}")
            for s, a in zip(LEVELS, accs, strict=True)])
    run("qat", "quantize.qat", [
        make_point(measurement(0.95, 4000), family="quantize", method="qat", stage="baseline", level=32,
                   level_name="bits", input_checkpoint=TEACHER),
        *[make_point(measurement(a, 4000, bits=8, simulated=k != "qat_int8"), family="quantize", method="qat",
                     stage="variant", level=8, level_name="bits", input_checkpoint=TEACHER, kind=k,
                     artifact=f"/lab/qat/{k}")
          for k, a in (("ptq", 0.94), ("qat", 0.96), ("qat_int8", 0.955))]])
    yield store, ids
    store.close()


def points_of(lab, *names: str) -> pd.DataFrame:
    store, ids = lab
    return store.points([ids[n] for n in names])


def known(lab) -> pd.DataFrame:
    return lab[0].points(expand=False)


def test_models_are_named_by_what_made_them(lab):
    pts = points_of(lab, "fake teacher", "fake student", "distill", "train")
    sources = dict(zip(pts["run_name"], tables.source_labels(pts, known(lab)), strict=False))
    assert sources["fake teacher"] == "teacher cnn_l"  # a distillation taught it
    assert sources["fake student"] == "kd student cnn_s"  # relative path matched to the absolute artifact
    variants = tables.variant_labels(pts, known(lab))
    assert set(variants[pts["role"] == "student"]) == {"kd student cnn_s"}
    assert "teacher cnn_l · fake bits=4" in set(variants)
    # without the runs that made them, a checkpoint is its architecture and its folder
    alone = points_of(lab, "fake student")
    assert set(tables.source_labels(alone)) == {"cnn_s (student)"}


def test_accuracy_by_bits_is_seed_003s_layout(lab):
    table = tables.accuracy_by_bits(points_of(lab, "fake student", "fake teacher"), known(lab))
    df = table.data
    assert list(df.columns) == ["model", "method", "2-bit", "4-bit", "8-bit", "32-bit"]
    assert list(df["model"]) == ["teacher cnn_l", "kd student cnn_s"]  # the teacher first, as in the seed
    assert df.loc[0, "2-bit"] == pytest.approx(50.0) and df.loc[1, "8-bit"] == pytest.approx(90.0)
    assert any("Simulated" in n for n in table.notes) and table.seed == "003"


def test_each_qat_kind_is_its_own_row_and_shares_the_float_reference(lab):
    df = tables.accuracy_by_bits(points_of(lab, "qat"), known(lab)).data
    assert list(df["method"]) == ["qat [ptq]", "qat [qat]", "qat [qat_int8]"]
    assert list(df["32-bit"]) == pytest.approx([95.0] * 3)
    assert list(df["8-bit"]) == pytest.approx([94.0, 96.0, 95.5])


def test_no_weight_width_points_is_said_not_a_crash(lab):
    table = tables.accuracy_by_bits(points_of(lab, "prune teacher"), known(lab))
    assert table.data.empty and "quantize" in table.notes[0]
    assert tables.accuracy_by_bits(pd.DataFrame()).notes == ["No points chosen."]


def test_method_comparison_rows_rates_and_units(lab):
    pts = points_of(lab, "train", "distill", "fake teacher")
    table = tables.method_comparison(pts, known(lab))
    df = table.data
    assert list(df.columns) == tables.COMPARISON_COLUMNS and len(df) == len(pts)
    ref = tables.default_reference(pts)
    assert df.loc[df["point_id"] == ref, "compression rate (x)"].item() == 1.0
    two_bit = df[df["technique"].str.contains("bits=2")].iloc[0]
    assert two_bit["technique"].endswith("(simulated)")
    assert two_bit["compression rate (x)"] == pytest.approx((4000 * 4) / (4000 * 2 / 8))
    assert two_bit["accuracy (%)"] == pytest.approx(50.0) and two_bit["size (KiB)"] == pytest.approx(1000 / 1024)
    assert df["latency b1 (ms)"].dtype == float and math.isnan(two_bit["latency b1 (ms)"])
    assert df.loc[df["technique"] == "kd student cnn_s", "latency b32 (ms)"].item() == pytest.approx(4.0)
    assert any("Latency not measured" in n for n in table.notes)


def test_method_comparison_one_row_per_run_takes_each_runs_representative(lab):
    pts = points_of(lab, "distill", "qat", "prune teacher")
    df = tables.method_comparison(pts, known(lab), per="run").data
    assert len(df) == 3
    assert "kd student cnn_s" in set(df["technique"])  # a distillation stands for its student
    assert any("[qat_int8]" in t for t in df["technique"])  # QAT for its int8 model
    assert any("sparsity=0.9" in t for t in df["technique"])  # a sweep for its most compressed level


def test_method_comparison_refuses_a_reference_outside_its_rows(lab):
    pts = points_of(lab, "train")
    with pytest.raises(UserError, match="reference point 999"):
        tables.method_comparison(pts, reference=999)
    with pytest.raises(UserError, match="'point' or 'run'"):
        tables.method_comparison(pts, per="layer")


def test_breakpoint_summary_per_curve_and_detector(lab):
    table = tables.breakpoint_summary(points_of(lab, "train", "prune teacher", "prune student"), known(lab))
    df = table.data
    assert list(df.columns) == tables.BREAKPOINT_COLUMNS
    assert sorted(df["curve"].unique()) == ["kd student cnn_s · global_unstructured",
                                            "teacher cnn_l · global_unstructured"]
    assert len(df) == 2 * 3  # every detector on each curve
    teacher = df[(df["curve"].str.startswith("teacher")) & (df["detector"] == "tolerance")].iloc[0]
    assert teacher["found"] and teacher["level at breakpoint"] == 0.5  # 0.94 is within 1 point, 0.60 is not
    assert teacher["P before"] == 4000 and teacher["P at breakpoint"] == 2000
    assert teacher["percentage decrease (%)"] == pytest.approx(50.0)
    assert teacher["compression rate (x)"] == pytest.approx(2.0)
    assert any("train: one point, not a sweep" in n for n in table.notes)


def test_teacher_student_table_is_seed_002s_table_3(lab):
    pts = points_of(lab, "prune teacher", "prune student")
    teacher_run = lab[1]["prune teacher"]
    table = tables.teacher_student_table(pts, teacher_run, known(lab))
    assert list(table.data.index) == TABLE3_ROWS
    assert list(table.data.columns) == [f"kd student cnn_s · global_unstructured / {d}"
                                        for d in ("kneedle", "slope_ratio", "tolerance")]
    assert table.data.loc["P(t) before pruning"].tolist() == [4000.0] * 3
    with pytest.raises(UserError, match="not one of the chosen sweeps"):
        tables.teacher_student_table(pts, "nope", known(lab))


def test_pivot_any_column_by_any_column(lab):
    pts = points_of(lab, "prune teacher", "prune student")
    wide = tables.pivot(pts, "model", "level", "accuracy", "mean")
    assert list(wide.columns) == ["model", "0", "0.3", "0.5", "0.7", "0.9"]
    assert wide.set_index("model").loc["cnn_s", "0.9"] == pytest.approx(0.5)
    long = tables.pivot(pts, "model", None, "params_nonzero", "max")
    assert list(long.columns) == ["model", "params_nonzero (max)"] and list(long.iloc[:, 1]) == [4000, 400]
    counted = tables.pivot(points_of(lab, "train", "prune teacher"), "method", "level", "accuracy", "count")
    assert "(none)" in counted.columns  # the trained model has no level: its own group, not dropped


@pytest.mark.parametrize(("args", "message"), [
    (("nope", "level", "accuracy", "mean"), "no column 'nope'"),
    (("model", "level", "model", "mean"), "'model' is not a numeric column"),
    (("model", "level", "accuracy", "mode"), "'mode' is not one of"),
    (("level", "level", "accuracy", "mean"), "rows and columns are the same"),
])
def test_pivot_names_what_is_wrong(lab, args, message):
    with pytest.raises(UserError, match=message):
        tables.pivot(points_of(lab, "prune teacher"), *args)


def test_a_study_runs_tables_are_the_studys_own(tmp_path):
    """A study's recipe run: its child units (found by their recorded stage when the store's keys are another
    code version's) go through engine.run.studies' own table builder."""
    from engine.run.studies import study_recipe
    from store import Store

    doc = study_recipe("compare-techniques", dataset="digits", quick=True)
    store = Store(str(tmp_path / "s.duckdb"))
    parent = store.create_run("recipe", {"recipe": doc}, name="study compare-techniques", status="running")
    for stage, kind, point in (
            ("baseline", "measure", make_point(measurement(0.95, 4000, latency=2.0), family="measure",
                                               method="measure", stage="baseline", artifact=TEACHER)),
            ("ptq-int8", "quantize.ptq_int8", make_point(measurement(0.94, 4000, bits=8, latency=1.0),
                                                         family="quantize", method="ptq_int8", stage="variant",
                                                         level=8, level_name="bits", input_checkpoint=TEACHER))):
        rid = store.create_run(kind, {}, name=f"unit {stage}", parent_id=parent, status="running", stage=stage,
                               sweep={}, unit_key="0123456789abcdef")
        store.add_point(rid, point)
        store.end_run(rid, "finished")
    store.end_run(parent, "finished")
    result = studies.study_tables(store, parent)
    store.close()
    assert result.study == "compare-techniques" and result.seeds == "000, 001"
    (table,) = result.tables
    assert list(table.data["technique"]) == ["Baseline", "int8 PTQ"]
    assert table.data.loc[1, "size vs baseline (x)"] == pytest.approx(4.0)
    assert any(n.startswith("int8 PTQ: 4.0x smaller") for n in result.notes)


def test_a_quantize_runs_float_reference_is_called_the_fp32_baseline_not_bits_32():
    base = {"point_id": 1, "family": "quantize", "method": "ptq_int8", "stage": "baseline", "level": 32.0,
            "level_name": "bits", "role": "", "input_checkpoint": TEACHER, "artifact": "", "model": "cnn_l"}
    variant = {**base, "point_id": 2, "stage": "variant", "level": 8.0}
    labels = list(tables.variant_labels(pd.DataFrame([base, variant])))
    assert labels == ["cnn_l (teacher) · ptq_int8 fp32 baseline", "cnn_l (teacher) · ptq_int8 bits=8"]
    assert not any("bits=32" in label for label in labels)


def test_tables_name_their_paper_and_say_kib():
    table = tables.breakpoint_summary(pd.DataFrame())
    assert table.paper.startswith("Malihi and Heidemann (2023)")
    assert "seed 00" not in " ".join(table.notes)
    assert "KiB = 1024 bytes" in tables.SIZE_NOTE and "engine/" not in tables.SIZE_NOTE


def test_method_comparison_carries_the_paired_speed_up_its_interval_the_timing_and_the_machine():
    """Issue #23: a comparison table (and so every export of it) shows each row's speed-up over its own run's
    baseline with the interval, whether the timing was clean, and which machine timed it; it warns when rows
    come from two machines or were timed noisy."""
    def timed(pid: int, speedup: float | None, quality: str, machine: str) -> dict:
        m = measurement(0.9, 4000, latency=1.0)
        p = make_point(m, family="quantize", method="ptq_int8", stage="variant", level=8, level_name="bits",
                       artifact=f"/ck/{pid}").to_dict()
        p.update(point_id=pid, run_id=f"r{pid}", run_kind="quantize.ptq_int8", speedup_b1=speedup,
                 speedup_lo_b1=None if speedup is None else speedup * 0.9,
                 speedup_hi_b1=None if speedup is None else speedup * 1.1, latency_quality=quality, machine=machine)
        return p

    pts = pd.DataFrame([timed(1, None, "clean", "aaa"), timed(2, 2.0, "clean", "aaa"),
                        timed(3, 3.0, "noisy: 0 of 7 rounds clean", "bbb")])
    table = tables.method_comparison(pts, reference=1)
    df = table.data.set_index("point_id")
    assert df.loc[2, "speed-up b1 (x)"] == 2.0 and df.loc[2, "speed-up b1 95 %"] == "1.80-2.20"
    assert df.loc[1, "speed-up b1 95 %"] == "" and math.isnan(df.loc[1, "speed-up b1 (x)"])
    assert df.loc[3, "timing"].startswith("noisy") and df.loc[3, "machine"] == "bbb"
    notes = " ".join(table.notes)
    assert "timed beside it in the same rounds" in notes and "1 row(s) were timed while other processes" in notes
    assert "2 machines (aaa, bbb)" in notes
