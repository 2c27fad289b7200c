"""Masked language modelling (BERT): predict the original token at masked positions.

Records carry Google's ``masked_lm_positions`` / ``masked_lm_ids`` / ``masked_lm_weights``; with dynamic
masking (``data.dynamic_masking``) targets are made on the fly for records that have token ids only. The head
runs only at the masked positions; its decoder is tied to the backbone's token embedding when the backbone
has one to share (``token_embedding`` with ``reverse=True``), else it is a dense layer of its own.
"""

from __future__ import annotations

import dataclasses

from trainer import features
from trainer.tasks.base import HeadContext, Task


@dataclasses.dataclass(frozen=True)
class DynamicMasking:
    """Masked-LM targets made on the fly (tensorflow-text, BERT's 80/10/10) for records without MLM features."""

    vocab_size: int
    mask_id: int
    unselectable_ids: tuple[int, ...]
    rate: float = 0.15


class MaskedLM(Task):
    kind = "masked_lm"
    reads_positions = True
    at_most_one = True

    def record_features(self, layout) -> dict[str, int]:
        p = layout.predictions
        return {features.MASKED_LM_POSITIONS: p, features.MASKED_LM_IDS: p, features.MASKED_LM_WEIGHTS: p}

    def _masks_dynamically(self, present_features, source, layout) -> bool:
        return (layout.masking is not None and features.MASKED_LM_IDS not in present_features
                and source.kind != features.CAUSAL_RECORDS)

    def feeds(self, source, layout) -> bool:
        if self._masks_dynamically(source.feature_lengths, source, layout):
            return True
        return super().feeds(source, layout)

    def parse(self, record, example, source, layout) -> None:
        import tensorflow as tf  # noqa: PLC0415

        p = layout.predictions
        if self._masks_dynamically(record, source, layout):
            example[features.TOKEN_IDS], positions, ids, weights = mask_dynamically(
                example[features.TOKEN_IDS], example[features.PADDING_MASK], p, layout.masking)
        else:
            positions = record.get(features.MASKED_LM_POSITIONS, tf.zeros([p], tf.int32))
            ids = record.get(features.MASKED_LM_IDS, tf.zeros([p], tf.int32))
            weights = record.get(features.MASKED_LM_WEIGHTS, tf.zeros([p], tf.float32))
        example[features.MASKED_POSITIONS], example[self.labels_key()], example[self.weights_key()] = positions, ids, weights

    def synthetic(self, draws, layout, vocab_size: int) -> dict:
        import tensorflow as tf  # noqa: PLC0415

        n, p = layout.seq_length, layout.predictions
        positions = tf.sort(tf.random.experimental.stateless_shuffle(tf.range(1, n), draws.seed())[:p])
        return {features.MASKED_POSITIONS: positions, self.labels_key(): draws.ints([p], vocab_size),
                self.weights_key(): tf.ones([p])}

    def input_specs(self):
        return {features.MASKED_POSITIONS: ((None,), "int32")}

    def read_positions(self, inputs):
        return inputs[features.MASKED_POSITIONS]

    def head(self, context: HeadContext, inputs):
        import keras  # noqa: PLC0415

        from trainer.model.layers import Bias, NamedActivation, initializer  # noqa: PLC0415

        backbone, name = context.backbone, self.name
        init = initializer(getattr(backbone, "initializer_range", 0.02))
        h = context.rows(self)
        h = keras.layers.Dense(context.hidden_size(), kernel_initializer=init, name=f"{name}_transform")(h)
        h = NamedActivation(getattr(backbone, "activation", "gelu"), name=f"{name}_activation")(h)
        h = keras.layers.LayerNormalization(epsilon=getattr(backbone, "layer_norm_epsilon", 1e-12),
                                            name=f"{name}_layer_norm")(h)
        return Bias(name=f"{name}_output_bias")(decode(backbone, h, name, init))

    def serving_inputs(self, token_ids, padding_mask) -> dict:
        import tensorflow as tf  # noqa: PLC0415

        return {features.MASKED_POSITIONS: tf.zeros([tf.shape(token_ids)[0], 1], tf.int32)}


def decode(backbone, hidden, name: str, init):
    """Hidden states -> vocabulary logits: tied to the backbone's token embedding when it can project back
    (``reverse=True``), else a dense layer of the head's own (``<name>_decoder``)."""
    import keras  # noqa: PLC0415

    embedding = getattr(backbone, "token_embedding", None)
    if embedding is not None and getattr(embedding, "reversible", False):
        return embedding(hidden, reverse=True)
    vocabulary = getattr(backbone, "vocabulary_size", None)
    if not vocabulary:
        raise ValueError(f"tasks: {name}: the backbone {backbone.name!r} has neither a reversible token_embedding "
                         "nor a vocabulary_size for an untied decoder")
    return keras.layers.Dense(vocabulary, use_bias=False, kernel_initializer=init, name=f"{name}_decoder")(hidden)


def mask_dynamically(ids, mask, predictions: int, masking: DynamicMasking):
    """BERT's 80/10/10 masking of one example with tensorflow-text; -> (ids, positions, original ids, weights)."""
    import tensorflow as tf  # noqa: PLC0415
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
