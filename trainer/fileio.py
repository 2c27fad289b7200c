"""File access for local paths and remote URLs (``gs://`` and any scheme ``tf.io.gfile`` knows).

Writes are atomic: local files go through a temporary file in the same folder and ``os.replace``, so a reader
never sees a half-written file and a failed write leaves the previous file in place. Remote object stores
publish an object only when its upload completes, which gives the same guarantee.
TensorFlow is imported only for remote paths, so local-only tools stay quick to start.
"""

from __future__ import annotations

import os
import tempfile


def is_remote(path: str) -> bool:
    return "://" in str(path)


def _gfile():
    import tensorflow as tf  # noqa: PLC0415 - heavy import, remote paths only

    return tf.io.gfile


def read_bytes(path: str) -> bytes:
    if is_remote(path):
        gfile = _gfile()
        if not gfile.exists(path):
            raise FileNotFoundError(path)
        with gfile.GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    """Reads UTF-8 text; invalid bytes raise a ValueError naming the file and byte offset."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line} (byte {err.start}) is not valid UTF-8") from None


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path: str) -> None:
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def atomic_write_bytes(path: str, data: bytes) -> None:
    if is_remote(path):
        with _gfile().GFile(path, "wb") as f:
            f.write(data)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
