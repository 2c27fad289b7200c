"""The record schema shared by preprocessing (writer) and training (reader): one place for feature names.

Pretraining records use exactly the features of Google's ``create_pretraining_data.py`` so Google's and Model
Garden's trainers read ours unchanged, and ours read theirs:

    input_ids, input_mask, segment_ids           int64 x max_seq_length
    masked_lm_positions, masked_lm_ids           int64 x max_predictions_per_seq
    masked_lm_weights                            float x max_predictions_per_seq
    next_sentence_labels                         int64 x 1          (pair mode only)

Causal-LM records (GPT) hold ``input_ids`` and ``input_mask`` of max_seq_length + 1 tokens; the model reads
tokens [0, n) and predicts tokens [1, n + 1).

Fine-tuning records hold ``input_ids``, ``input_mask``, ``segment_ids`` and, per task ``<task>`` (the task
objects of :mod:`trainer.tasks` say which, ``Task.record_spec``):
    sentence level: ``<task>_labels`` int64 x 1, ``<task>_index`` int64 x 1 (the extraction index: the
                    position whose vector the head reads, 0 = [CLS] by default), ``<task>_weights`` float x 1
    token level:    ``<task>_labels`` int64 x max_seq_length (label of each word on its first sub-word),
                    ``<task>_weights`` float x max_seq_length (1 on first sub-words, 0 elsewhere)
"""

from __future__ import annotations

INPUT_IDS = "input_ids"
INPUT_MASK = "input_mask"
SEGMENT_IDS = "segment_ids"
MASKED_LM_POSITIONS = "masked_lm_positions"
MASKED_LM_IDS = "masked_lm_ids"
MASKED_LM_WEIGHTS = "masked_lm_weights"
NEXT_SENTENCE_LABELS = "next_sentence_labels"

# What kind of records a source holds (from its features; see trainer.training.data.inspect_source).
PRETRAINING_RECORDS, CAUSAL_RECORDS, FINETUNING_RECORDS = "pretraining", "causal", "finetuning"

# Model inputs and backbone outputs (the backbone contract, trainer.model.backbone).
TOKEN_IDS = "token_ids"
PADDING_MASK = "padding_mask"
ATTENTION_MASK = "attention_mask"
MASKED_POSITIONS = "masked_positions"
READ_POSITIONS = "read_positions"
POSITION_IDS = "position_ids"
SEQUENCE_OUTPUT = "sequence_output"
POOLED_OUTPUT = "pooled_output"
READ_OUTPUT = "read_output"

# Artifact file and folder names.
MANIFEST_FILE = "manifest.json"
STATISTICS_FILE = "statistics.json"
LABELS_FILE_SUFFIX = "_labels.txt"
MODEL_FILE = "model.keras"
ENCODER_DIR = "encoder"
ENCODER_FILE = "encoder.json"
TRAINING_CONFIG_FILE = "training_config.yaml"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
EXPORT_DIR = "export"
SERVING_DIR = "serving"
CONVERSION_REPORT_FILE = "conversion_report.json"
# Written last into the model folders our tools write (an export, a conversion, a registered copy): readers
# refuse such a folder (it holds TRAINING_CONFIG_FILE or CONVERSION_REPORT_FILE) without it.
COMPLETE_FILE = "_COMPLETE"


class DataError(ValueError):
    """Input records that cannot train this model; the message names the file and feature."""


def task_labels(task: str) -> str:
    return f"{task}_labels"


def task_weights(task: str) -> str:
    return f"{task}_weights"


def task_index(task: str) -> str:
    """The record feature and the model input holding a sentence task's extraction index."""
    return f"{task}_index"


def pretraining_feature_spec(max_seq_length: int, max_predictions_per_seq: int, next_sentence: bool = True):
    """``tf.io.parse_example`` spec of pretraining records (Google's schema)."""
    import tensorflow as tf  # noqa: PLC0415

    spec = {
        INPUT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        INPUT_MASK: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        SEGMENT_IDS: tf.io.FixedLenFeature([max_seq_length], tf.int64),
        MASKED_LM_POSITIONS: tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        MASKED_LM_IDS: tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64),
        MASKED_LM_WEIGHTS: tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32),
    }
    if next_sentence:
        spec[NEXT_SENTENCE_LABELS] = tf.io.FixedLenFeature([1], tf.int64)
    return spec


def causal_feature_spec(max_seq_length: int):
    import tensorflow as tf  # noqa: PLC0415

    return {
        INPUT_IDS: tf.io.FixedLenFeature([max_seq_length + 1], tf.int64),
        INPUT_MASK: tf.io.FixedLenFeature([max_seq_length + 1], tf.int64),
    }
