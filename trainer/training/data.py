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
from collections.abc import Sequence

import tensorflow as tf

from trainer import features, fileio
from trainer.training.config import DataConfig, TaskConfig

AUTOTUNE = tf.data.AUTOTUNE
TOKEN_IDS, PADDING_MASK, SEGMENT_IDS, MASKED_POSITIONS = "token_ids", "padding_mask", "segment_ids", "masked_positions"


class DataError(ValueError):
    """Input records that cannot train this model; the message names the file and feature."""


@dataclasses.dataclass
class Source:
    spec: str                 # as configured
    files: list[str]
    compression: str          # "" or "GZIP"
    kind: str                 # pretraining | causal | finetuning
    feature_lengths: dict[str, int]
    manifest: dict | None
    folder: str

    @property
    def seq_length(self) -> int:
        n = self.feature_lengths[features.INPUT_IDS]
        return n - 1 if self.kind == "causal" else n

    @property
    def predictions(self) -> int:
        return self.feature_lengths.get(features.MASKED_LM_POSITIONS, 0)


@dataclasses.dataclass(frozen=True)
class DynamicMasking:
    """Masked-LM targets made on the fly (tensorflow-text) for records that carry token ids but no MLM features."""

    vocab_size: int
    mask_id: int
    unselectable_ids: tuple[int, ...]
    rate: float = 0.15


@dataclasses.dataclass(frozen=True)
class Layout:
    """Static shapes shared by every source: what one example looks like to the model and the losses."""

    seq_length: int
    predictions: int
    tasks: tuple[TaskConfig, ...]
    masking: DynamicMasking | None = None


def _glob(pattern: str) -> list[str]:
    return sorted(tf.io.gfile.glob(pattern) if fileio.is_remote(pattern) else globlib.glob(pattern))


def _isdir(path: str) -> bool:
    return tf.io.gfile.isdir(path)


def _compression(path: str) -> str:
    return "GZIP" if path.endswith(".gz") else ""


def _first_record(files: list[str], compression: str) -> tuple[str, tf.train.Example]:
    """The first record of the first shard that has one (an empty shard is valid output)."""
    for path in files:
        try:
            record = next(iter(tf.data.TFRecordDataset(path, compression_type=compression).take(1)), None)
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
        return "pretraining"
    if any(k.endswith("_labels") and k != features.NEXT_SENTENCE_LABELS for k in lengths):
        return "finetuning"
    if set(lengths) == {features.INPUT_IDS, features.INPUT_MASK}:
        return "causal"
    raise DataError(f"{where}: unknown record schema with features {sorted(lengths)}")


def inspect_source(spec: str) -> Source:
    """Finds the shards of a source and reads its first record (features and their lengths)."""
    manifest = None
    if _isdir(spec):
        folder = spec.rstrip("/")
        manifest_path = fileio.join(folder, features.MANIFEST_FILE)
        if fileio.exists(manifest_path):
            manifest = json.loads(fileio.read_text(manifest_path))
            files = [fileio.join(folder, name) for name in sorted(manifest.get("shards", {}))]
        else:
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
            manifest = json.loads(fileio.read_text(candidate))
    compression = _compression(files[0])
    first, example = _first_record(files, compression)
    lengths = _lengths(example)
    kind = _kind(lengths, first)
    return Source(spec, files, compression, kind, lengths, manifest, folder)


def verify_shards(source: Source) -> dict[str, int]:
    """Reads every record of every shard once; -> records per file. Corrupt files are errors naming them,
    and so are counts that disagree with the manifest."""
    counts = {}
    expected = (source.manifest or {}).get("shards", {})
    for path in source.files:
        try:
            n = int(tf.data.TFRecordDataset(path, compression_type=source.compression)
                    .reduce(tf.constant(0, tf.int64), lambda c, _: c + 1).numpy())
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            raise DataError(f"{path}: corrupt TFRecord file ({err.message.splitlines()[0]})") from None
        name = path.rsplit("/", 1)[-1]
        if name in expected and expected[name] != n:
            raise DataError(f"{path}: {n} records, but the manifest lists {expected[name]}")
        counts[path] = n
    return counts


