"""Publishing a preprocessing output so that a rerun, a failure or a kill never corrupts the one in place.

A run writes everything into a private staging folder inside the output folder (``.staging-<run id>/``; Beam's
own ``beam-temp-*`` folders land there too). Its shards carry the run id in their names, so they never collide
with the shards of the output in place. Publishing then

1. moves the staged shards into the output folder (the old manifest still names only the old shards),
2. writes ``manifest.json`` in one atomic step: this is the commit, readers follow the manifest (label names
   included),
3. moves the side files (dead letters, statistics, labels...) over the old ones,
4. deletes the shards and side files of earlier outputs and the staging folder.

A run that fails or is killed before step 2 leaves the previous output exactly as it was; what it staged is
removed at once (failure) or by the next run into the folder (kill). After step 2 the new output is whole; a
kill during step 3 can leave an earlier run's side files beside it for a moment (``statistics.json`` and the
manifest carry the run id). Shard names come from what Beam reports
it wrote, never from a glob, so nothing of another run can be counted. One run per output folder at a time.
Paths may be local or ``gs://`` (:mod:`trainer.fileio`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Mapping

import apache_beam as beam

from trainer import features, fileio

STAGING_PREFIX = ".staging-"
BEAM_TEMP_PREFIX = "beam-temp-"
WRITTEN_SHARDS_FILE = "written_shards.json"  # what the shard sink reported, written by the pipeline itself


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _children(folder: str) -> list[str]:
    """Paths directly inside ``folder``: files, and folders with a final "/" (on object stores: known by the
    files under them)."""
    prefix = fileio.join(folder, "")
    if not fileio.is_remote(folder):
        return sorted(prefix + n + ("/" if os.path.isdir(prefix + n) else "") for n in os.listdir(folder))
    return sorted({prefix + name.split("/", 1)[0] + ("/" if "/" in name else "") for name in fileio.list_files(folder)})


def _delete(paths: list[str]) -> None:
    """Deletes files and folders (a folder path ends with "/"); best effort: the output is already whole."""
    for path in paths:
        try:
            if path.endswith("/"):
                fileio.remove_tree(path)
            else:
                fileio.remove(path, missing_ok=True)
        except Exception as err:  # noqa: BLE001
            logging.warning("could not delete %s: %s", path, err)


class Staging:
    """A run's private folder inside ``output_dir``; see the module docstring for the protocol."""

    def __init__(self, output_dir: str, shard_prefix: str):
        self.output_dir = output_dir.rstrip("/") if fileio.is_remote(output_dir) else output_dir
        self.shard_prefix = shard_prefix
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        self.path = fileio.join(self.output_dir, STAGING_PREFIX + self.run_id)
        self.committed = False

    def start(self) -> "Staging":
        """Creates the output and staging folders; removes what killed runs left behind."""
        if not fileio.is_remote(self.output_dir):  # object stores have no folders to make
            fileio.makedirs(self.output_dir)
        stale = [p for p in _children(self.output_dir)
                 if _basename(p).startswith((STAGING_PREFIX, BEAM_TEMP_PREFIX)) and p.endswith("/")]
        if stale:
            logging.info("removing leftovers of earlier runs: %s", stale)
            _delete(stale)
        if not fileio.is_remote(self.path):
            fileio.makedirs(self.path)
        return self

    def file(self, name: str) -> str:
        """A path in the staging folder."""
        return fileio.join(self.path, name)

    @property
    def shard_path_prefix(self) -> str:
        """The prefix the shard sink writes to: ``<staging>/<prefix>-<run id>``."""
        return self.file(f"{self.shard_prefix}-{self.run_id}")

    def written_shards(self) -> list[str]:
        """The shard paths the pipeline's sink reported (it writes them to :data:`WRITTEN_SHARDS_FILE`)."""
        path = self.file(WRITTEN_SHARDS_FILE)
        if not fileio.exists(path):
            raise FileNotFoundError(f"{path}: the pipeline did not report its shards")
        return sorted(json.loads(fileio.read_text(path)))

    def publish(self, shards: list[str], manifest: dict, side_files: Mapping[str, str]) -> dict:
        """Moves ``shards`` (staged paths) into the output folder and commits ``manifest``; then moves in the
        ``side_files`` ({final name: staged path}; a name whose staged file does not exist is removed from the
        output, e.g. the pool of an earlier pair-mode run) and removes what earlier outputs left; -> the
        manifest written. Steps after the commit are best effort: the output is already whole."""
        names = [_basename(s) for s in shards]
        for shard, name in zip(shards, names):
            fileio.move(shard, fileio.join(self.output_dir, name))
        manifest = {**manifest, "run_id": self.run_id}
        fileio.atomic_write_text(fileio.join(self.output_dir, features.MANIFEST_FILE), json.dumps(manifest, indent=2))
        self.committed = True
        try:
            for name, staged in side_files.items():
                target = fileio.join(self.output_dir, name)
                if fileio.exists(staged):
                    fileio.move(staged, target)
                else:  # this run has no such file (e.g. no pool in single mode): an earlier run's must go
                    fileio.remove(target, missing_ok=True)
            keep = {*names, *side_files, features.MANIFEST_FILE}
            stale = [p for p in _children(self.output_dir) if not p.endswith("/") and _basename(p) not in keep
                     and (".tfrecord" in _basename(p) or _basename(p).endswith(features.LABELS_FILE_SUFFIX))]
            _delete(stale + [fileio.join(self.path, "")])
        except Exception as err:  # noqa: BLE001 - the manifest is written: report, keep the staged files
            logging.warning("%s is published (manifest of run %s written), but finishing failed: %s; the side files "
                            "not moved are still in %s", self.output_dir, self.run_id, err, self.path)
        return manifest

    def discard(self) -> None:
        """Removes the staging folder of a run that failed before its commit (after the commit, publishing
        removes it, or keeps it when moving the side files failed)."""
        if not self.committed:
            _delete([fileio.join(self.path, "")])


class ReportShards(beam.PTransform):
    """The shard paths a sink reports it wrote -> one JSON list in ``path`` (read by :meth:`Staging.written_shards`)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, written):
        return (
            written
            | "ShardList" >> beam.combiners.ToList()
            | "ShardJson" >> beam.Map(lambda paths: json.dumps(sorted(paths)))
            | "WriteShardList" >> beam.io.WriteToText(self.path, num_shards=1, shard_name_template="")
        )
