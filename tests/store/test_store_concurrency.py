"""Many threads write and read through one store at once: no lost rows, no conflicts, no crashes."""

from __future__ import annotations

import threading

THREADS, ROWS = 8, 1000


def run_threads(target, n: int) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def wrapped(i: int) -> None:
        try:
            start.wait()
            target(i)
        except BaseException as e:  # noqa: BLE001 - collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_eight_threads_times_a_thousand_metric_rows_are_all_present(store):
    run_ids = [store.create_run("train", {}) for _ in range(THREADS)]

    def log(i: int) -> None:
        for step in range(ROWS):
            store.log_metrics(run_ids[i], {"loss": i * ROWS + step}, step=step)

    assert run_threads(log, THREADS) == []
    history = store.metric_history(run_ids)
    assert len(history) == THREADS * ROWS
    for i, run_id in enumerate(run_ids):
        rows = history[history.run_id == run_id]
        assert list(rows.step) == list(range(ROWS))
        assert list(rows.value) == [float(i * ROWS + s) for s in range(ROWS)]
    assert store._writer.dropped == 0


def test_threads_updating_the_same_run_while_others_read_do_not_conflict(store, point):
    run_id = store.create_run("train", {})
    store.start_run(run_id)
    seen: list[int] = []

    def work(i: int) -> None:
        for k in range(200):
            if i < 4:  # writers: progress of one row from four threads, events, points
                store.set_progress(run_id, k / 200, f"thread {i}")
                store.log_event(run_id, f"{i}:{k}")
                if k % 50 == 0:
                    store.add_point(run_id, point)
            elif k % 20 == 0:  # readers: the queries a page polls with
                seen.append(len(store.list_runs()))
                store.points(run_id)
                store.latest_metrics(run_id)
                store.get_run(run_id)

    assert run_threads(work, 8) == []
    assert store.end_run(run_id, "finished")
    assert len(store.events(run_id)) == 4 * 200
    assert len(store.run_points(run_id)) == 4 * 4
    assert store.get_run(run_id)["status"] == "finished" and set(seen) == {1}


def test_runs_created_from_many_threads_get_distinct_ids(store):
    ids: list[str] = []

    def create(i: int) -> None:
        for _ in range(25):
            ids.append(store.create_run("train", {"thread": i}))

    assert run_threads(create, 8) == []
    assert len(set(ids)) == 200 and len(store.list_runs()) == 200
