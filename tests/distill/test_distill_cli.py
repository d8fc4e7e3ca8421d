"""`python -m engine distill` and `distill-methods` as a user runs them."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from engine.cli.main import main
from engine.core.context import RunContext
from engine.core.options import config_options
from engine.core.point import CONTRACT_FIELDS, METRIC_FIELDS
from engine.methods.measure import MeasureTask
from engine.methods.registry import family_methods
from engine.methods.tasks import run_task
from engine.model.checkpoint import load_checkpoint

README_FLAGS = ["--teacher", "--student", "--method", "--temperature", "--alpha", "--beta", "--student-layers",
                "--teacher-layers", "--dataset", "--student-init", "--width", "--train-subset", "--epochs", "--out",
                "--no-latency"]


def _distill(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["distill", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_kd_end_to_end_gives_contract_points_and_a_student_that_measures_the_same(digits_teacher, tmp_path, capsys):
    out = tmp_path / "kd"
    code, stdout, err = _distill(capsys, "--teacher", digits_teacher, "--method", "kd", "--epochs", "1",
                                 "--temperature", "2", "--train-subset", "200", "--no-latency", "--out", str(out),
                                 "--json")
    assert code == 0, err
    teacher, student = json.loads(stdout)
    for p in (teacher, student):
        assert set(CONTRACT_FIELDS) | set(METRIC_FIELDS) <= set(p)
        assert p["family"] == "distill" and p["method"] == "kd" and p["input_checkpoint"] == digits_teacher
        assert p["level"] is None and p["latency_ms_b1"] is None
    assert (teacher["stage"], teacher["role"], teacher["artifact"]) == ("baseline", "teacher", digits_teacher)
    assert (student["stage"], student["role"], student["artifact"]) == ("variant", "student", str(out))
    assert student["params"]["temperature"] == 2.0 and student["params"]["alpha"] == 0.9
    assert student["params"]["train_subset"] == 200 and student["teacher_accuracy"] == teacher["accuracy"]
    # the artifact reloads with the measure task to the same accuracy
    (measured,) = run_task("measure", MeasureTask(checkpoint=str(out), latency=False), RunContext())
    assert measured.accuracy == student["accuracy"] and measured.stage == "variant"
    assert measured.extra["lineage_text"] == "kd"


def test_out_is_never_an_input_checkpoint(digits_teacher, digits_student, tmp_path, capsys):
    before = (load_checkpoint(digits_teacher)[0].state_dict(), (tmp_path / "x").exists())
    for args, words in [(["--out", digits_teacher], "is the input checkpoint"),
                        (["--out", f"{digits_teacher}/student"], "is inside the input checkpoint"),
                        (["--student-init", digits_student, "--out", digits_student], "is the input checkpoint")]:
        code, _, err = _distill(capsys, "--teacher", digits_teacher, "--epochs", "0", "--no-latency", *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and words in lines[0], err
    model, _ = load_checkpoint(digits_teacher)  # still loads, with the same weights
    assert all((model.state_dict()[k] == v).all() for k, v in before[0].items())
    load_checkpoint(digits_student)


def test_a_setting_of_another_method_is_refused_by_name(digits_teacher, capsys):
    code, _, err = _distill(capsys, "--teacher", digits_teacher, "--method", "kd", "--beta", "3")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "--beta does not apply to --method kd; it takes --alpha, --temperature" in lines[0]
    code, _, err = _distill(capsys, "--teacher", digits_teacher, "--method", "simkd", "--student-layers", "fc")
    assert code == 2 and "--student-layers does not apply to --method simkd; it takes --factor, --projector" in err


def test_help_offers_the_readme_flags_and_every_setting_of_every_method(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["distill", "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0
    flags = set(README_FLAGS) | {"--no-save", "--overwrite", "--lr", "--batch-size", "--seed", "--augment"}
    for method in family_methods("distill").items():
        flags |= {o.flag for o in config_options(method[1].config)}
    missing = sorted(flags - set(re.findall(r"--[a-z0-9-]+", text)))
    assert not missing and "--param" not in text


def test_distill_methods_lists_every_method_with_its_paper_and_settings(capsys):
    assert main(["distill-methods", "--json"]) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(family_methods("distill").names())
    assert [(s["name"], s["default"]) for s in rows["dkd"]["settings"]] == [
        ("alpha", 1.0), ("beta", 8.0), ("temperature", 4.0), ("warmup_epochs", 1.0)]
    assert "Reused Teacher Classifier" in rows["simkd"]["description"]
    assert [(s["name"], s["default"]) for s in rows["simkd"]["settings"]] == [("projector", "linear"), ("factor", 2)]
    assert rows["crd"]["settings"][-1]["flag"] == "--nce-momentum"  # --momentum is SGD's


@pytest.mark.parametrize("method", family_methods("distill").names())
def test_every_setting_is_declared_with_a_help_line(method):
    config = family_methods("distill").get(method).config
    for f in dataclasses.fields(config):
        assert f.metadata.get("help"), f"{method}.{f.name} has no param(..., help)"
