"""Typed configs: defaults -> file -> overrides -> validate, with errors naming the field."""

import argparse
import dataclasses
from typing import Literal

import pytest

from trainer.config import Config, ConfigError, add_config_flags, config_from_args, describe_fields, option


@dataclasses.dataclass(frozen=True)
class Inner(Config):
    size: int = option(4, "a size")
    rate: float = option(0.5, "a rate")

    def check(self):
        return [f"size: must be positive, got {self.size}"] if self.size <= 0 else []


@dataclasses.dataclass(frozen=True)
class Outer(Config):
    name: str = option("run", "a name")
    mode: Literal["a", "b"] = option("a", "a mode")
    files: tuple[str, ...] = option((), "files")
    enabled: bool = option(True, "a switch")
    inner: Inner = option(Inner(), "nested")


def test_defaults_file_overrides_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: from-file\ninner:\n  size: 8\n")
    config = Outer.resolve(str(path), ["inner.rate=0.25", "files=a.txt,b.txt", "name=123"])
    assert config == Outer(name="123", files=("a.txt", "b.txt"), inner=Inner(size=8, rate=0.25))


def test_json_file_and_round_trip(tmp_path):
    config = Outer(name="x", mode="b", files=("f",), inner=Inner(size=2))
    config.save(str(tmp_path / "c.json"))
    config.save(str(tmp_path / "c.yaml"))
    assert Outer.resolve(str(tmp_path / "c.json")) == config
    assert Outer.resolve(str(tmp_path / "c.yaml")) == config
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["inner.size=0"], r"inner\.size: must be positive"),
        (["inner.size=big"], r"field 'inner\.size' must be an integer"),
        (["mode=c"], r"field 'mode' must be one of \['a', 'b'\]"),
        (["inner.nope=1"], r"unknown field 'inner\.nope'"),
        (["enabled=maybe"], r"field 'enabled' must be true or false"),
        (["name"], r"expected KEY=VALUE"),
    ],
)
def test_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Outer.resolve(None, overrides)


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner: {size: 1, colour: red}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown field 'inner\.colour'"):
        Outer.resolve(str(path))
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        Outer.resolve(str(path))
    with pytest.raises(ConfigError, match="config file not found"):
        Outer.resolve(str(tmp_path / "missing.yaml"))


def test_cli_flags_are_derived_from_fields(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Outer)
    path = tmp_path / "c.yaml"
    path.write_text("name: file\nmode: b\n")
    args = parser.parse_args(["--config", str(path), "--inner.size", "16", "--set", "inner.size=32", "--enabled", "false"])
    config = config_from_args(Outer, args)
    assert (config.name, config.mode, config.inner.size, config.enabled) == ("file", "b", 32, False)
    with pytest.raises(ConfigError, match="--inner.size: field 'inner.size' must be an integer"):
        config_from_args(Outer, parser.parse_args(["--inner.size", "x"]))


def test_configs_are_frozen_and_documented():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Outer().name = "y"  # type: ignore[misc]
    table = describe_fields(Outer)
    assert "| `inner.size` | `int` | `4` | a size |" in table
