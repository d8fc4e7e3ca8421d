"""torch.fx tracing beside forwards in other threads (engine/deploy/fx_threads.py).

Without it, a forward in another thread during a trace is routed into the tracer ("module is not installed
as a submodule") or lands in the traced graph; this happened between the What-if's background measurement
and a job's BatchNorm folding."""

from __future__ import annotations

import threading

import torch
from torch import fx, nn

import engine.deploy  # noqa: F401  (installs the thread-safe tracing)
from engine.deploy.fx_threads import TRACE_LOCK


def small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


def test_a_forward_in_another_thread_neither_fails_nor_joins_a_trace():
    torch.manual_seed(0)
    traced, other = small(), small()
    x = torch.randn(2, 1, 8, 8)
    expected = other(x)
    alone = [n.op for n in fx.symbolic_trace(traced).graph.nodes]
    errors: list[BaseException] = []
    stop = threading.Event()
    outputs = []

    def forwards():
        try:
            while not stop.is_set():
                outputs.append(other(x))
        except BaseException as e:  # noqa: BLE001  (the test reports whatever the thread met)
            errors.append(e)

    worker = threading.Thread(target=forwards)
    worker.start()
    try:
        graphs = [[n.op for n in fx.symbolic_trace(traced).graph.nodes] for _ in range(200)]
    finally:
        stop.set()
        worker.join()
    assert not errors, errors[0]
    assert outputs and all(torch.equal(o, expected) for o in outputs)
    assert all(g == alone for g in graphs)  # every trace holds its own model's calls only


def test_traces_in_two_threads_take_turns():
    models = [small(), small()]
    alone = [n.op for n in fx.symbolic_trace(models[0]).graph.nodes]
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def trace(model):
        try:
            for _ in range(50):
                results.append([n.op for n in fx.symbolic_trace(model).graph.nodes])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=trace, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 100 and all(r == alone for r in results)
    assert TRACE_LOCK.acquire(blocking=False)  # released after every trace
    TRACE_LOCK.release()
