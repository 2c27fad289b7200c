"""`.keras` files on any filesystem: Keras writes and reads local paths only, so remote (gs://) files go
through a local temporary copy; writes are atomic (temp + rename) so a reader never sees half a model."""

from __future__ import annotations

import os
import tempfile

import keras

from trainer import fileio
from trainer.features import MODEL_FILE


def save_model(model: keras.Model, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        model.save(local)
        with open(local, "rb") as f:
            fileio.atomic_write_bytes(path, f.read())


def load_model(path: str) -> keras.Model:
    """Loads with ``safe_mode=True`` (registered layers only: the model's classes are imported here, so a fresh
    process needs no other import first)."""
    import trainer.model.backbone  # noqa: F401, PLC0415 - registers Transformer and its layers
    import trainer.tasks.model  # noqa: F401, PLC0415 - registers TaskModel
    if not fileio.is_remote(path):
        return keras.saving.load_model(path, safe_mode=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        with open(local, "wb") as f:
            f.write(fileio.read_bytes(path))
        return keras.saving.load_model(local, safe_mode=True)
