"""Every quantization config validates itself, round-trips through plain dicts, and runs as a task."""

from __future__ import annotations

import dataclasses
import json

import pytest

from engine.core.errors import ConfigError, UserError
from engine.core.point import json_safe
from engine.deploy.int8 import INT8_BACKENDS
from engine.methods.quant import FakeQuantConfig, MixedPrecisionConfig, PTQInt8Config, QATConfig, quantize
from engine.methods.registry import family_methods
from engine.methods.tasks import TASKS, run_task
from engine.model.outputs import SaveOptions
from engine.model.train import TrainConfig

METHODS = family_methods("quantize")


def test_every_method_is_registered_in_the_family_and_as_a_task():
    assert set(METHODS) == {"ptq_int8", "dynamic_int8", "fake", "mixed", "sensitivity", "qat", "equalize", "adaround"}
    for name, method in METHODS.items():
        assert method.family == "quantize" and method.task == f"quantize.{name}" and method.description
        assert TASKS.get(method.task).config is method.config


def test_every_method_that_writes_models_has_the_save_options_and_sensitivity_does_not():
    saving = {name for name, m in METHODS.items() if issubclass(m.config, SaveOptions)}
    assert saving == {"ptq_int8", "dynamic_int8", "fake", "mixed", "qat", "equalize", "adaround"}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_config_round_trips_through_a_plain_dict(name):
    cls = METHODS.get(name).config
    default = cls(checkpoint="ck")
    assert cls.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    changed = {f.name: getattr(default, f.name) for f in dataclasses.fields(cls)}
    changed.update({"seed": 3, "latency": False})
    if "bits" in changed:
        changed["bits"] = 8 if name == "qat" else (8, 4)
    if "granularity" in changed:
        changed.update(granularity="per_tensor", symmetric=False, observer="percentile", percentile=99.5)
    if "train" in changed:
        changed["train"] = TrainConfig(epochs=2, lr=0.002)
    if "out" in changed:
        changed.update(out="somewhere", save=False, overwrite=True)
    cfg = cls(**changed)
    again = cls.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again != default


def test_qat_trains_gently_by_default_and_a_partial_train_dict_keeps_the_rest():
    assert QATConfig().train.lr == 0.001 and QATConfig().train.weight_decay == 0.0
    cfg = QATConfig.from_dict({"train": {"epochs": 2}})
    assert cfg.train.epochs == 2 and cfg.train.lr == 0.001


@pytest.mark.parametrize("make, words", [
    (lambda: FakeQuantConfig(bits=(2, 40)), r"bits must be a whole number of bits in \[2, 32\], got 40"),
    (lambda: FakeQuantConfig(bits=(1,)), r"bits must be a whole number of bits in \[2, 32\], got 1"),
    (lambda: FakeQuantConfig(bits=()), r"bits must list at least one bit width"),
    (lambda: FakeQuantConfig(activation_bits=1), r"activation_bits must be in \[2, 32\], got 1"),
    (lambda: FakeQuantConfig(granularity="per_row"), r"granularity must be one of per_channel, per_tensor"),
    (lambda: FakeQuantConfig(observer="kl"), r"observer must be one of minmax, percentile, mse"),
    (lambda: QATConfig(bits=16), r"bits must be in \[2, 8\], got 16"),
    (lambda: PTQInt8Config(calib_batches=0), r"calib_batches must be in \[1, 10000\], got 0"),
    (lambda: PTQInt8Config(engine="arm"), r"engine must be one of x86, qnnpack, onednn"),
    (lambda: PTQInt8Config(backend="tensorrt"), r"backend must be one of fx"),
    (lambda: MixedPrecisionConfig(max_accuracy_drop=2), r"max_accuracy_drop must be in \[0, 1\]"),
    (lambda: FakeQuantConfig.from_dict({"bits": "4"}), r"bits must be a list of whole numbers"),
])
def test_bad_settings_are_refused_naming_the_field_and_the_allowed_values(make, words):
    with pytest.raises(ConfigError, match=words):
        make()


def test_a_dict_from_the_browser_is_validated_like_a_config():
    with pytest.raises(ConfigError, match=r"bits must be a whole number of bits in \[2, 32\], got 64"):
        run_task("quantize.fake", {"checkpoint": "x", "bits": [4, 64]}, None)
    with pytest.raises(ConfigError, match="has no field colour"):
        run_task("quantize.fake", {"checkpoint": "x", "colour": "red"}, None)
    with pytest.raises(ConfigError, match="checkpoint must name a checkpoint directory"):
        run_task("quantize.fake", {}, None)


def test_the_one_entry_point_refuses_a_config_it_does_not_know(digits):
    with pytest.raises(ConfigError, match="no quantization method takes a TrainConfig"):
        quantize(None, digits, TrainConfig())


def test_the_backend_registry_names_what_exists():
    assert INT8_BACKENDS.names() == ["fx", "pt2e", "pt2e_eager"]
    with pytest.raises(UserError, match="unknown int8 backend 'onnx'; choose from: fx, pt2e, pt2e_eager"):
        INT8_BACKENDS.get("onnx")


# every method, run the way the job runner runs it: a task name and a plain dict
RECIPES = {
    "ptq_int8": {"calib_batches": 2, "save": False},
    "dynamic_int8": {"save": False},
    "fake": {"bits": [4, 8, 32], "save": False},
    "mixed": {"bits": [8, 4], "val_samples": 60, "max_accuracy_drop": 0.5, "save": False},
    "sensitivity": {"bits": [2]},
    "qat": {"bits": 4, "train": {"epochs": 1}, "save": False},
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_job_runner_records_every_method_run_by_name_and_dict(name, digits_checkpoint, ctx, tmp_path):
    from engine.run.jobs import run_sync
    from store import open_store

    recipe = {"checkpoint": digits_checkpoint, "latency": False, **RECIPES[name]}
    db = str(tmp_path / "runs.duckdb")
    points = run_sync(METHODS.get(name).task, recipe, db, echo=ctx)
    baselines = [p for p in points if p.stage == "baseline"]
    if name == "mixed":  # a path: every point is a step
        assert points and {p.stage for p in points} == {"step"} and not baselines
    else:  # one float reference at 32 bits, the rest variants
        assert len(baselines) == 1 and baselines[0].level == 32 and baselines[0].level_name == "bits"
        assert {p.stage for p in points} == {"baseline", "variant"}
    for p in points:
        assert p.family == "quantize" and p.method == name and p.input_checkpoint == digits_checkpoint
        assert p.artifact == ""  # save: false (or sensitivity, which saves nothing)
        assert 0.0 <= p.accuracy <= 1.0 and p.measurement.latency_ms_b1 is None
        assert p.simulated == ("simulated" in p.measurement.backend)
        json.dumps(json_safe(p.to_dict()))  # a point is plain data the store can keep
    assert ctx.fractions and ctx.fractions[-1] == 1.0  # progress reached the runner
    assert not any(tmp_path.glob("checkpoints*"))
    store = open_store(db)
    try:
        run = store.get_run(store.list_runs()["run_id"].iloc[0])
        assert run["status"] == "finished"
        stored = store.run_points(run["run_id"])
        assert [p["accuracy"] for p in stored] == pytest.approx([p.accuracy for p in points])
        assert [p["stage"] for p in stored] == [p.stage for p in points]
    finally:
        store.close()
