"""Export: a ``.keras`` model and a SavedModel whose signatures take raw strings.

The SavedModel holds the encoder's in-graph tokenizer (tensorflow-text ops), so a serving system sends text
and gets each served head's answer: ``serving_default(text)`` and ``text_pair(text, text_b)`` return token
ids, the padding mask, ``pooled_output`` (BERT), and per classification task ``<task>_probabilities``,
``<task>_label_id`` and ``<task>_label`` (the label string when a label vocabulary is known); token tasks
answer per position, over the request's padded length (its longest text rounded up to 8 tokens, at most the
trained length). A request's texts are packed into shared rows (a backbone that supports packing) or run in
groups of similar length (:class:`ServingModule`). LM heads are training heads and are not served.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from trainer import features, fileio
from trainer.model.layers import freeze_for_serving
from trainer.model.saving import save_model
from trainer.tasks.model import build_heads, build_model, rebuild_backbone, rows_input, transfer_weights
from trainer.training.config import TrainConfig


SERVING_BUCKET = 8  # a group is padded to a multiple of this many tokens (a few shapes per group size)
SERVING_GROUP = 8  # texts per forward pass: a request is sorted by length and run in groups of this many
PACKED_ROWS = 32  # packed rows per forward pass (at 128 tokens: a training batch's 4,096), so memory stays bounded


def first_fit(lengths, capacity: int):
    """Bins for texts of ``lengths`` [n] (each at most ``capacity``), placed in order, each into the first row
    with room: -> (row [n], offset in the row [n]). Given lengths longest first, this is first-fit decreasing:
    at most 11/9 of the fewest rows, plus one. Sequential (one step per text, each over the rows)."""
    def place(state, length):
        remaining = state[0]
        row = tf.argmax(tf.cast(remaining >= length, tf.int32), output_type=tf.int32)
        return tf.tensor_scatter_nd_sub(remaining, [[row]], [length]), row, capacity - remaining[row]

    initial = (tf.fill([tf.size(lengths)], capacity), tf.constant(0), tf.constant(0))
    _, rows, offsets = tf.scan(place, lengths, initializer=initial)
    return rows, offsets


class ServingModule(tf.Module):
    """Raw strings -> the model's served heads, all in-graph.

    Real traffic is short and uneven (KJV verses: 3 to 90 words), so a request is not padded to the trained
    length. Where the backbone supports packing (``supports_packing``), its texts are packed into rows of the
    trained length (first-fit decreasing; the rows as wide as the fullest, rounded up to :data:`SERVING_BUCKET`),
    each text with its own positions and a block-diagonal attention mask, and the heads run on each text's own
    rows (:func:`trainer.tasks.model.build_heads`): little padding, and a few large matrices per request.
    Otherwise the texts are sorted by length and run in groups of :data:`SERVING_GROUP`, each padded to its own
    longest text rounded up to :data:`SERVING_BUCKET`. The answers come back in the request's order; per-position
    answers span the request's longest text (rounded up), with probabilities 0, label id -1 and label "" past
    each text's end. Neither packing nor padding changes an output at the real positions, so the answers equal
    the fixed-length path's (within float rounding)."""

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
        self.served = [t for t in model.tasks if t.served]
        backbone = model.backbone
        self.packed = bool(getattr(backbone, "supports_packing", False))
        if self.packed:
            # compact: the last block runs only at each text's [CLS] and the heads' read positions
            self.compact = (bool(getattr(backbone, "supports_read_positions", False))
                            and all(t.reads_positions for t in self.served))
            probe = tf.zeros([1, 2], tf.int32)  # two tokens: a softmax over one key warns
            self.hidden_size = int(backbone({features.TOKEN_IDS: probe, features.PADDING_MASK: tf.ones_like(probe)},
                                            training=False)[features.SEQUENCE_OUTPUT].shape[-1])
            self.heads = None
            if self.served:
                with float32_policy():  # as the model's serving copy
                    self.heads = build_heads(backbone, self.served, self.hidden_size, self.compact)
                _, fresh = transfer_weights(model, self.heads)
                if fresh:  # pragma: no cover - the heads are named as in the model
                    raise RuntimeError(f"export: head weights {fresh} have no trained values")
        # What the model answers: name -> (dtype, shape, per position). Traced once here, so the grouped loop can
        # collect each answer; an answer is per position when its second axis follows the length.
        traced = tf.function(self._forward).get_concrete_function(
            *[tf.TensorSpec([None, None], tf.int32)] * 3).structured_outputs
        self._answers = {name: (value.dtype, value.shape, value.shape.rank >= 2 and value.shape[1] is None)
                         for name, value in sorted(traced.items())}

    def _pack(self, segments):
        """Ragged token and segment ids, packed like the training records (``[start] a [end] (b [end])``,
        trimmed to ``seq_length``)."""
        pieces = [tf.cast(self.tokenizer(s), tf.int64) for s in segments]
        trimmed = tf_text.RoundRobinTrimmer(self.seq_length - 1 - len(pieces)).trim(pieces)
        return tf_text.combine_segments(trimmed, self.start_id, self.end_id)

    def _pad(self, ids, segment_ids):
        """Dense int32 ids, padding mask and segment ids, padded to the longest row rounded up to
        :data:`SERVING_BUCKET` (at most ``seq_length``)."""
        longest = tf.reduce_max(tf.concat([ids.row_lengths(), [1]], 0))
        length = tf.minimum(-(-longest // SERVING_BUCKET) * SERVING_BUCKET, self.seq_length)
        ids, mask = tf_text.pad_model_inputs(ids, length)
        segment_ids, _ = tf_text.pad_model_inputs(segment_ids, length)
        return tf.cast(ids, tf.int32), tf.cast(mask, tf.int32), tf.cast(segment_ids, tf.int32)

    def _forward(self, ids, mask, segment_ids):
        """One padded group -> the served answers."""
        inputs = {features.TOKEN_IDS: ids, features.PADDING_MASK: mask, features.SEGMENT_IDS: segment_ids,
                  features.ATTENTION_MASK: None}
        for task in self.model.tasks:
            inputs.update(task.serving_inputs(ids, mask))
        outputs = self.model(inputs, training=False)
        return self._answer(outputs, outputs.get(features.POOLED_OUTPUT))

    def _answer(self, logits: dict, pooled) -> dict:
        result = {} if pooled is None else {features.POOLED_OUTPUT: tf.cast(pooled, tf.float32)}
        for task in self.served:
            result.update(task.serving_outputs(logits[task.name], self.label_tables.get(task.name)))
        return result

    def _packed_forward(self, ids, segment_ids, request_ids, request_mask, request_segments):
        """The request's texts (ragged ``ids``, ``segment_ids``) packed into rows -> the served answers, in the
        request's order; per-position answers over the request's padded length. The rows run
        :data:`PACKED_ROWS` at a time, each pass answering the texts it holds, so memory stays bounded."""
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        count = tf.size(lengths)
        order = tf.argsort(-lengths, stable=True)  # placed longest first
        rows, offsets = first_fit(tf.gather(lengths, order), self.seq_length)
        row_count = tf.maximum(tf.reduce_max(tf.concat([rows, [-1]], 0)) + 1, 1)
        longest_row = tf.reduce_max(tf.concat([offsets + tf.gather(lengths, order), [1]], 0))
        width = tf.minimum(-(-longest_row // SERVING_BUCKET) * SERVING_BUCKET, self.seq_length)
        # every token of the placed texts -> (row, column) in the packed rows
        placed = tf.gather(ids, order)
        text = tf.cast(placed.value_rowids(), tf.int32)
        within = tf.range(tf.size(text)) - tf.gather(tf.cast(placed.row_starts(), tf.int32), text)
        cells = tf.stack([tf.gather(rows, text), tf.gather(offsets, text) + within], 1)

        def packed(values):
            return tf.scatter_nd(cells, tf.cast(values, tf.int32), [row_count, width])

        packed_rows = {features.TOKEN_IDS: packed(placed.flat_values),
                       features.SEGMENT_IDS: packed(tf.gather(segment_ids, order).flat_values),
                       features.POSITION_IDS: packed(within), "owner": packed(text + 1)}  # owner: which text, 0 = none
        back = tf.math.invert_permutation(order)
        row_of, offset_of = tf.gather(rows, back), tf.gather(offsets, back)  # per text, in the request's order
        head_inputs = {features.TOKEN_IDS: request_ids, features.PADDING_MASK: request_mask,
                       features.SEGMENT_IDS: request_segments}
        for task in self.served:
            head_inputs.update(task.serving_inputs(request_ids, request_mask))
        read_at = [(task, task.read_positions(head_inputs)) for task in self.served]  # (no := here: AutoGraph
        readers = [(task, at) for task, at in read_at if at is not None]  # cannot convert it and warns at export)
        if self.compact:
            # per text: its [CLS] (the pooled output's row), then each reader's positions, all within the text
            relative = tf.concat([tf.zeros([count, 1], tf.int32)] + [tf.cast(p, tf.int32) for _, p in readers], 1)
            per_text = tf.shape(relative)[1]
            # a text's slot in its row: its rank among the row's texts
            by_row = tf.argsort(row_of, stable=True)
            sorted_rows = tf.gather(row_of, by_row)
            first_of_row = tf.math.unsorted_segment_min(tf.range(count), sorted_rows, row_count)
            slot = tf.gather(tf.range(count) - tf.gather(first_of_row, sorted_rows), tf.math.invert_permutation(by_row))
            slots = tf.reduce_max(tf.concat([slot, [0]], 0)) + 1
            columns = slot[:, None] * per_text + tf.range(per_text)[None, :]  # [texts, per_text]
            where = tf.stack([tf.broadcast_to(row_of[:, None], tf.shape(columns)), columns], -1)
            packed_rows[features.READ_POSITIONS] = tf.scatter_nd(
                tf.reshape(where, [-1, 2]), tf.reshape(offset_of[:, None] + relative, [-1]), [row_count, slots * per_text])
        else:
            columns = offset_of[:, None] + tf.range(tf.shape(request_ids)[1])[None, :]
            columns = tf.minimum(columns, width - 1)  # past a text's end: masked by the heads and the answers

        backbone, pooler = self.model.backbone, getattr(self.model.backbone, "pooler", None)
        passes = (row_count + PACKED_ROWS - 1) // PACKED_ROWS
        arrays = {name: tf.TensorArray(dtype, size=passes, infer_shape=False)
                  for name, (dtype, _, _) in self._answers.items()}

        def run_pass(index, members, arrays):
            low = index * PACKED_ROWS
            chunk = {name: value[low:low + PACKED_ROWS] for name, value in packed_rows.items()}
            owner = chunk.pop("owner")
            chunk[features.PADDING_MASK] = tf.cast(owner > 0, tf.int32)
            chunk[features.ATTENTION_MASK] = tf.cast((owner[:, :, None] == owner[:, None, :]) & (owner[:, None, :] > 0),
                                                     tf.int32)  # each text attends only to itself
            outputs = backbone(chunk, training=False)
            mine = tf.reshape(tf.where((row_of >= low) & (row_of < low + PACKED_ROWS)), [-1])  # texts of this pass
            at = tf.stack([tf.broadcast_to(tf.gather(row_of, mine)[:, None] - low, tf.shape(tf.gather(columns, mine))),
                           tf.gather(columns, mine)], -1)
            inputs = {name: tf.gather(value, mine) for name, value in head_inputs.items()}
            inputs[features.ATTENTION_MASK] = None
            encoded = {}
            if self.compact:
                text_rows = tf.gather_nd(outputs[features.READ_OUTPUT], at)  # [texts, per_text, hidden]
                first, start = text_rows[:, 0], 1
                for task, positions in readers:
                    width_of = tf.shape(positions)[1]
                    encoded[rows_input(task)] = text_rows[:, start:start + width_of]
                    start = start + width_of
            else:
                sequence = tf.gather_nd(outputs[features.SEQUENCE_OUTPUT], at)  # [texts, length, hidden]
                first = sequence[:, 0]
                encoded[features.SEQUENCE_OUTPUT] = sequence
            pooled = None if pooler is None else pooler(first)
            if pooled is not None:
                encoded[features.POOLED_OUTPUT] = pooled
            logits = self.heads({**inputs, **encoded}, training=False) if self.served else {}
            answers = self._answer(logits, pooled)
            for name in self._answers:
                arrays[name] = arrays[name].write(index, answers[name])
            return index + 1, members.write(index, tf.cast(mine, tf.int32)), arrays

        _, members, arrays = tf.while_loop(  # one pass at a time: the passes are independent, and memory is the point
            lambda index, *_: index < passes, run_pass,
            (tf.constant(0), tf.TensorArray(tf.int32, size=passes, infer_shape=False), arrays), parallel_iterations=1)
        back = tf.math.invert_permutation(members.concat())  # each text is answered in one pass
        return {name: tf.gather(arrays[name].concat(), back) for name in self._answers}

    def _run(self, segments):
        ids, segment_ids = self._pack(segments)
        request_ids, request_mask, request_segments = self._pad(ids, segment_ids)
        if self.packed:
            return self._finish(self._packed_forward(ids, segment_ids, request_ids, request_mask, request_segments),
                                request_ids, request_mask)
        length = tf.shape(request_ids)[1]
        order = tf.argsort(ids.row_lengths(), stable=True)
        count = tf.size(order)
        # at least one pass: an empty request runs the model on an empty batch (TensorFlow cannot concatenate
        # an empty list of per-position answers, whose shape is not fully known)
        groups = tf.maximum((count + SERVING_GROUP - 1) // SERVING_GROUP, 1)
        arrays = {name: tf.TensorArray(dtype, size=groups, infer_shape=False)
                  for name, (dtype, _, _) in self._answers.items()}

        def group(g, arrays):
            rows = order[g * SERVING_GROUP:tf.minimum((g + 1) * SERVING_GROUP, count)]
            answers = self._forward(*self._pad(tf.gather(ids, rows), tf.gather(segment_ids, rows)))
            for name, (_, _, per_position) in self._answers.items():
                value = answers[name]
                if per_position:  # to the request's length (each group has its own)
                    padding = [[0, 0], [0, length - tf.shape(value)[1]]] + [[0, 0]] * (value.shape.rank - 2)
                    value = tf.pad(value, padding)
                arrays[name] = arrays[name].write(g, value)
            return g + 1, arrays

        _, arrays = tf.while_loop(lambda g, _: g < groups, group, (tf.constant(0), arrays))
        back = tf.math.invert_permutation(order)  # sorted order -> the request's order
        return self._finish({name: tf.gather(arrays[name].concat(), back) for name in self._answers},
                            request_ids, request_mask)

    def _finish(self, answers: dict, request_ids, request_mask):
        """Answers in the request's order -> the signature's outputs: past each text's end, no answer."""
        result = {features.TOKEN_IDS: request_ids, features.PADDING_MASK: request_mask}
        for name, (dtype, shape, per_position) in self._answers.items():
            value = answers[name]
            value.set_shape(shape)
            if per_position:  # past each text's end: no answer
                real = tf.reshape(tf.cast(request_mask, tf.bool), tf.concat([tf.shape(request_mask),
                                                                               tf.ones([shape.rank - 2], tf.int32)], 0))
                value = tf.where(real, value, tf.constant("" if dtype == tf.string else -1 if dtype.is_integer else 0,
                                                          dtype))
            result[name] = value
        return result

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return self._run([text])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([None], tf.string, name="text_b")])
    def serve_pair(self, text, text_b):
        return self._run([text, text_b])


@contextlib.contextmanager
def float32_policy():
    """Layers built inside compute in float32, whatever the training policy (mixed precision on GPU / TPU)."""
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)


def serving_copy(model, last_block_at_read_positions: bool = False) -> keras.Model:
    """The trained model in float32 (the training policy may be mixed): the same backbone class and tasks, the
    trained weights. With the full last block (training may have run it at the heads' positions only), unless
    ``last_block_at_read_positions``: then, where every task reads a few positions (sentence tasks), the last
    block runs only there, with the same numbers (the raw-string SavedModel's copy)."""
    with float32_policy():
        copy = build_model(rebuild_backbone(model.backbone), model.tasks, last_block_at_read_positions)
        _, fresh = transfer_weights(model, copy)
        if fresh:  # pragma: no cover - the same backbone class and tasks made both
            raise RuntimeError(f"export: weights {fresh} of the serving model have no trained values")
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
    served = serving_copy(serving_model, last_block_at_read_positions=True)
    freeze_for_serving(served)
    module = ServingModule(served, encoder.tf_tokenizer(), special, seq_length)
    signatures = {"serving_default": module.serve.get_concrete_function(),
                  "text_pair": module.serve_pair.get_concrete_function()}
    tf.saved_model.save(module, fileio.join(folder, features.SERVING_DIR), signatures=signatures)
    return seq_length
