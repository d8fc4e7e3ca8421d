"""Store fixtures: a fresh store file per test, and a point shaped like the ones tasks log."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from engine.core.point import Measurement
from engine.methods.tasks import make_point


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "runs.duckdb")


@pytest.fixture
def store(db_path):
    from store import Store

    s = Store(db_path)
    yield s
    s.close()


def fake_measurement(**overrides) -> Measurement:
    """A Measurement with plausible values, for storage tests only (nothing here was measured)."""
    values = dict(accuracy=0.9, top5=0.99, loss=0.31, params_total=1000, params_nonzero=600, sparsity=0.4, bits=8.0,
                  size_bytes=700, size_fp32_bytes=4000, file_bytes=1200, macs=50_000, latency_ms_b1=None,
                  latency_p90_ms_b1=None, latency_ms_b32=None, latency_p90_ms_b32=None, threads=2,
                  backend="fp32 eager cpu", simulated=False)
    values.update(overrides)
    return Measurement(**values)


@pytest.fixture
def point() -> dict:
    return make_point(fake_measurement(), family="prune", method="prune", params={"sparsity": 0.4, "schedule": {"steps": 3}},
                      stage="variant", level=0.4, level_name="sparsity", artifact="checkpoints/x", accuracy_std=0.002,
                      input_checkpoint="checkpoints/in", note="x").to_dict()


class Background:
    """A child process whose stdout and stderr are collected by a thread, to wait for a marker."""

    def __init__(self, args: list[str], cwd: str | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     cwd=cwd)
        self.output = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := self.proc.stdout.read1(4096):
            self.output += chunk

    def wait_for(self, marker: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while marker.encode() not in self.output:
            if self.proc.poll() is not None and marker.encode() not in self.output:
                self._reader.join(2)
                if marker.encode() in self.output:
                    return
                raise AssertionError(f"process exited ({self.proc.returncode}) before {marker!r}:\n"
                                     f"{self.output.decode(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {marker!r} within {timeout} s:\n{self.output.decode(errors='replace')[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def background():
    started: list[Background] = []

    def start(*args: str, cwd: str | None = None) -> Background:
        b = Background(list(args), cwd)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()
