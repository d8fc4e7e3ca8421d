"""Launch's (and What-if's) checkpoint list, the app's output folders and repeats of deterministic configs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from engine.core.errors import UserError
from engine.model.checkpoint import CheckpointMeta, write_checkpoint
from engine.run.launch import app_config, checkpoint_rows, repeats_note


def _ckpt(path: Path, created: float, lineage: list[dict]) -> str:
    meta = CheckpointMeta(arch="cnn_l", num_classes=10, in_channels=1, image_size=28, dataset="mnist5k",
                          class_names=[str(i) for i in range(10)], lineage=lineage, created=created)
    write_checkpoint(path, b"weights", meta)
    return str(path)


TRAIN = {"family": "train", "method": "train", "params": {}}


def _points(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"artifact": a, "created_at": pd.Timestamp(t, unit="s"), "accuracy": acc, "run_id": f"r{i}"}
                         for i, (a, t, acc) in enumerate(rows)])


def test_the_default_checkpoint_is_the_newest_trained_model_and_variants_sit_under_their_model(tmp_path):
    old = _ckpt(tmp_path / "old", 100, [TRAIN])
    model = _ckpt(tmp_path / "model", 200, [TRAIN])
    prune = {"family": "prune", "method": "global_unstructured", "params": {}, "input_checkpoint": model}
    variant = _ckpt(tmp_path / "sweep" / "sparsity-0.100", 300,
                    [TRAIN, {**prune, "level": 0.1, "level_name": "sparsity"}])
    rows = checkpoint_rows(_points([(old, 100, 0.9), (model, 200, 0.95), (variant, 300, 0.94)]))
    # before: newest first, so the 10%-sparse sweep variant was the default
    assert list(rows["artifact"]) == [model, variant, old]
    assert list(rows["kind"]) == ["model", "variant", "model"]
    assert rows["label"][0] == "cnn_l on mnist5k · trained · 95.0% · model"
    assert rows["label"][1].startswith("  └ global_unstructured sparsity 0.1 of model · 94.0%")
    assert rows["parent"][1] == model
    assert rows["label"].is_unique  # two cnn_l-on-mnist5k models no longer read the same


def test_a_variant_whose_model_is_gone_comes_last_with_its_whole_lineage(tmp_path):
    gone = str(tmp_path / "gone")
    model = _ckpt(tmp_path / "model", 100, [TRAIN])
    orphan = _ckpt(tmp_path / "orphan", 300, [TRAIN, {"family": "prune", "method": "l1", "params": {},
                                                       "input_checkpoint": gone, "level": 0.5,
                                                       "level_name": "sparsity"}])
    rows = checkpoint_rows(_points([(orphan, 300, float("nan")), (model, 100, 0.9)]))
    assert list(rows["artifact"]) == [model, orphan]
    assert "train -> l1 (sparsity 0.5)" in rows["label"][1] and "accuracy not measured" in rows["label"][1]


# ---------------------------------------------------------------- where the app writes


def test_a_recipe_out_outside_the_store_dir_is_refused_naming_both(tmp_path):
    from engine.run.recipes import RecipeTask

    cfg = RecipeTask(recipe={"name": "r", "dataset": "digits", "model": "cnn_s", "out": "/anywhere/x",
                             "stages": [{"name": "t", "task": "train", "config": {"model": "cnn_s"}}]})
    with pytest.raises(UserError, match=r"'/anywhere/x' is outside .*" + tmp_path.name):
        app_config("recipe", cfg, base=tmp_path)
    with pytest.raises(UserError, match="outside"):
        app_config("recipe", cfg.__class__(recipe={**cfg.recipe, "out": "../escape"}), base=tmp_path)


def test_a_recipe_out_inside_or_missing_lands_under_the_store_dir(tmp_path):
    from engine.run.recipes import RecipeTask

    doc = {"name": "r", "dataset": "digits", "model": "cnn_s", "stages": [{"name": "t", "task": "train", "config": {"model": "cnn_s"}}]}
    assert app_config("recipe", RecipeTask(recipe=doc), base=tmp_path).recipe["out"] == str(
        tmp_path / "checkpoints" / "recipes")
    inside = app_config("recipe", RecipeTask(recipe={**doc, "out": "mine"}), base=tmp_path)
    assert inside.recipe["out"] == str(tmp_path / "mine")
    with pytest.raises(UserError, match="data_root"):
        app_config("recipe", RecipeTask(recipe={**doc, "data_root": "/tmp/elsewhere"}), base=tmp_path)


def test_a_task_without_out_gets_a_folder_under_the_store_dirs_checkpoints(tmp_path, student_checkpoint):
    cfg = app_config("prune.global_unstructured", {"checkpoint": student_checkpoint, "sparsities": [0.5]},
                     base=tmp_path)
    assert Path(cfg["out"]).parent == tmp_path / "checkpoints"
    assert Path(cfg["out"]).name.startswith("cnn_s-mnist5k-global_unstructured-")
    with pytest.raises(UserError, match=r"out '/etc/x' is outside"):
        app_config("prune.global_unstructured", {"checkpoint": student_checkpoint, "out": "/etc/x"}, base=tmp_path)
    assert "out" not in app_config("prune.global_unstructured",
                                   {"checkpoint": student_checkpoint, "save": False}, base=tmp_path)


def test_a_study_writes_its_units_under_the_store_dir(tmp_path):
    from engine.run.studies import StudyTask

    cfg = app_config("study", StudyTask(study="kd-prune", dataset="digits", quick=True), base=tmp_path)
    assert cfg.overrides["out"] == str(tmp_path / "checkpoints" / "recipes")


# ---------------------------------------------------------------- determinism


def test_repeats_of_one_shot_pruning_without_finetuning_are_flagged_and_with_finetuning_are_not(student_checkpoint):
    from engine.methods.tasks import get_task

    cls = get_task("prune.global_unstructured").config
    one_shot = cls.from_dict({"checkpoint": student_checkpoint, "repeats": 3})
    assert one_shot.deterministic
    assert "3x the compute for a std of 0" in repeats_note(one_shot)
    assert repeats_note(cls.from_dict({"checkpoint": student_checkpoint, "repeats": 1})) is None
    tuned = cls.from_dict({"checkpoint": student_checkpoint, "repeats": 3, "finetune": {"mode": "last"}})
    assert not tuned.deterministic and repeats_note(tuned) is None
