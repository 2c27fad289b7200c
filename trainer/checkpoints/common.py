"""Shared machinery of the checkpoint converters: name tables, shape-checked assignment, the report.

A converter is a table from source tensor names to (our weight path, transform). Every source tensor is
either mapped, or listed as deliberately ignored with a reason; anything else is an error naming the tensor,
as is a missing tensor or a shape that does not fit. Nothing is assigned until every check has passed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from trainer import fileio
from trainer.checkpoints.config import CheckpointError  # noqa: F401 - defined with ConvertConfig, re-exported


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one source tensor goes: our weight path; the source's expected shape; whether it is stored
    transposed. Reading: check shape, transpose, reshape to our weight's shape. Writing reverses it."""

    target: str
    source_shape: tuple[int, ...]
    transpose: bool = False

    def to_ours(self, value: np.ndarray, our_shape: tuple[int, ...]) -> np.ndarray:
        if tuple(value.shape) != tuple(self.source_shape):
            raise ValueError(f"expected shape {tuple(self.source_shape)}")
        value = value.T if self.transpose else value
        return value.reshape(our_shape)

    def to_source(self, value: np.ndarray) -> np.ndarray:
        shape = self.source_shape[::-1] if self.transpose else self.source_shape
        value = np.asarray(value).reshape(shape)
        return value.T if self.transpose else value


@dataclasses.dataclass
class ConversionReport:
    source: str
    source_format: str
    mapped: list[str] = dataclasses.field(default_factory=list)
    ignored: dict[str, str] = dataclasses.field(default_factory=dict)
    missing: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    parity: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False)

    def save(self, path: str) -> None:
        fileio.atomic_write_text(path, self.to_json())


def weights_by_path(model) -> dict[str, Any]:
    return {w.path: w for w in model.weights}


def apply_mapping(
    model,
    tensors: Mapping[str, np.ndarray],
    table: Mapping[str, Target],
    ignore: Mapping[str, str],
    report: ConversionReport,
    allow_unfilled: Mapping[str, str] | None = None,
) -> None:
    """Checks everything, then assigns. ``ignore`` maps regular expressions of source names to the reason;
    ``allow_unfilled`` maps our weight paths that may stay as initialised to the reason."""
    targets = weights_by_path(model)
    values: dict[str, np.ndarray] = {}
    unknown = []
    for name, tensor in tensors.items():
        if name in table:
            entry = table[name]
            if entry.target not in targets:
                raise CheckpointError(f"{report.source}: tensor {name!r} maps to {entry.target!r}, which the model lacks")
            expected = tuple(targets[entry.target].shape)
            try:
                value = entry.to_ours(np.asarray(tensor), expected)
            except ValueError as err:
                raise CheckpointError(
                    f"{report.source}: tensor {name!r} has shape {np.shape(tensor)}, {err} for {entry.target} "
                    f"{expected} (does the config match the checkpoint?)"
                ) from None
            values[entry.target] = value
            report.mapped.append(name)
            continue
        reason = next((why for pattern, why in ignore.items() if re.fullmatch(pattern, name)), None)
        if reason is None:
            unknown.append(name)
        else:
            report.ignored[name] = reason
    if unknown:
        raise CheckpointError(f"{report.source}: tensors neither mapped nor known to be ignorable: {sorted(unknown)[:10]}")
    missing = sorted(set(table) - set(tensors))
    if missing:
        report.missing = missing
        raise CheckpointError(f"{report.source}: missing tensors: {missing[:10]}")
    unfilled = sorted(set(targets) - set(values) - set(allow_unfilled or {}))
    if unfilled:
        raise CheckpointError(f"{report.source}: no tensor for the model's weights {unfilled[:10]}")
    for path, why in (allow_unfilled or {}).items():
        if path in targets and path not in values:
            report.notes.append(f"{path}: kept as initialised ({why})")
    for path, value in values.items():
        targets[path].assign(value.astype(targets[path].dtype))


def export_tensors(model, table: Mapping[str, Target]) -> dict[str, np.ndarray]:
    """Our weights written back under the source's names and layouts (the inverse of apply_mapping)."""
    weights = weights_by_path(model)
    return {name: entry.to_source(np.asarray(weights[entry.target].numpy())) for name, entry in table.items()}