def required_features(task: TaskConfig, seq_length: int, predictions: int) -> dict[str, int]:
    """Feature name -> length a source needs to feed ``task``."""
    if task.kind == "masked_lm":
        return {features.MASKED_LM_POSITIONS: predictions, features.MASKED_LM_IDS: predictions,
                features.MASKED_LM_WEIGHTS: predictions}
    if task.kind == "next_sentence":
        return {features.NEXT_SENTENCE_LABELS: 1}
    if task.kind == "causal_lm":
        return {features.INPUT_IDS: seq_length + 1, features.INPUT_MASK: seq_length + 1}
    width = 1 if task.kind == "sentence" else seq_length
    needed = {features.task_labels(task.name): width, features.task_weights(task.name): width}
    if task.kind == "sentence":
        needed[features.task_index(task.name)] = 1
    return needed


def _feeds(source: Source, task: TaskConfig, layout_len: int, predictions: int, masking=None) -> bool:
    if task.kind == "causal_lm":
        return source.kind == "causal"
    if task.kind == "masked_lm" and masking is not None and features.MASKED_LM_IDS not in source.feature_lengths:
        return source.kind != "causal"
    needed = required_features(task, layout_len, predictions)
    present = [name for name in needed if name in source.feature_lengths]
    if not present:
        return False
    for name, length in needed.items():
        if name not in source.feature_lengths:
            raise DataError(f"{source.files[0]}: feature {name!r} missing for task {task.name!r} ({task.kind}); "
                            f"the records have {sorted(source.feature_lengths)}")
        if source.feature_lengths[name] != length:
            raise DataError(f"{source.files[0]}: feature {name!r} has length {source.feature_lengths[name]}, "
                            f"task {task.name!r} ({task.kind}) needs {length}")
    return True


def check_sources(
    sources: Sequence[Source], tasks: Sequence[TaskConfig], max_positions: int, vocab_size: int,
    encoder_fingerprint: str | None, verify: bool, role: str = "data.train",
    masking: DynamicMasking | None = None, dynamic_predictions: int = 20,
) -> Layout:
    """Checks that the sources can train ``tasks`` on the model; -> the common layout."""
    lengths = {s.seq_length for s in sources}
    if len(lengths) > 1:
        detail = ", ".join(f"{s.files[0]}: {s.seq_length}" for s in sources)
        raise DataError(f"{role}: sources disagree on the sequence length ({detail})")
    seq_length = lengths.pop()
    if seq_length > max_positions:
        raise DataError(f"{sources[0].files[0]}: sequence length {seq_length} exceeds the model's "
                        f"max_positions {max_positions}")
    predictions = {s.predictions for s in sources if s.predictions}
    if len(predictions) > 1:
        raise DataError(f"{role}: sources disagree on masked_lm_positions length {sorted(predictions)}")
    n_predictions = predictions.pop() if predictions else 0
    if masking is not None and not n_predictions and any(t.kind == "masked_lm" for t in tasks):
        n_predictions = dynamic_predictions
    for source in sources:
        for name in (features.INPUT_MASK, features.SEGMENT_IDS):
            if name in source.feature_lengths and source.feature_lengths[name] != source.feature_lengths[features.INPUT_IDS]:
                raise DataError(f"{source.files[0]}: feature {name!r} has length {source.feature_lengths[name]}, "
                                f"{features.INPUT_IDS!r} has {source.feature_lengths[features.INPUT_IDS]}")
        encoder = (source.manifest or {}).get("encoder") or {}
        if encoder_fingerprint and encoder.get("fingerprint") and encoder["fingerprint"] != encoder_fingerprint:
            raise DataError(f"{source.folder}/{features.MANIFEST_FILE}: records were made with encoder "
                            f"{encoder['fingerprint']}, the model's encoder is {encoder_fingerprint}")
        if encoder.get("vocab_size") and encoder["vocab_size"] > vocab_size:
            raise DataError(f"{source.folder}/{features.MANIFEST_FILE}: encoder vocabulary of {encoder['vocab_size']} "
                            f"tokens exceeds the model's vocab_size {vocab_size}")
    for task in tasks:
        if not any(_feeds(s, task, seq_length, n_predictions, masking) for s in sources):
            raise DataError(f"{role}: no source has the features of task {task.name!r} ({task.kind}): needs "
                            f"{sorted(required_features(task, seq_length, n_predictions))}; sources: "
                            + "; ".join(f"{s.spec} ({s.kind})" for s in sources))
    if verify:
        for source in sources:
            verify_shards(source)
    return Layout(seq_length, n_predictions, tuple(tasks), masking)


