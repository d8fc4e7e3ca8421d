"""`python -m engine` as a user runs it: real subprocesses, JSON output, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.measure import METRIC_FIELDS


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def test_datasets_and_models_are_listed():
    out = run_cli("datasets", "--json")
    assert out.returncode == 0
    rows = {r["name"]: r["availability"] for r in json.loads(out.stdout)}
    assert rows["mnist5k"] == "embedded" and "cifar10" in rows
    out = run_cli("models")
    assert out.returncode == 0 and "resnet56" in out.stdout and "efficientnet_b0" in out.stdout


def test_train_then_measure_print_the_metric_names(tmp_path):
    ck = tmp_path / "ck"
    out = run_cli("train", "--dataset", "digits", "--model", "cnn_s", "--epochs", "1", "--out", str(ck), "--json")
    assert out.returncode == 0, out.stderr
    trained = json.loads(out.stdout)
    assert set(METRIC_FIELDS) <= set(trained) and trained["checkpoint"] == str(ck)
    assert trained["latency_ms_b1"] > 0 and trained["accuracy"] > 0.3
    out = run_cli("measure", "--checkpoint", str(ck), "--json", "--no-latency")
    assert out.returncode == 0, out.stderr
    measured = json.loads(out.stdout)
    assert measured["accuracy"] == trained["accuracy"] and measured["params_total"] == trained["params_total"]


def test_errors_exit_nonzero_with_one_line(tmp_path):
    for args, words in [(("measure", "--checkpoint", str(tmp_path / "nope")), "does not exist"),
                        (("train", "--dataset", "cifar10", "--data-root", str(tmp_path)), "--download"),
                        (("train", "--model", "resnet9"), "unknown architecture 'resnet9'"),
                        (("train", "--dataset", "digits", "--lr", "-1"), "lr must be in")]:
        out = run_cli(*args)
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], out.stderr
