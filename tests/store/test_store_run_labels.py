"""A run's name, tags and note, and a recipe unit's stage, sweep and key: structured fields, never parsed names."""

from __future__ import annotations

import pytest

from engine.core.errors import ConfigError
from store import RunNotFound


def test_rename_tag_and_note_round_trip_by_id_or_prefix(store):
    run_id = store.create_run("train", {}, name="train cnn_s digits")
    store.rename_run(run_id[:6], "  teacher for the kd sweep  ")
    store.set_tags(run_id, ["baseline", " digits ", "baseline"])
    store.set_note(run_id, "lr 0.1 diverged once;\nthis is the rerun")
    run = store.get_run(run_id)
    assert run["name"] == "teacher for the kd sweep"
    assert run["tags"] == ["baseline", "digits"]  # stripped, a repeat kept once, order kept
    assert run["note"] == "lr 0.1 diverged once;\nthis is the rerun"
    listed = store.list_runs().set_index("run_id").loc[run_id]
    assert listed["name"] == "teacher for the kd sweep" and listed["tags"] == ["baseline", "digits"]
    store.set_tags(run_id, [])
    store.set_note(run_id, "")
    assert store.get_run(run_id)["tags"] == [] and store.get_run(run_id)["note"] == ""


def test_a_new_run_takes_its_name_tags_and_note_at_creation(store):
    run_id = store.create_run("train", {}, name="mine", tags=["a", "b"], note="why")
    run = store.get_run(run_id)
    assert (run["name"], run["tags"], run["note"]) == ("mine", ["a", "b"], "why")
    plain = store.get_run(store.create_run("train", {}))
    assert (plain["name"], plain["tags"], plain["note"], plain["stage"], plain["sweep"]) == ("train", [], "", None, None)


def test_runs_list_filters_by_tag_and_by_name_text(store):
    a = store.create_run("train", {}, name="Teacher cnn_l", tags=["baseline"])
    b = store.create_run("prune", {}, name="prune the teacher", tags=["sweep", "baseline-2"])
    c = store.create_run("prune", {}, name="other", tags=["sweep"])
    assert set(store.list_runs(tag="baseline").run_id) == {a}  # the whole tag, not a prefix of one
    assert set(store.list_runs(tag="sweep").run_id) == {b, c}
    assert set(store.list_runs(name_contains="TEACHER").run_id) == {a, b}  # any case
    assert set(store.list_runs(tag="sweep", name_contains="teach").run_id) == {b}
    assert store.list_runs(name_contains="100%_").empty  # the text is text, not a LIKE pattern
    assert store.all_tags() == ["baseline", "baseline-2", "sweep"]


@pytest.mark.parametrize(("tags", "message"), [
    (["ok", ""], "tag 2 is empty"),
    (["   "], "tag 1 is empty"),
    (["x" * 41], "has 41 characters; a tag has at most 40"),
    (["a,b"], "tag 'a,b' contains a comma"),
    (["two\nlines"], "printable text on one line"),
    ("baseline", "tags must be a list of texts"),
    ([f"t{i}" for i in range(21)], "at most 20 tags, got 21"),
])
def test_bad_tags_are_refused_naming_what_is_wrong_and_nothing_is_written(store, tags, message):
    run_id = store.create_run("train", {}, name="kept", tags=["before"])
    with pytest.raises(ConfigError, match=message):
        store.label_run(run_id, name="renamed", tags=tags)  # the valid name is not written either
    run = store.get_run(run_id)
    assert (run["name"], run["tags"]) == ("kept", ["before"])
    with pytest.raises(ConfigError, match=message):
        store.create_run("train", {}, tags=tags)
    assert len(store.list_runs()) == 1


def test_bad_names_and_unknown_runs_are_refused(store):
    run_id = store.create_run("train", {})
    with pytest.raises(ConfigError, match="must not be empty"):
        store.rename_run(run_id, "  ")
    with pytest.raises(ConfigError, match="at most 200 characters, got 201"):
        store.rename_run(run_id, "n" * 201)
    with pytest.raises(RunNotFound, match="no run with id 'zzz'"):
        store.set_tags("zzz", ["a"])


def test_parse_tags_reads_comma_separated_text():
    from store import parse_tags, read_labels

    assert parse_tags(" baseline, digits ,kd ") == ["baseline", "digits", "kd"]
    assert parse_tags("") == [] and parse_tags(None) == []
    with pytest.raises(ConfigError, match="empty tag between commas"):
        parse_tags("a,,b")
    assert read_labels("  ", ["a, b", "c"]) == (None, ["a", "b", "c"])  # a blank name: the default
    assert read_labels("mine", []) == ("mine", [])


def test_a_recipe_unit_records_its_stage_sweep_and_key_and_is_found_by_key(store):
    key = "ab" * 32
    unit = store.create_run("prune.l1_unstructured", {}, name="kd-prune/prune sparsities=0.5", stage="prune",
                            sweep={"sparsities": [0.5], "method": "kd"}, unit_key=key)
    old = store.create_run("train", {}, name="whatever", stage="model", sweep={}, unit_key="cd" * 8)  # pre-5: 16 hex
    store.create_run("train", {}, name=f"not a unit key={key[:16]}")  # a name is never read for a key
    run = store.get_run(unit)
    assert (run["stage"], run["sweep"], run["unit_key"]) == ("prune", {"sparsities": [0.5], "method": "kd"}, key)
    assert list(store.list_runs(unit_keys=[key]).run_id) == [unit]
    assert list(store.list_runs(unit_keys=["cd" * 32]).run_id) == [old]  # matched by its 16-hex prefix
    assert store.list_runs(unit_keys=["ef" * 32]).empty
