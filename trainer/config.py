"""Typed, frozen configuration shared by every step.

A step's config is a frozen dataclass deriving from :class:`Config`. It is resolved in one fixed order:
defaults -> optional YAML/JSON file -> dotted ``a.b=c`` overrides (from ``--set`` or from CLI flags that
:func:`add_config_flags` derives from the fields) -> :meth:`Config.validate`. Every error names the field
(and the file or override it came from). The resolved config is written beside the step's outputs with
:meth:`Config.save`, so a run can be reproduced from its outputs alone.

The library never reads flags or environment variables itself: the CLI resolves a config and passes it down.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import yaml

from trainer import fileio

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or invalid; the message names the field."""


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:  # noqa: A002
    """A dataclass field with a help text; the help becomes the CLI flag's help and the field's docs."""
    metadata = {"help": help}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kwargs)
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple default, configs are immutable")
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every step config. Subclasses are frozen dataclasses and override :meth:`check`.

    Every field is type-checked and coerced at construction, whatever builds the config (YAML, flags or Python):
    ``TaskConfig(kind="sentense")`` is an error naming the field, ``DataConfig(train="a,b")`` reads as YAML's
    ``train: a,b`` would, and lists become tuples."""

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            coerced = _coerce(hints[f.name], value, f.name, type(self).__name__)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)

    @classmethod
    def from_scalar(cls: type[C], value: Any) -> C | None:
        """The config a plain number or string stands for where one of this type is expected (None: none)."""
        return None

    # --- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], source: str = "<dict>", prefix: str = "") -> C:
        """Builds a config from a nested mapping; unknown keys and wrong types are errors naming the field."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
        hints = _type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{source}: unknown field {prefix + unknown[0]!r} for {cls.__name__}; known: {sorted(names)}"
            )
        values = {}
        for name, raw in data.items():
            values[name] = _coerce(hints[name], raw, f"{prefix}{name}", source)
        return cls(**values)

    @classmethod
    def resolve(
        cls: type[C],
        config_file: str | None = None,
        overrides: Iterable[str | tuple[str, str]] = (),
    ) -> C:
        """defaults -> ``config_file`` (YAML or JSON) -> ``key.sub=value`` overrides -> validate().

        An override is ``"key=value"`` or ``("key=value", source)`` where source names its origin in errors."""
        data: dict[str, Any] = {}
        if config_file:
            data = load_mapping(config_file)
        config = cls.from_dict(data, source=config_file or "<defaults>")
        for item in overrides:
            config = config.override(*((item,) if isinstance(item, str) else item))
        config.validate()
        return config

    def override(self: C, assignment: str, source: str = "--set") -> C:
        """Returns a copy with one dotted ``a.b=c`` assignment applied; the value is parsed as YAML."""
        if "=" not in assignment:
            raise ConfigError(f"{source} {assignment!r}: expected KEY=VALUE, e.g. vocab_file=vocab.txt")
        key, text = assignment.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"{source} {assignment!r}: value is not valid YAML: {err}") from None
        # A value written as plain text stays text even where YAML would read a number or a date.
        return self.replace_path(key.split("."), value, text, source)

    def replace_path(self: C, path: list[str], value: Any, text: str, source: str, prefix: str = "") -> C:
        head, rest = path[0], path[1:]
        fields = {f.name: f for f in dataclasses.fields(self)}
        if head not in fields:
            raise ConfigError(
                f"{source}: unknown field {prefix + head!r} for {type(self).__name__}; known: {sorted(fields)}"
            )
        current = getattr(self, head)
        if rest:
            if not isinstance(current, Config):
                raise ConfigError(f"{source}: field {prefix + head!r} has no sub-fields")
            new = current.replace_path(rest, value, text, source, prefix=f"{prefix}{head}.")
        else:
            hint = typing.get_type_hints(type(self))[head]
            if _base_type(hint) is str and not isinstance(value, str) and value is not None:
                value = text.strip()
            new = _coerce(hint, value, prefix + head, source)
        return dataclasses.replace(self, **{head: new})

    # --- validation ---------------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Returns error messages, each starting with the field name; subclasses extend this."""
        return []

    def validate(self: C, prefix: str = "") -> C:
        """Raises :class:`ConfigError` listing every invalid field (nested configs included)."""
        errors = [prefix + e for e in _non_finite(self)] + [prefix + e for e in self.check()]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                try:
                    value.validate(prefix=f"{prefix}{f.name}.")
                except ConfigError as err:
                    errors.extend(str(err).splitlines()[1:])
        if errors:
            raise ConfigError(f"invalid {type(self).__name__}:\n" + "\n".join(f"  {e}" for e in errors))
        return self

    # --- comparison ---------------------------------------------------------------------------------------
    def differences(self, other: Config) -> dict[str, tuple[Any, Any]]:
        """``{dotted field: (ours, other's)}`` for every leaf that differs; lists of configs are compared item by
        item (``tasks[1].num_classes``); what only one side has is ``MISSING`` on the other."""
        out: dict[str, tuple[Any, Any]] = {}
        _compare(self.to_dict(), other.to_dict(), "", out)
        return out

    # --- output -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = [v.to_dict() if isinstance(v, Config) else v for v in value]
            out[f.name] = value
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str) -> None:
        """Writes the resolved config (YAML, or JSON when ``path`` ends in .json) atomically."""
        text = json.dumps(self.to_dict(), indent=2) if path.endswith(".json") else self.to_yaml()
        fileio.atomic_write_text(path, text)


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING = _Missing()


