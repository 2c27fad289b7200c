"""Records in our schema, made the same way by every driver: the Beam steps (corpora that do not fit in memory)
and the in-memory Python path (``bertkeras.finetuning_records``) pack examples with the task's
``pack_examples`` and serialize them here, so identical examples give identical bytes.

Fixed-length features -> serialized ``tf.train.Example`` records with TensorFlow's ``tf.io.encode_proto`` (the
protobuf encoder in C++) instead of one Python proto object per record. The bytes equal
``Example.SerializeToString(deterministic=True)`` (map keys in sorted order), so readers of Google's records
and ours cannot tell the writers apart; a test checks the equality.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from trainer import features
from trainer.tasks.base import RecordShape


def length_mask(lengths: np.ndarray, width: int) -> np.ndarray:
    """int64 [n, width]: 1 on the first ``lengths[i]`` positions of row i (the ``input_mask`` feature)."""
    return (np.arange(width) < np.asarray(lengths)[:, None]).astype(np.int64)


def serialize_examples(columns: Mapping[str, np.ndarray]) -> list[bytes]:
    """{feature name: int [n, k] or float32 [n, k] array} -> n serialized Examples (Int64List/FloatList)."""
    import tensorflow as tf  # noqa: PLC0415 - workers import TensorFlow once, on first use

    names = sorted(columns)
    if not names:
        raise ValueError("serialize_examples: no features")
    n = len(columns[names[0]])
    if n == 0:
        return []
    feature_list = []
    for name in names:
        values = np.asarray(columns[name])
        if values.ndim != 2 or len(values) != n:
            raise ValueError(f"serialize_examples: feature {name!r} has shape {values.shape}, expected [{n}, k]")
        if np.issubdtype(values.dtype, np.floating):
            kind, field, values = "tensorflow.FloatList", "float_list", values.astype(np.float32, copy=False)
        else:
            kind, field, values = "tensorflow.Int64List", "int64_list", values.astype(np.int64, copy=False)
        value_list = tf.io.encode_proto(tf.fill([n, 1], values.shape[1]), [values], ["value"], kind)
        feature_list.append(tf.io.encode_proto(tf.ones([n, 1], tf.int32), [value_list[:, None]], [field], "tensorflow.Feature"))
    keys = tf.broadcast_to(tf.constant(names), [n, len(names)])
    entries = tf.io.encode_proto(
        tf.ones([n, len(names), 2], tf.int32), [keys[..., None], tf.stack(feature_list, axis=1)[..., None]],
        ["key", "value"], "tensorflow.Features.FeatureEntry",
    )
    feature_map = tf.io.encode_proto(tf.fill([n, 1], len(names)), [entries], ["feature"], "tensorflow.Features")
    examples = tf.io.encode_proto(tf.ones([n, 1], tf.int32), [feature_map[:, None]], ["features"], "tensorflow.Example")
    return examples.numpy().tolist()


def serialize_rows(task, rows: Sequence[dict], max_seq_length: int) -> list[bytes]:
    """Packed rows (a task's ``pack``) -> records, each feature zero-padded to its record length."""
    widths = {features.INPUT_IDS: max_seq_length, features.SEGMENT_IDS: max_seq_length,
              **task.record_features(RecordShape(max_seq_length))}
    columns = {}
    for name, width in widths.items():
        column = np.zeros((len(rows), width), task.feature_dtype(name))
        for i, row in enumerate(rows):
            column[i, : len(row[name])] = row[name]
        columns[name] = column
    lengths = np.array([len(row[features.INPUT_IDS]) for row in rows], np.int64)
    columns[features.INPUT_MASK] = length_mask(lengths, max_seq_length)
    return serialize_examples(columns)


def distinct_labels(tags: Iterable) -> list[str]:
    """The default label vocabulary: the sorted distinct labels (as the Beam step computes it)."""
    return sorted(set(tags))
