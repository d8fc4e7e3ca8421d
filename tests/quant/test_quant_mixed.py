"""Greedy mixed precision and per-layer sensitivity on the trained default CNN."""

from __future__ import annotations

import pytest

from engine.context import RunContext
from engine.quant import MixedPrecisionConfig, SensitivityConfig, quantize
from engine.quant.mixed import next_lower
from engine.tasks import open_checkpoint


class RecordingContext(RunContext):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []

    def log_event(self, message: str, level: str = "info") -> None:
        self.events.append((level, message))


@pytest.fixture(scope="module")
def teacher(teacher_checkpoint):
    model, _, data = open_checkpoint(teacher_checkpoint)
    return model, data


@pytest.fixture(scope="module")
def greedy_path(teacher):
    model, data = teacher
    ctx = RecordingContext()
    cfg = MixedPrecisionConfig(bits=(8, 4), max_accuracy_drop=0.03, val_samples=200, latency=False)
    return [p.to_dict() for p in quantize(model, data, cfg, ctx)], ctx


def test_the_greedy_path_is_monotone_in_average_bits(greedy_path):
    points, _ = greedy_path
    assert len(points) >= 3
    avg = [p["level"] for p in points]
    assert all(a > b for a, b in zip(avg, avg[1:]))
    assert all(p["stage"] == "step" and p["level_name"] == "average_bits" for p in points)
    assert [p["bits"] for p in points] == pytest.approx(avg)  # measure's bits is the same weighted mean
    for key in ("size_bytes", "file_bytes"):
        sizes = [p[key] for p in points]
        assert all(a > b for a, b in zip(sizes, sizes[1:])), key


def test_each_step_lowers_one_layer_by_one_rung_and_records_the_assignment(greedy_path):
    points, _ = greedy_path
    first = points[0]["bits_per_layer"]
    assert set(first.values()) == {8} and len(first) == 6
    for before, after in zip(points, points[1:]):
        a, b = before["bits_per_layer"], after["bits_per_layer"]
        changed = [k for k in a if a[k] != b[k]]
        assert changed == [after["lowered"]]
        assert b[changed[0]] == next_lower([8, 4], a[changed[0]]) == 4
    assert [p["step"] for p in points] == list(range(len(points)))
    assert all(p["simulated"] and "mixed-precision" in p["backend"] for p in points)


def test_the_search_stops_at_the_accuracy_drop_it_was_given(greedy_path):
    points, ctx = greedy_path
    start = points[0]["val_accuracy"]
    assert all(start - p["val_accuracy"] <= 0.03 for p in points)
    assert any(m.startswith("stopped:") for _, m in ctx.events)


def test_the_search_stops_at_a_target_average_width(digits_checkpoint, ctx):
    model, _, data = open_checkpoint(digits_checkpoint)
    cfg = MixedPrecisionConfig(bits=(8, 4), target_bits=7.0, max_accuracy_drop=1.0, val_samples=100, latency=False)
    points = quantize(model, data, cfg, ctx)
    assert points[-1].level <= 7.0 < points[-2].level


def test_sensitivity_quantizes_one_layer_at_a_time(teacher, ctx):
    model, data = teacher
    points = [p.to_dict() for p in quantize(model, data, SensitivityConfig(bits=(2,), latency=False), ctx)]
    reference, rows = points[0], points[1:]
    assert reference["stage"] == "baseline" and reference["bits"] == 32 and reference["level"] == 32
    layers = [p["layer"] for p in rows]
    assert len(layers) == 6 and len(set(layers)) == 6
    assert all(p["stage"] == "variant" and p["level"] == 2 and p["level_name"] == "bits" for p in rows)
    assert all(p["artifact"] == "" for p in points)  # sensitivity saves nothing
    for p in rows:
        assert 2 < p["bits"] < 32 and p["size_bytes"] < reference["size_bytes"]
        assert p["accuracy_drop"] == pytest.approx(reference["accuracy"] - p["accuracy"])
    # the layers differ: 2 bits in the first conv (9 weights per filter) costs far more than in the last
    drops = {p["layer"]: p["accuracy_drop"] for p in rows}
    assert drops["features.0.0.0"] > 0.05 > drops["features.2.1.0"]


def test_the_ladder_steps_down_one_rung_at_a_time():
    assert next_lower([8, 6, 4, 2], 8) == 6 and next_lower([8, 6, 4, 2], 5) == 4 and next_lower([8, 6, 4, 2], 2) is None
