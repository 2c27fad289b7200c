"""Training input: record sources -> one example layout -> per-replica tf.data pipelines.

A *source* is a record folder (with the ``manifest.json`` preprocessing writes) or a TFRecord glob, in our
schema or Google's (:mod:`trainer.features`). Sources are inspected and checked before any training step: the
first record of each gives the features and lengths, every shard can be read once to catch corruption, and
mismatches (lengths, tasks without features, another encoder's records) are errors naming the file/feature.

Every source is parsed into the same *layout* (``token_ids``, ``padding_mask``, ``segment_ids``,
``masked_positions`` and per task ``<task>_labels`` / ``<task>_weights`` / ``<task>_index``), zeros with weight
0 where a source lacks a task, so mixed sources batch together. The input order is a pure function of the seed:
a resumed run skips the examples already consumed (``skip``) instead of replaying them, and
``shard -> batch`` per input pipeline makes the union of the replicas' batches equal a single device's batch.
"""

from __future__ import annotations

import dataclasses
import functools
import glob as globlib
import json
from collections.abc import Callable, Sequence

import tensorflow as tf

from trainer import features, fileio
from trainer.features import DataError, PADDING_MASK, SEGMENT_IDS, TOKEN_IDS
from trainer.tasks import DynamicMasking, Task
from trainer.training.config import DataConfig

AUTOTUNE = tf.data.AUTOTUNE
__all__ = ["DataError", "DynamicMasking", "Layout", "Source", "check_sources", "count_records", "inspect_source", "make_dataset",
           "memory_source", "model_inputs", "synthetic_dataset", "verify_shards"]


