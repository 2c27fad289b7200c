"""Export: a ``.keras`` model and a SavedModel whose signatures take raw strings.

The SavedModel holds the encoder's in-graph tokenizer (tensorflow-text ops), so a serving system sends text
and gets each head's answer: ``serving_default(text)`` and ``text_pair(text, text_b)`` return token ids, the
padding mask, ``pooled_output`` (BERT), and per sentence / next-sentence head ``<head>_probabilities`` and
``<head>_label`` (the label string when a label vocabulary is known), per token head the same per position.
LM heads are training heads and are not served.
"""

from __future__ import annotations


import keras
import tensorflow as tf
import tensorflow_text as tf_text

from trainer import features, fileio
from trainer.model.builder import build_model, config_from_model, transfer_weights
from trainer.model.saving import MODEL_FILE, save_model
from trainer.training import tasks as tasks_lib
from trainer.training.config import TrainConfig

SERVING_DIR = "serving"
EXPORT_DIR = "export"


class ServingModule(tf.Module):
    """Raw strings -> the model's classifier heads, all in-graph."""

    def __init__(self, model, tokenizer, special: dict, seq_length: int, tasks, label_names: dict):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.seq_length = seq_length
        self.start_id, self.end_id = special["start"], special["end"]
        self.heads = [(t.name, t.kind, t.extraction_index) for t in tasks
                      if t.kind in ("sentence", "token", "next_sentence")]
        self.has_mlm = any(t.kind == "masked_lm" for t in tasks)
        self.label_tables = {}
        for name, names in label_names.items():
            self.label_tables[name] = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.range(len(names), dtype=tf.int64), tf.constant(names)),
                default_value="")

    def _encode(self, segments):
        pieces = [tf.cast(self.tokenizer(s), tf.int64) for s in segments]
        trimmed = tf_text.RoundRobinTrimmer(self.seq_length - 1 - len(pieces)).trim(pieces)
        ids, segment_ids = tf_text.combine_segments(trimmed, self.start_id, self.end_id)
        ids, mask = tf_text.pad_model_inputs(ids, self.seq_length)
        segment_ids, _ = tf_text.pad_model_inputs(segment_ids, self.seq_length)
        return tf.cast(ids, tf.int32), tf.cast(mask, tf.int32), tf.cast(segment_ids, tf.int32)

    def _run(self, segments):
        ids, mask, segment_ids = self._encode(segments)
        batch = tf.shape(ids)[0]
        inputs = {"token_ids": ids, "padding_mask": mask, "segment_ids": segment_ids, "attention_mask": None}
        if self.has_mlm:
            inputs["masked_positions"] = tf.zeros([batch, 1], tf.int32)
        last = tf.reduce_sum(mask, axis=1) - 1
        for name, kind, where in self.heads:
            if kind == "sentence":
                inputs[f"{name}_index"] = tf.zeros([batch], tf.int32) if where == "first" else last
        outputs = self.model(inputs, training=False)
        result = {"token_ids": ids, "padding_mask": mask}
        if "pooled_output" in outputs:
            result["pooled_output"] = tf.cast(outputs["pooled_output"], tf.float32)
        for name, _, _ in self.heads:
            probabilities = tf.nn.softmax(tf.cast(outputs[name], tf.float32), axis=-1)
            label_ids = tf.argmax(probabilities, axis=-1)
            result[f"{name}_probabilities"] = probabilities
            result[f"{name}_label_id"] = tf.cast(label_ids, tf.int32)
            if name in self.label_tables:
                result[f"{name}_label"] = self.label_tables[name].lookup(label_ids)
        return result

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return self._run([text])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([None], tf.string, name="text_b")])
    def serve_pair(self, text, text_b):
        return self._run([text, text_b])


def _save_tree(build, final: str) -> None:
    """Writes a folder beside ``final`` then swaps it in, so a reader never sees half a SavedModel."""
    staging = final.rstrip("/") + ".partial"
    if tf.io.gfile.exists(staging):
        tf.io.gfile.rmtree(staging)
    build(staging)
    if tf.io.gfile.exists(final):
        tf.io.gfile.rmtree(final)
    tf.io.gfile.rename(staging, final)


def export_model(model, config: TrainConfig, layout, encoder_dir: str | None, label_names: dict,
                 num_classes: dict) -> dict:
    """Writes <output_dir>/export/: model.keras, serving/ (SavedModel), encoder/, labels, the training config."""
    from trainer.text.factory import load_encoder  # noqa: PLC0415

    out = fileio.join(config.output_dir, EXPORT_DIR)
    fileio.makedirs(out)
    # Serving copy in float32 (the training policy may be mixed), rebuilt with the same heads and weights and
    # the full last block (training may have run it at the heads' positions only).
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        serving_model = build_model(config_from_model(model), tasks_lib.head_configs(config.tasks, num_classes))
        _, fresh = transfer_weights(model, serving_model)
        if fresh:  # pragma: no cover - the same builder made both
            raise RuntimeError(f"export: layers {fresh} of the serving model have no trained weights")
    finally:
        keras.mixed_precision.set_global_policy(policy)
    save_model(serving_model, fileio.join(out, MODEL_FILE))
    config.save(fileio.join(out, "training_config.yaml"))
    for task, names in label_names.items():
        fileio.atomic_write_text(fileio.join(out, task + features.LABELS_FILE_SUFFIX), "\n".join(names) + "\n")
    result = {"dir": out, "model": fileio.join(out, MODEL_FILE)}
    if encoder_dir is None:
        result["serving"] = None
        result["note"] = "no encoder assets (encoder_dir / init_from/encoder): no raw-string SavedModel"
        return result
    encoder = load_encoder(encoder_dir)
    if fileio.join(out, "encoder") != encoder_dir.rstrip("/"):
        encoder.save(fileio.join(out, "encoder"))
    special = {"start": encoder.special.id("start"), "end": encoder.special.id("end")}
    seq_length = config.max_seq_length or layout.seq_length
    module = ServingModule(serving_model, encoder.tf_tokenizer(), special, seq_length, config.tasks, label_names)
    signatures = {"serving_default": module.serve.get_concrete_function(),
                  "text_pair": module.serve_pair.get_concrete_function()}
    _save_tree(lambda path: tf.saved_model.save(module, path, signatures=signatures), fileio.join(out, SERVING_DIR))
    result["serving"] = fileio.join(out, SERVING_DIR)
    result["max_seq_length"] = seq_length
    return result


