"""Export: a ``.keras`` model and a SavedModel whose signatures take raw strings.

The SavedModel holds the encoder's in-graph tokenizer (tensorflow-text ops), so a serving system sends text
and gets each served head's answer: ``serving_default(text)`` and ``text_pair(text, text_b)`` return token
ids, the padding mask, ``pooled_output`` (BERT), and per classification task ``<task>_probabilities``,
``<task>_label_id`` and ``<task>_label`` (the label string when a label vocabulary is known); token tasks
answer per position, over the request's padded length (its longest text rounded up to 16 tokens, at most the
trained length). LM heads are training heads and are not served.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from trainer import features, fileio
from trainer.model.saving import save_model
from trainer.tasks.model import build_model, rebuild_backbone, transfer_weights
from trainer.training.config import TrainConfig


SERVING_BUCKET = 16  # requests are padded to a multiple of this (a few shapes, for compiled serving)


class ServingModule(tf.Module):
    """Raw strings -> the model's served heads, all in-graph."""

    def __init__(self, model, tokenizer, special: dict, seq_length: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.seq_length = seq_length
        self.start_id, self.end_id = special["start"], special["end"]
        self.label_tables = {}
        for task in model.tasks:
            if task.served and task.label_names:
                self.label_tables[task.name] = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(tf.range(len(task.label_names), dtype=tf.int64),
                                                        tf.constant(task.label_names)), default_value="")

    def _encode(self, segments):
        """Packed like the training records (``[start] a [end] (b [end])``, trimmed to ``seq_length``), and
        padded to the request's longest input rounded up to :data:`SERVING_BUCKET`, not to ``seq_length``:
        real traffic is short, and the padded positions change no output at the real ones."""
        pieces = [tf.cast(self.tokenizer(s), tf.int64) for s in segments]
        trimmed = tf_text.RoundRobinTrimmer(self.seq_length - 1 - len(pieces)).trim(pieces)
        ids, segment_ids = tf_text.combine_segments(trimmed, self.start_id, self.end_id)
        longest = tf.reduce_max(tf.concat([ids.row_lengths(), [1]], 0))
        length = tf.minimum(-(-longest // SERVING_BUCKET) * SERVING_BUCKET, self.seq_length)
        ids, mask = tf_text.pad_model_inputs(ids, length)
        segment_ids, _ = tf_text.pad_model_inputs(segment_ids, length)
        return tf.cast(ids, tf.int32), tf.cast(mask, tf.int32), tf.cast(segment_ids, tf.int32)

    def _run(self, segments):
        ids, mask, segment_ids = self._encode(segments)
        inputs = {features.TOKEN_IDS: ids, features.PADDING_MASK: mask, features.SEGMENT_IDS: segment_ids,
                  features.ATTENTION_MASK: None}
        for task in self.model.tasks:
            inputs.update(task.serving_inputs(ids, mask))
        outputs = self.model(inputs, training=False)
        result = {features.TOKEN_IDS: ids, features.PADDING_MASK: mask}
        if features.POOLED_OUTPUT in outputs:
            result[features.POOLED_OUTPUT] = tf.cast(outputs[features.POOLED_OUTPUT], tf.float32)
        for task in self.model.tasks:
            if task.served:
                result.update(task.serving_outputs(outputs[task.name], self.label_tables.get(task.name)))
        return result

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return self._run([text])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([None], tf.string, name="text_b")])
    def serve_pair(self, text, text_b):
        return self._run([text, text_b])


def serving_copy(model) -> keras.Model:
    """The trained model in float32 (the training policy may be mixed) with the full last block (training may
    have run it at the heads' positions only): the same backbone class and tasks, the trained weights."""
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = build_model(rebuild_backbone(model.backbone), model.tasks)
        _, fresh = transfer_weights(model, copy)
        if fresh:  # pragma: no cover - the same backbone class and tasks made both
            raise RuntimeError(f"export: weights {fresh} of the serving model have no trained values")
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return copy


def export_model(model, config: TrainConfig, layout, encoder_dir: str | None) -> dict:
    """Publishes <output_dir>/export/ whole (:func:`trainer.fileio.publish_folder`: written beside it, the
    completion marker last, then swapped in): model.keras, serving/ (SavedModel), encoder/, labels, the
    training config. A failed export leaves the previous one as it was."""
    out = fileio.join(config.output_dir, features.EXPORT_DIR)
    serving_model = serving_copy(model)
    served = fileio.publish_folder(out, lambda staging: _write_export(staging, serving_model, model.tasks, config,
                                                                       layout, encoder_dir),
                                   features.COMPLETE_FILE)
    if served is None:
        return {"dir": out, "model": fileio.join(out, features.MODEL_FILE), "serving": None,
                "note": "no encoder assets (encoder_dir / init_from/encoder): no raw-string SavedModel"}
    return {"dir": out, "model": fileio.join(out, features.MODEL_FILE),
            "serving": fileio.join(out, features.SERVING_DIR), "max_seq_length": served}


def _write_export(folder: str, serving_model, tasks, config: TrainConfig, layout, encoder_dir: str | None) -> int | None:
    """Writes the export's files into ``folder``; -> the SavedModel's tokens per text (None: no SavedModel)."""
    from trainer.text.factory import load_encoder  # noqa: PLC0415

    config.save(fileio.join(folder, features.TRAINING_CONFIG_FILE))
    save_model(serving_model, fileio.join(folder, features.MODEL_FILE))
    for task in tasks:
        if task.has_label_names and task.label_names:
            fileio.atomic_write_text(fileio.join(folder, task.name + features.LABELS_FILE_SUFFIX),
                                     "\n".join(task.label_names) + "\n")
    if encoder_dir is None:
        return None
    encoder = load_encoder(encoder_dir)
    encoder.save(fileio.join(folder, features.ENCODER_DIR))
    special = {"start": encoder.special.id("start"), "end": encoder.special.id("end")}
    seq_length = config.max_seq_length or layout.seq_length
    module = ServingModule(serving_model, encoder.tf_tokenizer(), special, seq_length)
    signatures = {"serving_default": module.serve.get_concrete_function(),
                  "text_pair": module.serve_pair.get_concrete_function()}
    tf.saved_model.save(module, fileio.join(folder, features.SERVING_DIR), signatures=signatures)
    return seq_length