@dataclasses.dataclass
class Source:
    spec: str                 # as configured
    files: list[str]
    compression: str          # "" or "GZIP"
    kind: str                 # features.PRETRAINING_RECORDS | CAUSAL_RECORDS | FINETUNING_RECORDS
    feature_lengths: dict[str, int]
    manifest: dict | None
    folder: str
    records: list[bytes] | tf.data.Dataset | None = None  # serialized records in memory (then files is empty)

    @property
    def where(self) -> str:
        """What errors name: the first shard, or the in-memory source's name."""
        return self.files[0] if self.files else self.spec

    @property
    def label_place(self) -> str | dict:
        """Where the task's label vocabulary is: the record folder, or an in-memory source's manifest."""
        return self.folder if self.records is None else (self.manifest or {})

    @property
    def seq_length(self) -> int:
        n = self.feature_lengths[features.INPUT_IDS]
        return n - 1 if self.kind == features.CAUSAL_RECORDS else n

    @property
    def predictions(self) -> int:
        return self.feature_lengths.get(features.MASKED_LM_POSITIONS, 0)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Static shapes shared by every source: what one example looks like to the model and the losses."""

    seq_length: int
    predictions: int          # masked positions per example (0: none)
    tasks: tuple[Task, ...]
    masking: DynamicMasking | None = None
    # the seed's explicit attention mask: batch -> [batch, query, key] 0/1 (in-graph), with the padding mask
    attention_mask: Callable[[dict], tf.Tensor] | None = None


def _glob(pattern: str) -> list[str]:
    return sorted(tf.io.gfile.glob(pattern) if fileio.is_remote(pattern) else globlib.glob(pattern))


def _isdir(path: str) -> bool:
    return tf.io.gfile.isdir(path)


def _compression(path: str) -> str:
    return "GZIP" if path.endswith(".gz") else ""


def _missing_shard(path: str, manifest_path: str | None) -> DataError:
    where = f", which {manifest_path} lists" if manifest_path else ""
    return DataError(f"{path}: shard not found{where} (the records are incomplete: rerun the preprocessing step)")


def _first_record(files: list[str], compression: str, manifest_path: str | None = None) -> tuple[str, tf.train.Example]:
    """The first record of the first shard that has one (an empty shard is valid output)."""
    for path in files:
        try:
            record = next(iter(tf.data.TFRecordDataset(path, compression_type=compression).take(1)), None)
        except tf.errors.NotFoundError:
            raise _missing_shard(path, manifest_path) from None
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            raise DataError(f"{path}: not a readable TFRecord file ({err.message.splitlines()[0]})") from None
        if record is None:
            continue
        try:
            return path, tf.train.Example.FromString(record.numpy())
        except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError
            raise DataError(f"{path}: the first record is not a tf.train.Example ({err})") from None
    raise DataError(f"{files[0] if len(files) == 1 else f'{len(files)} shards from {files[0]}'}: no records")


def _lengths(example: tf.train.Example) -> dict[str, int]:
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = len(getattr(feature, kind).value) if kind else 0
    return out


def _kind(lengths: dict[str, int], where: str) -> str:
    if features.INPUT_IDS not in lengths:
        raise DataError(f"{where}: records have no {features.INPUT_IDS!r} feature (features: {sorted(lengths)})")
    if features.MASKED_LM_IDS in lengths:
        return features.PRETRAINING_RECORDS
    if any(k.endswith("_labels") and k != features.NEXT_SENTENCE_LABELS for k in lengths):
        return features.FINETUNING_RECORDS
    if set(lengths) == {features.INPUT_IDS, features.INPUT_MASK}:
        return features.CAUSAL_RECORDS
    raise DataError(f"{where}: unknown record schema with features {sorted(lengths)}")


MEMORY_PREFIXES = ("memory:", "tf.data:")  # names of sources the Python API held in memory


def inspect_source(spec: str) -> Source:
    """Finds the shards of a source and reads its first record (features and their lengths)."""
    if spec.startswith(MEMORY_PREFIXES):
        raise DataError(f"{spec}: this run read data held in memory (the Python API), which is not on disk: give "
                        f"the data again (bertkeras.train / evaluate with it), or record folders")
    manifest = manifest_path = None
    if _isdir(spec):
        folder = spec.rstrip("/")
        manifest_path = fileio.join(folder, features.MANIFEST_FILE)
        if fileio.exists(manifest_path):
            manifest = json.loads(fileio.read_text(manifest_path))
            files = [fileio.join(folder, name) for name in sorted(manifest.get("shards", {}))]
            present = {f.rsplit("/", 1)[-1] for f in _glob(fileio.join(folder, "*"))}
            missing = [f for f in files if f.rsplit("/", 1)[-1] not in present]
            if missing:
                names = ", ".join(f.rsplit("/", 1)[-1] for f in missing[:5]) + (" ..." if len(missing) > 5 else "")
                raise DataError(f"{manifest_path}: lists {len(missing)} shard(s) that are missing from {folder}: "
                                f"{names} (the records are incomplete: rerun the preprocessing step)")
        else:
            manifest_path = None
            files = [f for f in _glob(fileio.join(folder, "*")) if ".tfrecord" in f.rsplit("/", 1)[-1]]
        if not files:
            raise DataError(f"{spec}: no TFRecord shards in this folder")
    else:
        files = _glob(spec)
        if not files:
            raise DataError(f"{spec}: no files match")
        folder = files[0].rsplit("/", 1)[0] if "/" in files[0] else "."
        candidate = fileio.join(folder, features.MANIFEST_FILE)
        if fileio.exists(candidate):
            manifest, manifest_path = json.loads(fileio.read_text(candidate)), candidate
    compression = _compression(files[0])
    first, example = _first_record(files, compression, manifest_path)
    lengths = _lengths(example)
    kind = _kind(lengths, first)
    return Source(spec, files, compression, kind, lengths, manifest, folder)


def memory_source(name: str, records: Sequence[bytes] | tf.data.Dataset, manifest: dict) -> Source:
    """Records held in memory as a source (the Python API's in-memory examples), or a ``tf.data.Dataset`` of
    serialized records: checked and parsed exactly as a record folder's, so the same examples give the same
    batches. ``manifest`` as a record folder's (``task``, ``labels``, ``encoder``)."""
    if isinstance(records, tf.data.Dataset):
        if records.element_spec != tf.TensorSpec([], tf.string):
            raise DataError(f"{name}: a tf.data.Dataset of serialized tf.train.Example records (scalar strings) is "
                            f"expected, got elements {records.element_spec}")
        first = next(iter(records.take(1)), None)
        first = None if first is None else first.numpy()
        counted = {}
    else:
        records = list(records)
        first = records[0] if records else None
        counted = {"records": len(records)}
    if first is None:
        raise DataError(f"{name}: no records")
    try:
        example = tf.train.Example.FromString(first)
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError
        raise DataError(f"{name}: the first record is not a tf.train.Example ({err})") from None
    lengths = _lengths(example)
    return Source(name, [], "", _kind(lengths, name), lengths, {**manifest, **counted}, "", records)


def count_records(source: Source) -> int:
    """The source's records: its manifest's count, else every shard read once."""
    recorded = (source.manifest or {}).get("records")
    if recorded is None and isinstance(source.records, tf.data.Dataset):
        raise DataError(f"{source.spec}: a tf.data.Dataset has no record count: give steps rather than epochs")
    return int(recorded) if recorded is not None else sum(verify_shards(source).values())


def verify_shards(source: Source) -> dict[str, int]:
    """Reads every record of every shard once; -> records per file. Corrupt files are errors naming them,
    and so are counts that disagree with the manifest."""
    if source.records is not None:  # in memory: nothing on disk to check (a dataset is read as it trains)
        return {source.spec: len(source.records)} if isinstance(source.records, list) else {}
    counts = {}
    expected = (source.manifest or {}).get("shards", {})
    manifest_path = fileio.join(source.folder, features.MANIFEST_FILE) if source.manifest is not None else None
    for path in source.files:
        try:
            n = int(tf.data.TFRecordDataset(path, compression_type=source.compression)
                    .reduce(tf.constant(0, tf.int64), lambda c, _: c + 1).numpy())
        except tf.errors.NotFoundError:
            raise _missing_shard(path, manifest_path) from None
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            raise DataError(f"{path}: corrupt TFRecord file ({err.message.splitlines()[0]})") from None
        name = path.rsplit("/", 1)[-1]
        if name in expected and expected[name] != n:
            raise DataError(f"{path}: {n} records, but the manifest lists {expected[name]}")
        counts[path] = n
    return counts


def check_sources(
    sources: Sequence[Source], tasks: Sequence[Task], max_positions: int | None, vocab_size: int | None,
    encoder_fingerprint: str | None, verify: bool, role: str = "data.train",
    masking: DynamicMasking | None = None, dynamic_predictions: int = 20, every_task: bool = True,
) -> Layout:
    """Checks that the sources can train ``tasks`` on the model; -> the common layout. ``every_task``: each task
    must have a source (training); else at least one (evaluation: tasks without data are not scored)."""
    lengths = {s.seq_length for s in sources}
    if len(lengths) > 1:
        detail = ", ".join(f"{s.where}: {s.seq_length}" for s in sources)
        raise DataError(f"{role}: sources disagree on the sequence length ({detail})")
    seq_length = lengths.pop()
    if max_positions and seq_length > max_positions:
        raise DataError(f"{sources[0].where}: sequence length {seq_length} exceeds the model's "
                        f"max_positions {max_positions}")
    predictions = {s.predictions for s in sources if s.predictions}
    if len(predictions) > 1:
        raise DataError(f"{role}: sources disagree on masked_lm_positions length {sorted(predictions)}")
    n_predictions = predictions.pop() if predictions else 0
    if masking is not None and not n_predictions:
        n_predictions = dynamic_predictions
    for source in sources:
        for name in (features.INPUT_MASK, features.SEGMENT_IDS):
            if name in source.feature_lengths and source.feature_lengths[name] != source.feature_lengths[features.INPUT_IDS]:
                raise DataError(f"{source.where}: feature {name!r} has length {source.feature_lengths[name]}, "
                                f"{features.INPUT_IDS!r} has {source.feature_lengths[features.INPUT_IDS]}")
        encoder = (source.manifest or {}).get("encoder") or {}
        if encoder_fingerprint and encoder.get("fingerprint") and encoder["fingerprint"] != encoder_fingerprint:
            raise DataError(f"{source.folder}/{features.MANIFEST_FILE}: records were made with encoder "
                            f"{encoder['fingerprint']}, the model's encoder is {encoder_fingerprint}")
        if encoder.get("vocab_size") and vocab_size and encoder["vocab_size"] > vocab_size:
            raise DataError(f"{source.folder}/{features.MANIFEST_FILE}: encoder vocabulary of {encoder['vocab_size']} "
                            f"tokens exceeds the model's vocab_size {vocab_size}")
    layout = Layout(seq_length, n_predictions, tuple(tasks), masking)
    for task in tasks:  # a label id means one label everywhere: every source's vocabulary must be the task's
        for source in sources:
            manifest = source.manifest or {}
            if (task.label_names and manifest.get("task") == task.name and manifest.get("labels")
                    and list(manifest["labels"]) != list(task.label_names)):
                raise DataError(f"{source.where}: the labels of task {task.name!r} are {manifest['labels']}, but "
                                f"the model's are {task.label_names} (make every source with the same label "
                                f"vocabulary: label_vocabulary= in the Beam step, labels= in the Python API)")
    unfed = [task for task in tasks if not any([task.feeds(s, layout) for s in sources])]  # lists: every source checked
    for task in unfed if every_task or len(unfed) == len(tasks) else ():
        raise DataError(f"{role}: no source has the features of task {task.name!r} ({task.kind}): needs "
                        f"{sorted(task.record_features(layout))}; sources: "
                        + "; ".join(f"{s.spec} ({s.kind})" for s in sources))
    if verify:
        for source in sources:
            verify_shards(source)
    return layout


# --- parsing into the layout ---------------------------------------------------------------------------------
def _parse(serialized, source: Source, layout: Layout):
    """One serialized record of ``source`` -> the layout's example (int32, static shapes): the inputs, then
    each task's targets (zeros with weight 0 where the source lacks them)."""
    n = layout.seq_length
    lengths = source.feature_lengths
    wanted = {name: "int64" for name in (features.INPUT_IDS, features.INPUT_MASK, features.SEGMENT_IDS)}
    for task in layout.tasks:
        wanted.update({name: task.feature_dtype(name) for name in task.record_features(layout)})
    spec = {name: tf.io.FixedLenFeature([lengths[name]], dtype) for name, dtype in wanted.items() if name in lengths}
    record = tf.io.parse_single_example(serialized, spec)
    record = {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v for k, v in record.items()}
    ids = record[features.INPUT_IDS]
    mask = record.get(features.INPUT_MASK, tf.ones_like(ids))
    example = {TOKEN_IDS: ids[:n], PADDING_MASK: mask[:n],
               SEGMENT_IDS: record.get(features.SEGMENT_IDS, tf.zeros([n], tf.int32))}
    for task in layout.tasks:
        task.parse(record, example, source, layout)
    return example


def _records(source: Source, index: int, seed: int, shuffle_buffer: int, training: bool) -> tf.data.Dataset:
    if isinstance(source.records, tf.data.Dataset):
        records = source.records
    elif source.records is not None:
        records = tf.data.Dataset.from_tensor_slices(tf.constant(source.records, tf.string))
    else:
        files = tf.data.Dataset.from_tensor_slices(source.files)
        records = files.interleave(
            lambda f: tf.data.TFRecordDataset(f, compression_type=source.compression),
            cycle_length=min(len(source.files), 8), num_parallel_calls=AUTOTUNE, deterministic=True,
        )
    if training:
        records = records.repeat().shuffle(shuffle_buffer, seed=seed + index)
    return records.map(lambda r: (tf.constant(index, tf.int64), r))


def make_dataset(
    sources: Sequence[Source], layout: Layout, data: DataConfig, batch_size: int, *, training: bool = True,
    skip: int = 0, num_pipelines: int = 1, pipeline_id: int = 0,
) -> tf.data.Dataset:
    """Batches of layout examples. ``batch_size`` is this pipeline's (per-replica) batch; ``skip`` global
    examples already consumed are skipped before sharding, so every pipeline resumes at the same point."""
    streams = [_records(s, i, data.seed, data.shuffle_buffer, training) for i, s in enumerate(sources)]
    if len(streams) == 1:
        records = streams[0]
    elif training:
        weights = list(data.train_weights) or [1.0] * len(streams)
        records = tf.data.Dataset.sample_from_datasets(streams, [w / sum(weights) for w in weights], seed=data.seed)
    else:
        records = functools.reduce(lambda a, b: a.concatenate(b), streams)
    if skip:
        records = records.skip(skip)
    if num_pipelines > 1:
        records = records.shard(num_pipelines, pipeline_id)
    parsers = [functools.partial(_parse, source=s, layout=layout) for s in sources]

    def parse(index, serialized):
        if len(parsers) == 1:
            return parsers[0](serialized)
        return tf.switch_case(tf.cast(index, tf.int32), [functools.partial(p, serialized) for p in parsers])

    examples = records.map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)
    if data.length_buckets:  # evaluation keeps every example (and sees them grouped by length)
        return bucketed(examples, layout, data.length_buckets, batch_size, drop_remainder=training).prefetch(AUTOTUNE)
    return examples.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)


