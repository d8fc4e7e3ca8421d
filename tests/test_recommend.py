"""Recommend against a store filled with known points: a baseline on digits and its variants (some fit, one is too
big, one loses too much, one is at chance level, one was timed while the CPU was shared, one saved no checkpoint,
one was compressed twice, one ran on ONNX Runtime), a second dataset's models, and a planner's estimate. Checks the
ranking, the winner, the words of each break, dataset separation, that an estimate never wins, the per-dataset
Pareto front of Trade-offs, and the CLI on the same store file."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from engine.analysis.recommend import Budget, comparison, recommend
from engine.analysis.tradeoffs import at_chance, on_axis, pareto_points, shape_points
from engine.cli.main import main
from engine.core.errors import ConfigError, UserError
from engine.core.point import Measurement
from engine.methods.tasks import make_point
from engine.model.checkpoint import WEIGHTS, CheckpointMeta, write_meta
from store import Store

DIGITS_CONFUSION = [[36 if i == j else 0 for j in range(10)] for i in range(10)]  # 360 test images, 10 % each


def checkpoint(path) -> str:
    """A checkpoint directory that reads back (meta.json and a weights file; the weights are never loaded here)."""
    path.mkdir(parents=True)
    write_meta(path, CheckpointMeta(arch="cnn_s", num_classes=10, in_channels=1, image_size=8, dataset="digits",
                                    class_names=[str(i) for i in range(10)]))
    (path / WEIGHTS).write_bytes(b"")
    return str(path)


def m(accuracy, size, dataset="digits", **kw) -> Measurement:
    values = dict(accuracy=accuracy, top5=0.99, loss=0.3, params_total=100_000, params_nonzero=100_000, sparsity=0.0,
                  bits=32.0, size_bytes=size, size_fp32_bytes=400_000, file_bytes=size, macs=50_000,
                  latency_ms_b1=None, latency_p90_ms_b1=None, latency_ms_b32=None, latency_p90_ms_b32=None, threads=2,
                  backend="fp32 eager cpu", simulated=False, dataset=dataset, model="cnn_s", runtime="torch",
                  confusion=DIGITS_CONFUSION if dataset == "digits" else None)
    values.update(kw)
    return Measurement(**values)


def timed(latency, speedup=None, lo=None, hi=None, quality="clean") -> dict:
    return dict(latency_ms_b1=latency, speedup_b1=speedup, speedup_lo_b1=lo, speedup_hi_b1=hi,
                latency_quality=quality, machine="m1")


def fill_store(path, root) -> dict:
    """The known points; returns their ids by name and the store path."""
    base, p50, p80, p95, q8, qp = (checkpoint(root / n) for n in ("base", "p50", "p80", "p95", "q8", "qp"))
    other = checkpoint(root / "other")
    ids: dict[str, int] = {}
    runs: dict[str, str] = {}
    with Store(path) as store:
        def run(name, kind, named):
            rid = store.create_run(kind, {}, name=name)
            for key, point in named:
                ids[key] = store.add_point(rid, point)
                runs[key] = rid

        run("train base", "train", [("base", make_point(m(0.95, 400_000, **timed(2.0)), family="train", method="train",
                                                        stage="baseline", artifact=base))])
        prune = dict(family="prune", method="global_unstructured", level_name="sparsity", input_checkpoint=base)
        run("prune base", "prune.global_unstructured", [
            ("p0", make_point(m(0.95, 400_000), stage="baseline", level=0.0, artifact=base, **prune)),
            ("p50", make_point(m(0.948, 200_000, **timed(1.5, 1.3, 1.2, 1.4)), stage="variant", level=0.5, artifact=p50,
                               accuracy_std=0.002, accuracy_runs=[0.946, 0.95], **prune)),
            ("p80", make_point(m(0.90, 100_000), stage="variant", level=0.8, artifact=p80, **prune)),
            ("p95", make_point(m(0.10, 40_000), stage="variant", level=0.95, artifact=p95, **prune)),
        ])
        quant = dict(family="quantize", method="fake", level_name="bits", input_checkpoint=base)
        run("quantize base", "quantize.fake", [
            ("q32", make_point(m(0.95, 400_000), stage="baseline", level=32.0, **quant)),
            ("q8", make_point(m(0.949, 100_000, **timed(0.8, 2.5, 1.6, 3.1, "noisy: 3 other processes")),
                              stage="variant", level=8.0, artifact=q8, **quant)),
            ("q4", make_point(m(0.945, 50_000), stage="variant", level=4.0, artifact="", **quant)),  # not saved
        ])
        # compressed twice: quantized from the 50 % pruned model; its speed-up (1.8) is over that model, not base
        run("quantize p50", "quantize.fake", [
            ("qp", make_point(m(0.944, 60_000, **timed(0.9, 1.8, 1.7, 1.9)), family="quantize", method="fake",
                              stage="variant", level=8.0, level_name="bits", input_checkpoint=p50, artifact=qp)),
        ])
        run("measure q8 on onnxruntime", "measure", [
            ("onnx", make_point(m(0.948, 100_000, runtime="onnxruntime", **timed(0.5)), family="measure", method="measure",
                                stage="variant", input_checkpoint=q8, artifact=q8)),
        ])
        # another dataset: a small, very accurate model that must never join digits' table or front
        run("mnist5k", "train", [
            ("other", make_point(m(0.99, 10_000, dataset="mnist5k"), family="train", method="train",
                                 stage="baseline", artifact=other)),
            ("other_base_variant", make_point(m(0.99, 5_000, dataset="mnist5k"), family="prune",
                                              method="global_unstructured", stage="variant", level=0.9,
                                              level_name="sparsity", input_checkpoint=base, artifact="")),
        ])
        store.flush()
    return {"db": str(path), "ids": ids, "runs": runs, "base": base}


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("recommend")
    out = fill_store(root / "rec.duckdb", root)
    with Store(out["db"]) as store:
        out["points"] = store.points(expand=False)
    return out


def ranked(rec) -> list[int]:
    return [int(i) for i in rec.table["point_id"] if i == i]


def row(rec, point_id) -> dict:
    return rec.table[rec.table["point_id"] == point_id].iloc[0].to_dict()


# ---------------------------------------------------------------- ranking and the winner


def test_the_smallest_confirmed_variant_that_fits_wins_and_the_rest_say_what_they_break(lab):
    ids = lab["ids"]
    rec = recommend(lab["points"], ids["base"], Budget(max_drop=1.0, min_smaller=1.5))
    assert rec.best is not None and rec.best["point_id"] == ids["qp"]  # 60 kB, 0.6 points lost
    # fitting and confirmed by size (q8 and its ONNX measurement tie at 100 kB: the more accurate first), then
    # the fitting one without a checkpoint, then those that break something, fewest budgets first
    assert ranked(rec)[:5] == [ids["qp"], ids["q8"], ids["onnx"], ids["p50"], ids["q4"]]
    assert rec.table["fits"].tolist()[:5] == [True] * 5 and not row(rec, ids["q4"])["confirmed"]
    assert row(rec, ids["p80"])["breaks"] == "accuracy -5.00 points (budget: at most 1 lost)"
    assert row(rec, ids["p95"])["breaks"].startswith("chance level: 10.0 % is no better than guessing")
    assert set(ranked(rec)) == {ids[k] for k in ("p50", "p80", "p95", "q8", "q4", "qp", "onnx")}  # no run baseline
    assert row(rec, ids["qp"])["change_points"] == pytest.approx(-0.6, abs=1e-6)
    assert row(rec, ids["qp"])["smaller"] == pytest.approx(400_000 / 60_000)
    assert rec.best["artifact"].endswith("qp") and "smallest of the 4 confirmed variants that fit" in rec.reason


def test_a_size_budget_in_bytes_names_the_size_and_a_fitting_unsaved_variant_is_not_recommended(lab):
    ids = lab["ids"]
    rec = recommend(lab["points"], ids["base"], Budget(max_drop=1.0, max_size_bytes=55_000))
    assert rec.best is None
    assert row(rec, ids["q4"])["fits"] and not row(rec, ids["q4"])["confirmed"]
    assert "no confirmed variant fits: 1 fit" in rec.reason and "saved no checkpoint" in rec.reason
    assert row(rec, ids["q8"])["breaks"] == "size 100,000 B (budget: at most 55,000 B)"


def test_nothing_fits_names_the_budget_that_rules_everything_out(lab):
    rec = recommend(lab["points"], lab["ids"]["base"], Budget(max_drop=1.0, min_smaller=100))
    assert rec.best is None
    assert rec.reason == ("nothing fits: every one of the 7 variants breaks the size budget (size at least 100x "
                          "smaller)")
    mixed = recommend(lab["points"], lab["ids"]["base"], Budget(max_drop=0.1, min_smaller=7))
    assert mixed.reason.startswith("nothing fits: no variant meets every budget at once (accuracy rules out")


def test_a_latency_budget_ranks_by_speed_with_paired_speed_ups_noisy_said_and_chains_unpaired(lab):
    ids = lab["ids"]
    rec = recommend(lab["points"], ids["base"], Budget(max_drop=1.0, min_faster=2.0))
    assert rec.objective == "speed"
    q8, qp, p50 = row(rec, ids["q8"]), row(rec, ids["qp"]), row(rec, ids["p50"])
    assert (q8["faster"], q8["faster_lo"], q8["faster_hi"]) == (2.5, 1.6, 3.1) and q8["timing"] == "paired, noisy"
    # the twice-compressed model's stored speed-up (1.8) is over the pruned model: against base it is 2.0 / 0.9
    assert qp["faster"] == pytest.approx(2.0 / 0.9) and qp["timing"] == "unpaired" and math.isnan(qp["faster_lo"])
    # q8 measured again on ONNX Runtime: no paired timing, so its latency against base timed on torch, said so
    onnx = row(rec, ids["onnx"])
    assert onnx["faster"] == pytest.approx(4.0) and onnx["timing"] == "unpaired vs torch"
    assert ranked(rec)[:3] == [ids["onnx"], ids["q8"], ids["qp"]] and rec.best["point_id"] == ids["onnx"]
    assert p50["breaks"] == "speed 1.30x faster at batch 1 (budget: at least 2x)"
    assert row(rec, ids["p80"])["breaks"].endswith("speed not timed at batch 1 (budget: at least 2x)")
    assert any("noisy" in n for n in rec.notes) and any("unpaired" in n for n in rec.notes)
    latency = recommend(lab["points"], ids["base"], Budget(max_drop=1.0, max_latency_ms=1.0))
    assert [r for r in ranked(latency) if row(latency, r)["fits"]] == [ids["onnx"], ids["q8"], ids["qp"]]


def test_a_runtime_budget_keeps_only_that_runtime(lab):
    ids = lab["ids"]
    rec = recommend(lab["points"], ids["base"], Budget(max_drop=1.0, runtime="onnxruntime"))
    assert rec.best["point_id"] == ids["onnx"]
    assert row(rec, ids["qp"])["breaks"] == "runtime torch (budget: onnxruntime)"


# ---------------------------------------------------------------- honesty and separation


def test_an_estimate_never_wins_however_good_it_looks(lab):
    ids = lab["ids"]
    estimate = pd.DataFrame([{"point_id": np.nan, "estimate": True, "family": "prune", "method": "planner",
                              "stage": "variant", "dataset": "digits", "model": "cnn_s", "runtime": "torch",
                              "input_checkpoint": lab["base"], "artifact": "", "accuracy": 0.95, "size_bytes": 1_000,
                              "run_id": "", "run_name": None}])
    points = pd.concat([lab["points"], estimate], ignore_index=True)
    rec = recommend(points, ids["base"], Budget(max_drop=1.0, min_smaller=1.5))
    guess = rec.table[rec.table["estimate"]].iloc[0]
    assert guess["fits"] and not guess["confirmed"] and guess["rank"] == 5  # after the four confirmed that fit
    assert rec.best["point_id"] == ids["qp"]
    only = recommend(points, ids["base"], Budget(max_drop=1.0, max_size_bytes=5_000))
    assert only.best is None and "1 is an estimate (run it to confirm)" in only.reason
    assert any("estimate" in n for n in rec.notes)


def test_only_the_baselines_dataset_and_lineage_count(lab):
    ids = lab["ids"]
    rec = recommend(lab["points"], ids["base"], Budget(max_drop=100.0))
    assert ids["other"] not in ranked(rec) and ids["other_base_variant"] not in ranked(rec)  # mnist5k
    assert set(rec.front["dataset"]) == {"digits"}
    other = recommend(lab["points"], ids["other"], Budget(max_drop=1.0))
    assert other.table.empty and other.best is None and "no stored variant descends" in other.reason


def test_the_front_leaves_out_chance_level_and_estimates(lab):
    ids = lab["ids"]
    rec = recommend(lab["points"], ids["base"], Budget(max_drop=100.0))
    front = set(rec.front["point_id"].astype(int))
    assert ids["p95"] not in front  # 40 kB but at chance: it would otherwise lead the front
    assert front == {ids["base"], ids["q8"], ids["q4"]}  # measured, so q4 counts though it saved no checkpoint
    assert not rec.table.loc[rec.table["point_id"] == ids["p95"], "fits"].iloc[0]  # not even with 100 points


def test_the_trade_offs_front_is_per_dataset_and_without_chance_level_models(lab):
    shaped = shape_points(lab["points"])
    assert at_chance(shaped)[shaped["point_id"] == lab["ids"]["p95"]].all()
    assert at_chance(shaped).sum() == 1
    front = pareto_points(on_axis(shaped, "size"))
    ids = set(front["point_id"].astype(int))
    assert lab["ids"]["p95"] not in ids
    # mnist5k's 99 % models would dominate every digits model on one mixed front; per dataset each keeps its own
    assert set(front["dataset"]) == {"digits", "mnist5k"} and lab["ids"]["q4"] in ids
    mixed = pareto_points(on_axis(shaped, "size"), per_dataset=False, drop_chance=False)
    assert set(mixed["dataset"]) == {"mnist5k"}


# ---------------------------------------------------------------- bad input, export


@pytest.mark.parametrize("kw, field", [({"max_drop": -1}, "max_drop"), ({"max_drop": 1, "min_smaller": 0}, "min_smaller"),
                                       ({"max_drop": 1, "batch": 3}, "batch"),
                                       ({"max_drop": 1, "max_latency_ms": float("nan")}, "max_latency_ms"),
                                       ({"max_drop": 1, "runtime": " "}, "runtime")])
def test_a_bad_budget_names_its_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        Budget(**kw)


def test_a_baseline_must_exist_and_have_a_checkpoint(lab):
    with pytest.raises(UserError, match="no point 9999"):
        recommend(lab["points"], 9999, Budget(1.0))
    with pytest.raises(UserError, match="saved no checkpoint"):
        recommend(lab["points"], lab["ids"]["q32"], Budget(1.0))


def test_the_comparison_leads_with_the_baseline_and_exports(lab):
    from engine.analysis.exports import export_table

    rec = recommend(lab["points"], lab["ids"]["base"], Budget(max_drop=1.0, min_smaller=1.5))
    table = comparison(rec)
    assert table["rank"].iloc[0] == "baseline" and len(table) == len(rec.table) + 1
    data, mime, ext = export_table(table, "json", title="recommendation")
    assert ext == "json" and json.loads(data)["rows"][1]["point"] == lab["ids"]["qp"]


# ---------------------------------------------------------------- the CLI, on the store file


def test_the_cli_prints_the_ranking_and_the_winner(lab, capsys):
    ids = lab["ids"]
    assert main(["recommend", "--db", lab["db"], "--baseline", str(ids["base"]), "--max-drop", "1",
                 "--min-smaller", "1.5"]) == 0
    out = capsys.readouterr().out
    assert f"recommended: point {ids['qp']} quantize.fake bits 8" in out and "6.67x smaller" in out
    assert "accuracy -5.00 points (budget: at most 1 lost)" in out
    assert main(["recommend", "--db", lab["db"], "--baseline", str(ids["base"]), "--max-drop", "1",
                 "--min-smaller", "100"]) == 0
    assert "no recommendation: nothing fits: every one of the 7 variants breaks the size budget" in \
        capsys.readouterr().out
    assert main(["recommend", "--db", lab["db"], "--baseline", str(ids["base"]), "--max-drop", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["best"]["point_id"] == ids["qp"]  # q4 is smaller but saved no checkpoint
    assert doc["best"]["confirmed"] and doc["objective"] == "size"


def test_the_cli_refuses_a_bad_budget_by_name(lab, capsys):
    assert main(["recommend", "--db", lab["db"], "--baseline", "1", "--max-drop", "-2"]) == 2
    assert "max_drop" in capsys.readouterr().err
