"""A method family is one package: a "toy" family written outside the repository, named in
$COMPRESSION_LAB_PLUGINS, gets its CLI commands, its place on the Launch page and its recipe tasks with no
repository file edited. The CLI is called in this process (`engine_main`, tests/conftest.py): the same `main` that
`python -m engine` runs, with the plugin found through the same variable."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from engine.core import point
from engine.methods.registry import FAMILIES, METHODS, PLUGINS_ENV
from engine.methods.tasks import TASKS, load_families

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "toy_lab"

INIT = '''
"""The toy family: one method that hands its input checkpoint on unchanged."""
from engine.methods.registry import import_family_modules, register_family

register_family("toy", package=__name__, title="Toy", description="copy a checkpoint and measure it",
                from_checkpoint=True)
import_family_modules(__name__, __path__)
'''

METHOD = '''
"""passthrough: the input checkpoint, saved again and measured (a floor for every other method)."""
from dataclasses import dataclass

from engine.core.config import param
from engine.methods.base import FromCheckpoint, checkpoint_method, method_params, started
from engine.methods.tasks import measure_point


@dataclass
class PassthroughConfig(FromCheckpoint):
    note: str = param("", "a word kept in the points' params")


@checkpoint_method("toy", "passthrough", PassthroughConfig, "copy the checkpoint unchanged and measure it")
def passthrough(cfg, ctx):
    with started(cfg, task="toy.passthrough") as run:
        params = method_params(cfg)
        artifact = run.save_float(ctx, "", run.model, family="toy", method="passthrough", params=params)
        return [measure_point(ctx, run.model.eval(), run.data, family="toy", method="passthrough", stage="variant",
                              params=params, input_checkpoint=cfg.checkpoint, artifact=artifact,
                              latency=cfg.latency)]
'''


@pytest.fixture
def plugin_dir(tmp_path) -> Path:
    package = tmp_path / "plugins" / PLUGIN
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(INIT))
    (package / "passthrough.py").write_text(textwrap.dedent(METHOD))
    return package.parent


@pytest.fixture
def toy(plugin_dir, monkeypatch) -> Path:
    """The plugin on sys.path and in $COMPRESSION_LAB_PLUGINS, discovered; every registry it fills is restored."""
    import engine.run  # noqa: F401 - the run layer's tasks (recipe, plan, study) register when it is imported
    load_families()  # the real families and every real task first, so the copies hold them
    monkeypatch.setattr(FAMILIES, "_items", dict(FAMILIES._items))
    monkeypatch.setattr(TASKS, "_items", dict(TASKS._items))
    monkeypatch.setattr("engine.methods.registry.METHODS", dict(METHODS))
    monkeypatch.setattr(point, "FAMILIES", list(point.FAMILIES))
    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setenv(PLUGINS_ENV, PLUGIN)
    load_families()
    yield plugin_dir
    for name in [m for m in sys.modules if m == PLUGIN or m.startswith(f"{PLUGIN}.")]:
        del sys.modules[name]


def test_the_cli_offers_the_plugin_family_with_its_generated_options(toy, engine_main):
    listing = engine_main("--help")
    assert listing.returncode == 0, listing.stderr
    assert "toy-methods" in listing.stdout and "copy a checkpoint and measure it" in listing.stdout
    help_ = engine_main("toy", "--help")
    assert help_.returncode == 0, help_.stderr
    for flag in ("--method", "passthrough", "--note", "--checkpoint", "--no-latency", "--out", "--db", "--json"):
        assert flag in help_.stdout, flag


def test_a_plugin_that_cannot_be_imported_is_one_line_naming_the_variable(monkeypatch, engine_main):
    monkeypatch.setenv(PLUGINS_ENV, "no_such_plugin")
    done = engine_main("--help")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1
    assert PLUGINS_ENV in lines[0] and "no_such_plugin" in lines[0]


def test_the_launch_page_lists_the_family_and_its_method(toy):
    from engine.run.launch import family_names, family_titles, methods_of

    assert "toy" in family_names() and family_titles()["toy"] == "Toy"
    (choice,) = methods_of("toy")
    assert (choice.method, choice.task, choice.needs_checkpoint) == ("passthrough", "toy.passthrough", True)


def test_the_launch_page_draws_the_toy_form(toy, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from engine.run.jobs import shutdown_all

    monkeypatch.setenv("COMPRESSION_LAB_DB", str(tmp_path / "lab.duckdb"))
    monkeypatch.setenv("COMPRESSION_LAB_STORE_DIR", str(tmp_path))
    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
        at.switch_page("pages/launch.py").run()
        family = next(s for s in at.selectbox if s.key == "launch.family")
        assert "Toy" in family.options  # shown by its title
        family.set_value("toy").run()
        assert not at.exception, at.exception
        method = next(s for s in at.selectbox if s.key == "launch.method.toy")
        assert method.options == ["passthrough: copy the checkpoint unchanged and measure it"]
        assert any(b.key == "launch.form.toy.passthrough.submit" for b in at.button) or \
            any("checkpoint" in i.value.lower() for i in at.info)  # its form, once a checkpoint exists
    finally:
        shutdown_all("test finished")


def test_a_recipe_stage_runs_the_toy_method_on_digits(toy, tmp_path):
    from engine.run.jobs import run_sync
    from engine.run.recipes import RECIPE_TASK, Recipe, RecipeTask

    doc = {"name": "toy", "dataset": "digits", "out": str(tmp_path / "out"),
           "model": {"arch": "cnn_s", "width": 0.25, "latency": False, "train": {"epochs": 1, "batch_size": 128}},
           "stages": [{"name": "copy", "task": "toy.passthrough", "config": {"note": "hi", "latency": False}}]}
    recipe = Recipe.from_dict(doc)
    assert [(u.stage, u.task, list(u.inputs)) for u in recipe.units] == \
        [("model", "train", []), ("copy", "toy.passthrough", ["checkpoint"])]
    points = run_sync(RECIPE_TASK, RecipeTask(recipe=doc), str(tmp_path / "lab.duckdb"))
    trained, copied = points
    assert (copied.family, copied.method, copied.params) == ("toy", "passthrough", {"note": "hi"})
    assert copied.input_checkpoint == trained.artifact and copied.artifact.startswith(str(tmp_path / "out"))
    assert copied.accuracy == trained.accuracy  # the same weights, measured again
