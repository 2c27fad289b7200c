"""Model files and folders on any filesystem.

`.keras` files: Keras writes and reads local paths only, so remote (gs://) files go through a local temporary
copy; writes are atomic (temp + rename) so a reader never sees half a model.

Model folders our tools write (a training run's ``export/``, a conversion, a registered copy) are complete
only once they hold ``features.COMPLETE_FILE``, which their writers put there last: the loaders here refuse
such a folder without it (one named ``export``, or holding one of our writers' files), so nothing reads an
export that is still being written or was interrupted. A model folder assembled by hand (``model.keras``,
``encoder/``) is read as it is.
"""

from __future__ import annotations

import os
import tempfile

import keras

from trainer import fileio
from trainer.features import (
    COMPLETE_FILE, CONVERSION_REPORT_FILE, EXPORT_DIR, MODEL_FILE, SERVING_DIR, TRAINING_CONFIG_FILE,
)

# Files only our writers put in a model folder: a folder holding one (or named export) must hold the marker.
WRITERS_FILES = (TRAINING_CONFIG_FILE, CONVERSION_REPORT_FILE)


class IncompleteModelError(ValueError):
    """A model folder without its completion marker: still being written, interrupted, or not a model."""


def require_complete(folder: str) -> str:
    """-> ``folder`` when it holds the completion marker (or is a model folder assembled by hand); else an
    error naming the folder and the marker."""
    if fileio.exists(fileio.join(folder, COMPLETE_FILE)):
        return folder
    if not fileio.exists(folder):
        raise IncompleteModelError(f"{folder}: no such model folder")
    ours = [name for name in WRITERS_FILES if fileio.exists(fileio.join(folder, name))]
    if ours:
        why = f", though it holds {' and '.join(ours)}"
    elif os.path.basename(folder.rstrip("/")) == EXPORT_DIR:
        why = ", though it is a training run's export"
    elif not fileio.exists(fileio.join(folder, MODEL_FILE)):
        why = f", no {MODEL_FILE}"
    else:
        return folder  # assembled by hand
    raise IncompleteModelError(
        f"{folder}: not a complete model folder (no {COMPLETE_FILE} marker{why}): an export or conversion that "
        "is still being written or was interrupted (rerun `export` / `convert`), written before bertkeras marked "
        "complete folders, or not a model folder")


def save_model(model: keras.Model, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        model.save(local)
        with open(local, "rb") as f:
            fileio.atomic_write_bytes(path, f.read())


def load_model(path: str) -> keras.Model:
    """Loads one ``.keras`` file with ``safe_mode=True`` (registered layers only: the model's classes are
    imported here, so a fresh process needs no other import first). A file is whole (written atomically); use
    :func:`load_model_folder` for a model folder."""
    import trainer.model.backbone  # noqa: F401, PLC0415 - registers Transformer and its layers
    import trainer.tasks.model  # noqa: F401, PLC0415 - registers TaskModel
    if not fileio.is_remote(path):
        return keras.saving.load_model(path, safe_mode=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        with open(local, "wb") as f:
            f.write(fileio.read_bytes(path))
        return keras.saving.load_model(local, safe_mode=True)


def load_model_folder(folder: str) -> keras.Model:
    """``<folder>/model.keras`` of a complete model folder."""
    return load_model(fileio.join(require_complete(folder), MODEL_FILE))


def load_serving_model(folder: str):
    """The raw-string SavedModel (``<folder>/serving``) of a complete export."""
    import tensorflow as tf  # noqa: PLC0415
    import tensorflow_text  # noqa: F401, PLC0415 - registers the tokenizer ops the SavedModel uses

    return tf.saved_model.load(fileio.join(require_complete(folder), SERVING_DIR))