def bucket_lengths(seq_length: int, buckets: int) -> list[int]:
    """``buckets`` evenly spaced padded lengths up to ``seq_length`` (rounded up, distinct)."""
    return sorted({-(-seq_length * (i + 1) // buckets) for i in range(min(buckets, seq_length))})


def bucketed(examples: tf.data.Dataset, layout: Layout, buckets: int, batch_size: int,
             drop_remainder: bool = True) -> tf.data.Dataset:
    """Batches of examples of one length bucket, padded to the bucket's length instead of the records':
    the features along the sequence (the inputs, and what :meth:`Task.position_features` names) are cut to
    the example's length, then padded with zeros (no token, no attention, weight 0) to the bucket's. Without
    ``drop_remainder`` (evaluation) each bucket's last, partial batch comes too, so every example is seen once."""
    lengths = bucket_lengths(layout.seq_length, buckets)
    along = {TOKEN_IDS, PADDING_MASK, SEGMENT_IDS, *(n for t in layout.tasks for n in t.position_features())}

    def cut(example):
        length = tf.maximum(tf.reduce_sum(tf.cast(example[PADDING_MASK], tf.int32)), 1)
        return {k: v[:length] if k in along else v for k, v in example.items()}

    return examples.map(cut, num_parallel_calls=AUTOTUNE, deterministic=True).bucket_by_sequence_length(
        lambda example: tf.shape(example[TOKEN_IDS])[0], [n + 1 for n in lengths], [batch_size] * (len(lengths) + 1),
        pad_to_bucket_boundary=True, drop_remainder=drop_remainder)


class _Draws:
    """Stateless random draws for one synthetic example: each call takes the next seed of the example's."""

    def __init__(self, seed, index):
        self._base, self._count = tf.stack([tf.constant(seed, tf.int64), index]), 0

    def seed(self):
        self._count += 1
        return self._base + self._count

    def ints(self, shape, high: int):
        return tf.random.stateless_uniform(shape, self.seed(), 0, high, tf.int32)


def synthetic_dataset(layout: Layout, vocab_size: int, seed: int, batch_size: int, skip: int = 0,
                      num_pipelines: int = 1, pipeline_id: int = 0) -> tf.data.Dataset:
    """Random examples in the layout (every task present): smoke tests and benchmarks without records."""
    n = layout.seq_length

    def example(i):
        draws = _Draws(seed, i)
        out = {TOKEN_IDS: draws.ints([n], vocab_size), PADDING_MASK: tf.ones([n], tf.int32),
               SEGMENT_IDS: tf.concat([tf.zeros([n // 2], tf.int32), tf.ones([n - n // 2], tf.int32)], 0)}
        for task in layout.tasks:
            out.update(task.synthetic(draws, layout, vocab_size))
        return out

    ids = tf.data.Dataset.counter(skip)
    if num_pipelines > 1:
        ids = ids.shard(num_pipelines, pipeline_id)
    return ids.map(example, num_parallel_calls=AUTOTUNE).batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def model_inputs(batch: dict, layout: Layout) -> dict:
    """The model's named inputs from a layout batch: the backbone's, then what each task's head reads."""
    inputs = {TOKEN_IDS: batch[TOKEN_IDS], PADDING_MASK: batch[PADDING_MASK], SEGMENT_IDS: batch[SEGMENT_IDS],
              features.ATTENTION_MASK: layout.attention_mask(batch) if layout.attention_mask is not None else None}
    for task in layout.tasks:
        inputs.update({name: batch[name] for name in task.input_specs()})
    return inputs
