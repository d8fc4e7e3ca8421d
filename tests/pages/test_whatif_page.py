"""The What-if page against the pre-filled store: it renders the checkpoint's measured curves with the what-if
point, a slider move changes the accuracy and the chart, simulated bits say so, and Save as a run queues a
`whatif` job that finishes with one point measured on the whole test split. A move answers with an estimate
at once and is measured in the background: `settle` reruns the page until the measurement has replaced it."""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest

from tests.pages.conftest import chart, open_page

PAGE = "pages/whatif.py"


def star(at: AppTest) -> tuple[float, float]:
    trace = chart(at)["data"][-1]
    assert trace["name"].startswith("what-if")
    return trace["x"][0], trace["y"][0]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label))


def delta(at: AppTest, label: str) -> str:
    return next(m.delta for m in at.metric if m.label.startswith(label))


def settle(at: AppTest, timeout: float = 60) -> AppTest:
    """Reruns the page until this position is measured (or refused), as its polling fragment would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if at.exception or at.error or any(m.label.endswith("measured") for m in at.metric
                                           if m.label.startswith("Accuracy")):
            return at
        time.sleep(0.2)
        at.run()
    raise AssertionError("the position was not measured in time")


def test_the_page_draws_the_checkpoints_curves_and_the_what_if_point(db, lab_store):
    at = settle(open_page(PAGE, timeout=90))
    assert at.selectbox(key="whatif_checkpoint").value == lab_store["checkpoint"]  # the trained model first
    names = [t["name"] for t in chart(at)["data"]]
    assert names[-2:] == ["checkpoint (same subset)", "what-if (250 test images)"]
    assert {"prune cnn_s (global_unstructured)", "fake-quant cnn_s (fake)", "train cnn_s digits (train)"} <= set(names)
    assert metric(at, "Compression") == "1.0x"
    assert not delta(at, "Size") and not delta(at, "Accuracy")  # no change drawn as a +0.0 rise
    captions = " ".join(c.value for c in at.caption)
    assert "on 250 of 360 test images" in captions and "estimated" in captions


def test_moving_the_sliders_changes_the_accuracy_size_and_chart(db):
    at = settle(open_page(PAGE, timeout=90))
    before, size_before = metric(at, "Accuracy"), star(at)
    settle(at.slider(key="whatif_sparsity").set_value(95).run())
    assert not at.exception, at.exception
    assert metric(at, "Accuracy") != before and star(at) != size_before
    assert star(at)[0] < size_before[0]  # sparse storage is smaller
    assert delta(at, "Size").startswith("-") and delta(at, "Size").endswith(" KiB")
    settle(at.slider(key="whatif_bits").set_value(4).run())
    assert not at.exception, at.exception
    assert float(metric(at, "Compression").rstrip("x")) > 8
    assert "Simulated quantization" in " ".join(c.value for c in at.caption)
    settle(at.radio(key="whatif_mode").set_value("channels").run())
    assert not at.exception and metric(at, "Latency b1").endswith("ms") and "(measured)" in at.metric[3].label
    settle(at.slider(key="whatif_sparsity").set_value(99).run())  # 99% of every layer's channels: refused, by name
    assert not at.exception and any("would remove every channel" in e.value for e in at.error)


def test_save_as_a_run_queues_a_whatif_job_that_finishes_with_one_point(db, lab_store, tmp_path, monkeypatch):
    monkeypatch.setattr("engine.model.outputs.CHECKPOINT_ROOT", str(tmp_path / "checkpoints"))
    at = open_page(PAGE, timeout=90)
    at.slider(key="whatif_sparsity").set_value(50).run()
    at.slider(key="whatif_bits").set_value(4).run()
    at.button(key="whatif_save").click().run()
    assert not at.exception, at.exception
    assert any("Queued run" in s.value for s in at.success), [e.value for e in at.error]

    from engine.run.jobs import get_runner

    runner = get_runner(db)
    assert runner.wait(timeout=120)
    run = runner.store.list_runs(kind="whatif").iloc[0]
    assert run["status"] == "finished" and run["n_points"] == 1, run["error"]
    [point] = runner.store.run_points(run["run_id"])
    assert point["method"] == "whatif" and point["simulated"] and point["input_checkpoint"] == lab_store["checkpoint"]
    assert point["params"] == {"sparsity": 0.5, "mode": "unstructured", "bits": 4, "granularity": "per_channel"}
    assert point["artifact"].startswith(str(tmp_path / "checkpoints"))
    at.run()  # the saved run's point joins this checkpoint's curves
    assert any(t["name"].startswith("what-if cnn_s") for t in chart(at)["data"][:-2])
