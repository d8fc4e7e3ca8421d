"""Per-class results: measure()'s confusion matrix checked independently (its trace over its total is the
point's accuracy exactly, its rows count each class's test images, and it equals scikit-learn's matrix of
the same predictions), its path through the point and the store, and the per-class table beside a baseline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torch import nn

from engine.analysis.classes import (
    NOT_RECORDED,
    baseline_id,
    class_accuracy,
    class_report,
    class_table,
    matrix_of,
    overall_accuracy,
)
from engine.core.point import MEASUREMENT_FIELDS, METRIC_FIELDS, Point
from engine.deploy.measure import measure
from engine.methods.prune.sweep import mean_of_runs
from engine.model.data import Dataset, Split
from engine.model.train import confusion_matrix, scores


def _data(n: int = 301) -> Dataset:
    """Four classes of uneven sizes (class 3 is rare), so a row sum that is wrong shows."""
    g = torch.Generator().manual_seed(1)
    y = torch.multinomial(torch.tensor([0.4, 0.3, 0.25, 0.05]), n, replacement=True, generator=g)
    x = torch.rand(n, 1, 4, 4, generator=g) + y[:, None, None, None] * 0.15  # learnable a little
    split = Split(x, y, (0.0,), (1.0,), 1.0)
    return Dataset("tiny4", split, split, split, 4, (1, 4, 4), ["ant", "bee", "cat", "dog"])


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 4))


def test_the_matrix_is_sklearns_and_its_trace_is_the_accuracy_exactly():
    data = _data()
    model = _model()
    m = measure(model, data, latency=False)
    x, y = data.test.tensors()
    with torch.inference_mode():
        pred = model(x).argmax(dim=1)
    expected = sk_confusion_matrix(y.numpy(), pred.numpy(), labels=list(range(4)))
    assert m.confusion == expected.tolist()
    assert all(isinstance(v, int) for r in m.confusion for v in r)
    counts = np.bincount(y.numpy(), minlength=4).tolist()
    assert [sum(r) for r in m.confusion] == counts and counts[3] < counts[0]  # row sums: each class's test images
    trace, total = sum(m.confusion[i][i] for i in range(4)), sum(map(sum, m.confusion))
    assert total == len(y) == 301
    # scores() takes the mean in float32: the same number, rounded the same way, exactly
    assert m.accuracy == float(np.float32(trace / total))
    assert overall_accuracy(m.confusion) == pytest.approx(m.accuracy, abs=1e-7)


def test_confusion_matrix_takes_the_top1_as_scores_does_and_counts_classes_never_predicted():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(500, 7, generator=g)
    logits[:, 6] -= 100  # class 6 is never predicted
    y = torch.randint(0, 7, (500,), generator=g)
    m = confusion_matrix(logits, y)
    assert m == sk_confusion_matrix(y.numpy(), logits.argmax(1).numpy(), labels=list(range(7))).tolist()
    assert [r[6] for r in m] == [0] * 7 and sum(m[6]) == int((y == 6).sum())
    assert scores(logits, y)["accuracy"] == float(np.float32(sum(m[i][i] for i in range(7)) / 500))
    assert confusion_matrix(logits[:0], y[:0], 3) == [[0] * 3] * 3


def test_the_matrix_rides_on_the_point_and_is_stored_in_extra_not_as_a_column(tmp_path):
    from store import Store

    m = measure(_model(), _data(), latency=False)
    assert "confusion" in MEASUREMENT_FIELDS and "confusion" not in METRIC_FIELDS
    point = Point("measure", "measure", "baseline", m)
    d = point.to_dict()
    assert d["confusion"] == m.confusion
    back = Point.from_dict(d)
    assert back.measurement.confusion == m.confusion and "confusion" not in back.extra
    with pytest.raises(ValueError, match="confusion"):
        Point("measure", "measure", "baseline", m, extra={"confusion": []})
    s = Store(str(tmp_path / "runs.duckdb"))
    try:
        run_id = s.create_run("measure", {})
        s.add_point(run_id, point)
        df = s.points(run_id, expand=False)
        assert "confusion" not in df.columns
        assert json.loads(df["extra"].iloc[0])["confusion"] == m.confusion
        assert matrix_of(df["extra"].iloc[0]) == m.confusion
        (logged,) = s.run_points(run_id)
        assert Point.from_dict(logged).measurement.confusion == m.confusion
    finally:
        s.close()


def test_repeats_sum_their_matrices_so_the_trace_gives_the_mean_accuracy():
    data = _data()
    runs = [measure(_model(seed), data, latency=False) for seed in (0, 1, 2)]
    mean = mean_of_runs(runs)
    assert mean.confusion == np.sum([r.confusion for r in runs], axis=0).tolist()
    assert overall_accuracy(mean.confusion) == pytest.approx(mean.accuracy, abs=1e-7)
    expected = np.mean([class_accuracy(r.confusion) for r in runs], axis=0)
    assert class_accuracy(mean.confusion) == pytest.approx(expected.tolist())
    assert mean_of_runs([runs[0], runs[1].__class__(**{**runs[1].to_dict(), "confusion": None})]).confusion is None


def test_the_class_table_puts_the_most_hurt_class_first():
    base = [[90, 10, 0], [5, 95, 0], [0, 0, 50]]
    variant = [[60, 40, 0], [5, 95, 0], [0, 10, 40]]
    t = class_table(variant, base, ["ant", "bee", "cat"])
    assert list(t["class"]) == ["ant", "cat", "bee"]
    assert list(t["change (points)"]) == pytest.approx([-30.0, -20.0, 0.0])
    assert list(t["baseline accuracy"]) == pytest.approx([0.9, 1.0, 0.95])
    assert list(t["test images"]) == [100, 50, 100]
    assert list(t["mostly taken for"]) == ["bee", "bee", "ant"]
    alone = class_table(variant, None)
    assert list(alone["class"]) == ["0", "2", "1"] and alone["baseline accuracy"].isna().all()


def _frame(rows: list[dict]) -> pd.DataFrame:
    defaults = {"run_name": "r", "family": "prune", "method": "m", "level": None, "level_name": "", "dataset": "d",
                "runtime": "torch", "input_checkpoint": "", "artifact": "", "extra": "{}"}
    return pd.DataFrame([{**defaults, **r} for r in rows])


def test_the_baseline_is_the_runs_baseline_else_the_point_of_the_input_checkpoint():
    m = json.dumps({"confusion": [[3, 1], [0, 4]]})
    points = _frame([
        {"point_id": 1, "run_id": "t", "family": "train", "stage": "variant", "artifact": "/ck/model", "extra": m},
        {"point_id": 2, "run_id": "p", "stage": "baseline", "input_checkpoint": "/ck/model", "extra": m},
        {"point_id": 3, "run_id": "p", "stage": "variant", "input_checkpoint": "/ck/model", "level": 0.5,
         "extra": json.dumps({"confusion": [[2, 2], [1, 3]]})},
        {"point_id": 4, "run_id": "p", "stage": "variant", "runtime": "onnxruntime", "input_checkpoint": "/ck/./model"},
        {"point_id": 5, "run_id": "x", "stage": "variant", "dataset": "other", "input_checkpoint": "/ck/model"},
    ])
    assert baseline_id(points, 3) == 2  # the run's own baseline, same runtime
    assert baseline_id(points, 4) == 1  # no onnxruntime baseline in its run: the trained model's point
    assert baseline_id(points, 2) == 1  # a baseline compares with what it started from
    assert baseline_id(points, 5) is None and baseline_id(points, 1) is None
    r = class_report(points, 3, class_names=["no", "yes"])
    assert r.baseline_id == 2 and r.matrix == [[2, 2], [1, 3]] and r.baseline_matrix == [[3, 1], [0, 4]]
    assert list(r.table["class"]) == ["no", "yes"] and list(r.table["change (points)"]) == pytest.approx([-25, -25])
    old = class_report(points, 4)
    assert not old.found and NOT_RECORDED in old.notes[0] and old.table.empty
    no_base = class_report(points, 2, class_names=["a"])  # wrong length: indices instead
    assert no_base.class_names == ["0", "1"] and no_base.baseline_id == 1