# --- parsing into the layout ---------------------------------------------------------------------------------
def _parse(serialized, source: Source, layout: Layout):
    """One serialized record of ``source`` -> the layout's example (int32, static shapes)."""
    n, p = layout.seq_length, layout.predictions
    lengths = source.feature_lengths
    spec = {}
    for name in (features.INPUT_IDS, features.INPUT_MASK, features.SEGMENT_IDS, features.MASKED_LM_POSITIONS,
                 features.MASKED_LM_IDS, features.NEXT_SENTENCE_LABELS):
        if name in lengths:
            spec[name] = tf.io.FixedLenFeature([lengths[name]], tf.int64)
    if features.MASKED_LM_WEIGHTS in lengths:
        spec[features.MASKED_LM_WEIGHTS] = tf.io.FixedLenFeature([lengths[features.MASKED_LM_WEIGHTS]], tf.float32)
    for task in layout.tasks:
        if task.kind in ("sentence", "token") and features.task_labels(task.name) in lengths:
            for name, dtype in ((features.task_labels(task.name), tf.int64), (features.task_weights(task.name), tf.float32),
                                (features.task_index(task.name), tf.int64)):
                if name in lengths:
                    spec[name] = tf.io.FixedLenFeature([lengths[name]], dtype)
    ex = tf.io.parse_single_example(serialized, spec)
    ex = {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v for k, v in ex.items()}
    ids = ex[features.INPUT_IDS]
    mask = ex.get(features.INPUT_MASK, tf.ones_like(ids))
    out = {
        TOKEN_IDS: ids[:n], PADDING_MASK: mask[:n],
        SEGMENT_IDS: ex.get(features.SEGMENT_IDS, tf.zeros([n], tf.int32)),
    }
    zeros_n, zeros_nf = tf.zeros([n], tf.int32), tf.zeros([n], tf.float32)
    if p and layout.masking is not None and features.MASKED_LM_IDS not in ex and source.kind != "causal":
        masked_ids, positions, originals, weights = _mask_dynamically(out[TOKEN_IDS], out[PADDING_MASK], p, layout.masking)
        out[TOKEN_IDS] = masked_ids
        ex[features.MASKED_LM_POSITIONS], ex[features.MASKED_LM_IDS], ex[features.MASKED_LM_WEIGHTS] = (
            positions, originals, weights)
    if p:
        out[MASKED_POSITIONS] = ex.get(features.MASKED_LM_POSITIONS, tf.zeros([p], tf.int32))
    for task in layout.tasks:
        labels, weights, index = features.task_labels(task.name), features.task_weights(task.name), features.task_index(task.name)
        if task.kind == "masked_lm":
            out[labels] = ex.get(features.MASKED_LM_IDS, tf.zeros([p], tf.int32))
            out[weights] = ex.get(features.MASKED_LM_WEIGHTS, tf.zeros([p], tf.float32))
        elif task.kind == "next_sentence":
            present = features.NEXT_SENTENCE_LABELS in ex
            out[labels] = ex[features.NEXT_SENTENCE_LABELS][0] if present else tf.constant(0, tf.int32)
            out[weights] = tf.constant(1.0 if present else 0.0)
        elif task.kind == "causal_lm":
            causal = source.kind == "causal"
            out[labels] = ids[1:] if causal else zeros_n
            out[weights] = tf.cast(mask[1:], tf.float32) if causal else zeros_nf
        elif task.kind == "sentence":
            present = labels in ex
            out[labels] = ex[labels][0] if present else tf.constant(0, tf.int32)
            out[weights] = ex[weights][0] if present else tf.constant(0.0)
            out[index] = ex[index][0] if present else tf.constant(0, tf.int32)
        else:
            out[labels] = ex[labels] if labels in ex else zeros_n
            out[weights] = ex[weights] if labels in ex else zeros_nf
    return out


