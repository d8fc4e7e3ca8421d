"""`python -m engine` as a user runs it: JSON output, one-line errors. One test goes through a real
subprocess (the entry point, the exit code, stdout and stderr as a shell sees them); the others call the
same `main` in this process (the `engine_main` fixture, tests/conftest.py), which is what the entry point runs,
without paying torch's import each time."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.core.point import METRIC_FIELDS


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """A real `python -m engine` process."""
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def test_datasets_and_models_are_listed(engine_main):
    out = engine_main("datasets", "--json")
    assert out.returncode == 0
    rows = {r["name"]: r["availability"] for r in json.loads(out.stdout)}
    assert rows["mnist5k"] == "embedded" and "cifar10" in rows
    out = engine_main("models")
    assert out.returncode == 0 and "resnet56" in out.stdout and "efficientnet_b0" in out.stdout


def test_train_then_measure_print_the_metric_names(tmp_path, engine_main):
    ck = tmp_path / "ck"
    out = run_cli("train", "--dataset", "digits", "--model", "cnn_s", "--epochs", "1", "--out", str(ck), "--json")
    assert out.returncode == 0, out.stderr
    trained = json.loads(out.stdout)
    assert set(METRIC_FIELDS) <= set(trained) and trained["artifact"] == str(ck)
    assert trained["family"] == "train" and trained["stage"] == "baseline" and trained["input_checkpoint"] == ""
    assert trained["latency_ms_b1"] > 0 and trained["accuracy"] > 0.3
    out = engine_main("measure", "--checkpoint", str(ck), "--json", "--no-latency")
    assert out.returncode == 0, out.stderr
    measured = json.loads(out.stdout)
    assert measured["accuracy"] == trained["accuracy"] and measured["params_total"] == trained["params_total"]
    assert measured["input_checkpoint"] == str(ck) and measured["lineage_text"] == "train"
    # a second train into the same directory is refused, and the first checkpoint is untouched
    again = engine_main("train", "--dataset", "digits", "--model", "cnn_s", "--epochs", "1", "--out", str(ck))
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    replaced = engine_main("train", "--dataset", "digits", "--model", "cnn_s", "--epochs", "1", "--seed", "3",
                           "--out", str(ck), "--overwrite", "--no-latency", "--json")
    assert replaced.returncode == 0, replaced.stderr  # this tool made it, so --overwrite may replace it
    assert json.loads(replaced.stdout)["params"]["seed"] == 3


def test_json_output_is_strict_json_with_null_for_missing_numbers(tmp_path, engine_main):
    ck = tmp_path / "ck"
    out = engine_main("train", "--dataset", "digits", "--model", "cnn_s", "--epochs", "0", "--out", str(ck),
                      "--no-latency", "--json")
    assert out.returncode == 0, out.stderr
    assert "NaN" not in out.stdout and "Infinity" not in out.stdout
    point = json.loads(out.stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert point["latency_ms_b1"] is None


def test_errors_exit_nonzero_with_one_line(tmp_path, engine_main):
    for args, words in [(("measure", "--checkpoint", str(tmp_path / "nope")), "does not exist"),
                        (("train", "--dataset", "cifar10", "--data-root", str(tmp_path)), "--download"),
                        (("train", "--model", "resnet9"), "unknown architecture 'resnet9'"),
                        (("train", "--dataset", "digits", "--lr", "-1"), "lr must be in"),
                        (("train", "--dataset", "digits", "--epochs", "three"), "--epochs must be a whole number"),
                        (("train", "--seed", "99999999999999999999999"), "seed must be in"),
                        (("measure", "--checkpoint", str(tmp_path), "--epochs", "2"), "unrecognized arguments")]:
        out = engine_main(*args)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], out.stderr


def test_a_full_disk_is_one_line_naming_the_file_and_exit_2(monkeypatch, capsys):
    import errno

    import engine.cli.main as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "checkpoints/x/model.safetensors")

    monkeypatch.setattr(cli, "cmd_models", full)
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no space left on the device (checkpoints/x/model.safetensors): free space or choose "
                   "another --out / --db"]


def test_show_and_runs_json_are_strict_with_null_for_nan(tmp_path, capsys):
    import engine.cli.main as cli
    from store import Store

    db = str(tmp_path / "s.duckdb")
    with Store(db) as store:
        run_id = store.create_run("train", {"lr": float("nan")})
        store.log_metrics(run_id, {"loss": float("nan")}, step=1)
        store.add_point(run_id, {"accuracy": float("nan"), "loss": float("inf"), "method": "m", "params": {}})
    for argv in (["show", run_id, "--db", db, "--json"], ["runs", "--db", db, "--json"]):
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert "NaN" not in out and "Infinity" not in out
        json.loads(out, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
