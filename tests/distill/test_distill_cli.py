"""`python -m engine distill` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.cli import main
from engine.distill import DISTILLERS
from engine.measure import METRIC_FIELDS


def test_distill_prints_a_json_list_of_points(teacher_checkpoint, tmp_path):
    out = tmp_path / "student"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "distill", "--teacher", teacher_checkpoint, "--student", "cnn_s",
         "--method", "dkd", "--epochs", "1", "--temperature", "2", "--beta", "4", "--param", "warmup_epochs=0.5",
         "--train-subset", "300", "--no-latency", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (point,) = json.loads(proc.stdout)
    assert set(METRIC_FIELDS) <= set(point)
    assert point["method"] == "dkd" and point["checkpoint"] == str(out) and (out / "model.safetensors").is_file()
    assert point["params"]["temperature"] == 2.0 and point["params"]["beta"] == 4.0
    assert point["params"]["warmup_epochs"] == 0.5 and point["params"]["alpha"] == 1.0


def test_a_setting_the_method_lacks_is_one_line_error(teacher_checkpoint, capsys):
    code = main(["distill", "--teacher", teacher_checkpoint, "--method", "kd", "--beta", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "method 'kd' has no setting beta" in err[0]


def test_distill_methods_lists_every_method_with_its_settings(capsys):
    assert main(["distill-methods", "--json"]) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(DISTILLERS.names())
    assert rows["dkd"]["settings"] == {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 1.0}
    assert "Reused Teacher Classifier" in rows["simkd"]["description"]