def _compare(ours: Any, theirs: Any, name: str, out: dict[str, tuple[Any, Any]]) -> None:
    """Collects differing leaves of two ``to_dict()`` values; mappings and lists of mappings are entered."""
    if isinstance(ours, Mapping) and isinstance(theirs, Mapping):
        for key in list(ours) + [k for k in theirs if k not in ours]:
            _compare(ours.get(key, MISSING), theirs.get(key, MISSING), f"{name}.{key}" if name else str(key), out)
    elif (isinstance(ours, list) and isinstance(theirs, list) and ours + theirs
          and all(isinstance(v, Mapping) for v in ours + theirs)):
        for i in range(max(len(ours), len(theirs))):
            _compare(ours[i] if i < len(ours) else MISSING, theirs[i] if i < len(theirs) else MISSING,
                     f"{name}[{i}]", out)
    elif ours != theirs:
        out[name] = (ours, theirs)


def _non_finite(config: Config) -> list[str]:
    """NaN and infinity compare false with every bound a check() tests, so they are refused here, by name."""
    errors = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        items = enumerate(value) if isinstance(value, tuple) else [(None, value)]
        for i, item in items:
            if isinstance(item, float) and not math.isfinite(item):
                errors.append(f"{f.name}{'' if i is None else f'[{i}]'}: must be a finite number, got {item}")
    return errors


def load_mapping(path: str) -> dict[str, Any]:
    """Reads a YAML or JSON config file; errors name the file."""
    try:
        text = fileio.read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    try:
        data = yaml.safe_load(text)  # JSON is a subset of YAML
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML/JSON: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of field names, got {type(data).__name__}")
    return data


# --- type coercion ----------------------------------------------------------------------------------------
@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(hint: Any) -> Any:
    """``Optional[X]`` -> X; other hints unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _coerce(hint: Any, value: Any, name: str, source: str) -> Any:
    optional = type(None) in typing.get_args(hint)
    base = _base_type(hint)
    if value is None:
        if optional or hint is Any:
            return None
        raise ConfigError(f"{source}: field {name!r} must not be null")
    if isinstance(base, type) and issubclass(base, Config):
        if isinstance(value, base):
            return value
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
            value = float(value)  # numpy floats too
        if not isinstance(value, Mapping) and (scalar := base.from_scalar(value)) is not None:
            return scalar
        return base.from_dict(value, source=source, prefix=name + ".")
    origin = typing.get_origin(base)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: field {name!r} must be a list, got {value!r}")
        args = typing.get_args(base)
        item = args[0] if args else Any
        return tuple(_coerce(item, v, f"{name}[{i}]", source) for i, v in enumerate(value))
    if origin is typing.Literal:
        if value not in typing.get_args(base):
            raise ConfigError(f"{source}: field {name!r} must be one of {list(typing.get_args(base))}, got {value!r}")
        return value
    if base is Any:
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{source}: field {name!r} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)  # numpy integers too
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{source}: field {name!r} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{source}: field {name!r} must be an integer, got {value!r}") from None
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"{source}: field {name!r} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{source}: field {name!r} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{source}: field {name!r} must be a finite number, got {value!r}")
        return number
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: field {name!r} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {hint!r} for {name!r}")


# --- CLI --------------------------------------------------------------------------------------------------
def iter_leaf_fields(cls: type[Config], prefix: str = "") -> Iterable[tuple[str, dataclasses.Field, Any]]:
    """Yields (dotted name, field, type hint) for every non-config field, nested configs flattened."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        base = _base_type(hints[f.name])
        if isinstance(base, type) and issubclass(base, Config):
            yield from iter_leaf_fields(base, prefix + f.name + ".")
        else:
            yield prefix + f.name, f, hints[f.name]


def add_config_flags(parser: argparse.ArgumentParser, cls: type[Config]) -> None:
    """Adds ``--config FILE``, ``--set KEY=VALUE`` and one ``--<dotted.field>`` flag per field of ``cls``.

    Flags are derived from the dataclass, so a new field is a new flag with no second declaration.
    """
    group = parser.add_argument_group(f"{cls.__name__} (defaults -> --config file -> flags/--set -> validate)")
    group.add_argument("--config", dest="config_file", metavar="FILE", help="YAML or JSON config file")
    group.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="dotted override, e.g. --set lower_case=false (repeatable)",
    )
    for name, f, hint in iter_leaf_fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        group.add_argument(
            f"--{name}", dest=f"cfg__{name}", metavar=_metavar(hint), default=None,
            help=f"{f.metadata.get('help', '')} (default: {default!r})",
        )


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Resolves ``cls`` from parsed flags: file, then derived flags, then ``--set`` items, then validate."""
    flags: list[str | tuple[str, str]] = [
        (f"{key[len('cfg__'):]}={value}", f"--{key[len('cfg__'):]}") for key, value in vars(args).items()
        if key.startswith("cfg__") and value is not None
    ]
    return cls.resolve(args.config_file, flags + list(args.overrides))


def _metavar(hint: Any) -> str:
    base = _base_type(hint)
    if typing.get_origin(base) is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(base)) + "}"
    if typing.get_origin(base) is tuple:
        return "A,B,..."
    return getattr(base, "__name__", "VALUE").upper()


def describe_fields(cls: type[Config]) -> str:
    """Markdown table of a config's fields (name, type, default, help), for docs/."""
    rows = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, f, hint in iter_leaf_fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        rows.append(f"| `{name}` | `{_metavar(hint).lower()}` | `{default!r}` | {f.metadata.get('help', '')} |")
    return "\n".join(rows)
