"""File access for local paths and remote URLs (``gs://`` and any other scheme ``tf.io.gfile`` knows).

``gs://`` goes through google-cloud-storage (the client the rest of the project uses for GCS; it honours
``STORAGE_EMULATOR_HOST``, so the same code runs against a local emulator); other schemes through
``tf.io.gfile``. TensorFlow's own writers and readers (SavedModels, checkpoints, tf.data) keep using TensorFlow's
file systems; this module is our code's one way to files.

Writes are atomic: local files go through a temporary file in the same folder and ``os.replace``, so a reader
never sees a half-written file and a failed write leaves the previous file in place; the new file gets the
mode ``open()`` would give it (the umask's, or the mode of the file it replaces). Object stores publish an
object only when its upload completes, which gives the same guarantee. Folders are published whole with
:func:`publish_folder` (a completion marker written last, then a swap).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def is_remote(path: str) -> bool:
    return "://" in str(path)


def _is_gcs(path: str) -> bool:
    return str(path).startswith("gs://")


def _gfile():
    import tensorflow as tf  # noqa: PLC0415 - heavy import, non-GCS remote paths only

    return tf.io.gfile


_clients = threading.local()


def _gcs_client():
    """One client per thread, process and endpoint (a client is not shared across threads or forks; the
    endpoint is GCS, or the emulator STORAGE_EMULATOR_HOST names)."""
    from google.cloud import storage  # noqa: PLC0415

    key = (os.environ.get("STORAGE_EMULATOR_HOST", ""), os.getpid())
    cache = _clients.__dict__.setdefault("by_key", {})
    if key not in cache:
        cache[key] = storage.Client(project=None)  # object access needs no project
    return cache[key]


def _gcs_bucket_and_name(url: str):
    bucket, _, name = url[len("gs://"):].partition("/")
    if not bucket:
        raise ValueError(f"{url}: no bucket in the gs:// URL")
    return _gcs_client().bucket(bucket), name


def _gcs_blobs(folder: str) -> tuple[str, list]:
    """(prefix, blobs) of every object under ``folder``."""
    bucket, prefix = _gcs_bucket_and_name(folder.rstrip("/") + "/")
    return prefix, list(bucket.client.list_blobs(bucket, prefix=prefix))


# --- reading ------------------------------------------------------------------------------------------------
def read_bytes(path: str) -> bytes:
    if _is_gcs(path):
        from google.api_core.exceptions import NotFound  # noqa: PLC0415

        bucket, name = _gcs_bucket_and_name(path)
        try:
            return bucket.blob(name).download_as_bytes()
        except NotFound:
            raise FileNotFoundError(path) from None
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
    """A file, or a folder (on object stores: a prefix with objects under it)."""
    if _is_gcs(path):
        bucket, name = _gcs_bucket_and_name(path)
        if not name.strip("/"):
            return bucket.exists()
        if bucket.blob(name).exists():
            return True
        return any(True for _ in bucket.client.list_blobs(bucket, prefix=name.rstrip("/") + "/", max_results=1))
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def list_files(folder: str) -> list[str]:
    """Paths of every file under ``folder`` relative to it (``/``-separated), sorted; [] when there is none."""
    if _is_gcs(folder):
        prefix, blobs = _gcs_blobs(folder)
        return sorted(b.name[len(prefix):] for b in blobs if not b.name.endswith("/"))
    if is_remote(folder):
        gfile, root = _gfile(), folder.rstrip("/")
        if not gfile.isdir(root):
            return []
        return sorted(f"{base[len(root):].strip('/')}/{name}".lstrip("/") for base, _, names in gfile.walk(root)
                      for name in names)
    found = []
    for base, _, names in os.walk(folder):
        rel = os.path.relpath(base, folder)
        found.extend(name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}" for name in names)
    return sorted(found)


def copy_to_local(url: str, local_dir: str, keep: Callable[[str], bool] = lambda name: True) -> list[str]:
    """Downloads the files under the remote folder ``url`` that ``keep(relative name)`` accepts into
    ``local_dir`` (for libraries that read local files only); -> their relative names."""
    copied = []
    for name in list_files(url):
        if not keep(name):
            continue
        target = os.path.join(local_dir, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if _is_gcs(url):
            bucket, blob_name = _gcs_bucket_and_name(join(url, name))
            bucket.blob(blob_name).download_to_filename(target)
        else:
            _gfile().copy(join(url, name), target, overwrite=True)
        copied.append(name)
    return copied


# --- writing ------------------------------------------------------------------------------------------------
def makedirs(path: str) -> None:
    if _is_gcs(path):
        return  # object stores have no folders: a folder exists once an object is under it
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def _umask() -> int:
    """The process umask, read without changing it (os.umask sets it, which would race other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(path: str) -> int:
    """What ``open(path, "w")`` would give: the mode of the file it replaces, else 0666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def atomic_write_bytes(path: str, data: bytes) -> None:
    if _is_gcs(path):
        bucket, name = _gcs_bucket_and_name(path)
        bucket.blob(name).upload_from_string(data)
        return
    if is_remote(path):
        with _gfile().GFile(path, "wb") as f:
            f.write(data)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, _mode_for(path))  # mkstemp creates 0600
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


def remove(path: str, missing_ok: bool = False) -> None:
    """Deletes one file."""
    if not exists(path):
        if missing_ok:
            return
        raise FileNotFoundError(path)
    if _is_gcs(path):
        bucket, name = _gcs_bucket_and_name(path)
        bucket.blob(name).delete()
    elif is_remote(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def remove_tree(path: str) -> None:
    """Deletes a folder and everything under it; nothing when it does not exist."""
    if _is_gcs(path):
        for blob in _gcs_blobs(path)[1]:
            blob.delete()
    elif is_remote(path):
        if _gfile().exists(path):
            _gfile().rmtree(path)
    elif os.path.lexists(path):
        shutil.rmtree(path)


# --- publishing a folder ------------------------------------------------------------------------------------
def publish_folder(final: str, build: Callable[[str], T], marker: str) -> T:
    """Publishes a folder whole: ``build(staging)`` writes it into ``<final>.partial``, the file ``marker``
    (listing the folder's files) is written last, then the folder replaces ``final``; -> what ``build`` returns.

    Readers must refuse a folder without ``marker``. Locally the replacement is one atomic exchange of the two
    folders (Linux ``renameat2``), so ``final`` always holds the old complete folder or the new one; where the
    exchange is not available (gcsfuse) two renames, and the marker is written after them. Object stores cannot rename a folder in one step: the old folder's marker goes first (readers
    refuse it from then on), then its objects, the new ones move in, and the marker comes last. A ``build``
    that fails leaves ``final`` untouched and its staging removed; a killed one is removed by the next publish."""
    final = final.rstrip("/")
    staging = final + ".partial"
    remove_tree(staging)
    makedirs(staging)
    try:
        result = build(staging)
    except BaseException:
        remove_tree(staging)
        raise
    contents = json.dumps({"files": list_files(staging)}, indent=2) + "\n"
    if is_remote(final):
        remove(join(final, marker), missing_ok=True)
        for name in list_files(final):
            remove(join(final, name))
        for name in list_files(staging):
            _move_file_remote(join(staging, name), join(final, name))
        remove_tree(staging)
        atomic_write_text(join(final, marker), contents)
        return result
    if os.path.lexists(final):
        atomic_write_text(os.path.join(staging, marker), contents)
        if _exchange(staging, final):
            shutil.rmtree(staging)  # now the old folder
            return result
        # No atomic exchange (e.g. gcsfuse's /gcs/ paths, where a folder rename copies object by object): the
        # marker must come after everything else, so it leaves and is written again once the folder is in place.
        remove(os.path.join(staging, marker))
        previous = final + ".previous"
        if os.path.lexists(previous):
            shutil.rmtree(previous)
        os.rename(final, previous)
        os.rename(staging, final)
        atomic_write_text(os.path.join(final, marker), contents)
        shutil.rmtree(previous)
        return result
    os.rename(staging, final)
    atomic_write_text(os.path.join(final, marker), contents)
    return result


def move(source: str, target: str) -> None:
    """Moves one file, replacing ``target`` (locally one atomic rename; object stores: in the same bucket)."""
    if is_remote(source):
        _move_file_remote(source, target)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        os.replace(source, target)


def _move_file_remote(source: str, target: str) -> None:
    if _is_gcs(source):
        bucket, name = _gcs_bucket_and_name(source)
        bucket.rename_blob(bucket.blob(name), _gcs_bucket_and_name(target)[1])  # same bucket: a sibling folder
    else:
        _gfile().makedirs(target.rsplit("/", 1)[0])
        _gfile().rename(source, target, overwrite=True)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: str, b: str) -> bool:
    """Swaps two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), a, None, b)