def _mask_dynamically(ids, mask, predictions: int, masking: DynamicMasking):
    """BERT's 80/10/10 masking of one example with tensorflow-text; -> (ids, positions, original ids, weights)."""
    import tensorflow_text as tf_text  # noqa: PLC0415

    length = tf.reduce_sum(mask)
    ragged = tf.RaggedTensor.from_tensor(ids[None, :], lengths=tf.reshape(length, [1]))
    selector = tf_text.RandomItemSelector(max_selections_per_batch=predictions, selection_rate=masking.rate,
                                          unselectable_ids=list(masking.unselectable_ids))
    chooser = tf_text.MaskValuesChooser(masking.vocab_size, masking.mask_id, mask_token_rate=0.8, random_token_rate=0.1)
    masked, positions, originals = tf_text.mask_language_model(ragged, selector, chooser)
    n = tf.shape(ids)[0]
    masked_ids = tf.concat([masked.flat_values, ids[length:]], 0)
    count = tf.shape(positions.flat_values)[0]
    pad = predictions - count
    positions = tf.pad(tf.cast(positions.flat_values, tf.int32), [[0, pad]])
    originals = tf.pad(tf.cast(originals.flat_values, tf.int32), [[0, pad]])
    weights = tf.cast(tf.range(predictions) < count, tf.float32)
    return tf.ensure_shape(tf.reshape(masked_ids, [n]), ids.shape), tf.ensure_shape(positions, [predictions]), \
        tf.ensure_shape(originals, [predictions]), weights


def _records(source: Source, index: int, seed: int, shuffle_buffer: int, training: bool) -> tf.data.Dataset:
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
    return examples.batch(batch_size, drop_remainder=training).prefetch(AUTOTUNE)


def synthetic_dataset(layout: Layout, vocab_size: int, num_classes: dict[str, int], seed: int, batch_size: int,
                      skip: int = 0, num_pipelines: int = 1, pipeline_id: int = 0) -> tf.data.Dataset:
    """Random examples in the layout (every task present): smoke tests and benchmarks without records."""
    n, p = layout.seq_length, layout.predictions

    def example(i):
        s = tf.stack([tf.constant(seed, tf.int64), i])
        rand = lambda shape, hi, k: tf.random.stateless_uniform(shape, s + k, 0, hi, tf.int32)  # noqa: E731
        out = {TOKEN_IDS: rand([n], vocab_size, 1), PADDING_MASK: tf.ones([n], tf.int32),
               SEGMENT_IDS: tf.concat([tf.zeros([n // 2], tf.int32), tf.ones([n - n // 2], tf.int32)], 0)}
        if p:
            out[MASKED_POSITIONS] = tf.sort(tf.random.experimental.stateless_shuffle(tf.range(1, n), s + 2)[:p])
        for k, task in enumerate(layout.tasks, start=3):
            labels, weights = features.task_labels(task.name), features.task_weights(task.name)
            if task.kind == "masked_lm":
                out[labels], out[weights] = rand([p], vocab_size, k), tf.ones([p])
            elif task.kind == "causal_lm":
                out[labels], out[weights] = rand([n], vocab_size, k), tf.ones([n])
            elif task.kind in ("next_sentence", "sentence"):
                out[labels], out[weights] = rand([], num_classes.get(task.name, 2), k), tf.constant(1.0)
                if task.kind == "sentence":
                    out[features.task_index(task.name)] = tf.constant(0, tf.int32)
            else:
                out[labels], out[weights] = rand([n], num_classes[task.name], k), tf.ones([n])
        return out

    ids = tf.data.Dataset.counter(skip)
    if num_pipelines > 1:
        ids = ids.shard(num_pipelines, pipeline_id)
    return ids.map(example, num_parallel_calls=AUTOTUNE).batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def model_inputs(batch: dict, layout: Layout) -> dict:
    """The model's named inputs from a layout batch."""
    inputs = {"token_ids": batch[TOKEN_IDS], "padding_mask": batch[PADDING_MASK],
              "segment_ids": batch[SEGMENT_IDS], "attention_mask": None}
    if any(t.kind == "masked_lm" for t in layout.tasks):
        inputs["masked_positions"] = batch[MASKED_POSITIONS]
    for task in layout.tasks:
        if task.kind == "sentence":
            inputs[f"{task.name}_index"] = batch[features.task_index(task.name)]
    return inputs
