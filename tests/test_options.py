"""Options generated from config declarations: parsing, limits, and refusal by name."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import pytest

from engine.core.config import Config, param
from engine.core.errors import ConfigError
from engine.core.options import MAX_GRID, OptionSet, config_options, parse_list, parse_mapping
from engine.model.train import TrainConfig


@dataclass
class Sweep(Config):
    levels: tuple[float, ...] = param((0.0, 0.5), "levels to sweep", flag="sparsity")
    mode: str = param("a", "the mode", choices=("a", "b"))
    scale: float = param(1.0, "a scale", lo=0, hi=10)
    keep: bool = param(False, "keep something")
    ratios: dict[str, float] = param(default_factory=dict, help="per-layer ratios")
    train: TrainConfig = param(default_factory=TrainConfig)


@dataclass
class Other(Config):
    bits: int = param(8, "one width")
    lr: float = param(0.1, "clashes with train.lr below")
    train: TrainConfig = param(default_factory=TrainConfig)


def _parse(options: OptionSet, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    options.add_to(parser)
    return parser.parse_args(list(argv))


def test_ranges_expand_evenly_and_the_grid_is_capped_before_it_is_built():
    assert parse_list("--s", "0,0.1,...,0.5") == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert parse_list("--b", "2,4,...,8", int) == [2, 4, 6, 8]
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=f"expands to 9,000,000,001 values; at most {MAX_GRID:,}"):
        parse_list("--sparsity", "0,1e-10,...,0.9")
    assert time.perf_counter() - started < 0.1  # counted, not built
    with pytest.raises(ConfigError, match="expands to 900,001 values"):
        parse_list("--sparsity", "0,1e-6,...,0.9")
    with pytest.raises(ConfigError, match="below the range's start"):
        parse_list("--sparsity", "0,0.5,...,0.1")
    with pytest.raises(ConfigError, match="must ascend"):
        parse_list("--sparsity", "0.5,0.4,...,0.1")
    with pytest.raises(ConfigError, match="at least one value"):
        parse_list("--sparsity", " , ")
    with pytest.raises(ConfigError, match="must be a number, got 'x'"):
        parse_list("--sparsity", "0,x")


def test_mappings_parse_pairs_and_name_a_bad_one():
    assert parse_mapping("--r", "features.1=0.5,fc=0") == {"features.1": 0.5, "fc": 0.0}
    with pytest.raises(ConfigError, match="name=value"):
        parse_mapping("--r", "features.1")


def test_nested_fields_are_flattened_and_a_clash_gets_the_parent_prefix():
    flags = {o.flag: o.name for o in config_options(Other)}
    assert flags["--lr"] == "lr" and flags["--train-lr"] == "train.lr" and flags["--epochs"] == "train.epochs"
    assert {o.flag for o in config_options(Sweep)} >= {"--sparsity", "--mode", "--keep", "--ratios", "--epochs"}


def test_given_values_build_the_config_and_others_keep_their_defaults():
    options = OptionSet.of({"sweep": Sweep, "other": Other})
    args = _parse(options, "--sparsity", "0,0.25,...,0.75", "--keep", "--epochs", "2", "--ratios", "fc=0.1")
    cfg = Sweep.from_dict(options.values(args, "sweep"))
    assert cfg.levels == (0.0, 0.25, 0.5, 0.75) and cfg.keep is True and cfg.ratios == {"fc": 0.1}
    assert cfg.train.epochs == 2 and cfg.train.lr == TrainConfig().lr


def test_an_option_the_method_does_not_take_is_refused_by_name():
    options = OptionSet.of({"sweep": Sweep, "other": Other})
    args = _parse(options, "--bits", "4")
    with pytest.raises(ConfigError, match="--bits does not apply to --method sweep; it takes .*--sparsity"):
        options.values(args, "sweep")


def test_declared_choices_and_ranges_are_checked_for_every_instance():
    with pytest.raises(ConfigError, match="mode must be one of a, b; got 'c'"):
        Sweep(mode="c")
    with pytest.raises(ConfigError, match=r"scale must be in \[0, 10\], got 11"):
        Sweep.from_dict({"scale": 11})
