"""The backbone contract, and our transformer (BERT or GPT-1 by configuration) honouring it.

A backbone is a Keras model that takes a dict of ``token_ids`` [batch, length], ``segment_ids`` [batch, length]
(optional), ``padding_mask`` [batch, length] (1 = real token) and an optional ``attention_mask``
[batch, query, key] (the seed's explicit mask, e.g. custom or causal), and returns a dict with
``sequence_output`` [batch, length, hidden] and, where it has a pooler, ``pooled_output`` [batch, hidden].
Task heads (:mod:`trainer.tasks`) use only that, plus optional public attributes:

- ``token_embedding``: a layer with ``reversible = True`` whose ``call(h, reverse=True)`` projects onto the
  vocabulary, so LM decoders are tied to it (otherwise they get a decoder of their own);
- ``vocabulary_size``: for untied LM decoders and the records' vocabulary check;
- ``max_sequence_length``: the longest input (``None``: no limit);
- ``pooler``: the dense layer behind ``pooled_output`` (sentence heads start from its weights);
- ``activation``, ``layer_norm_epsilon``, ``initializer_range``: how heads on it are built (BERT's MLM transform);
- ``supports_read_positions``: it also accepts ``read_positions`` [batch, n] and then returns ``read_output``
  [batch, n, hidden] (the last layer evaluated only at those positions) instead of ``sequence_output``;
- ``supports_packing``: it also accepts ``position_ids`` [batch, length] (each packed text's positions restart
  at 0) and, with a block-diagonal ``attention_mask`` (a text attends only to itself), computes for each text
  of a packed row what it computes for the text alone; its ``pooler`` maps a text's first row to its pooled
  output. The raw-string SavedModel then packs short texts into shared rows (:mod:`trainer.training.export`).

Any Keras model with that interface trains, evaluates and exports with our heads (a BiLSTM in the tests).
"""

from __future__ import annotations

import keras
from keras import ops

from trainer import features
from trainer.model.config import TransformerConfig
from trainer.model.layers import (
    PACKAGE,
    AttentionMask,
    Dropout,
    PositionEmbedding,
    ReversibleEmbedding,
    TransformerBlock,
    initializer,
)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Transformer(keras.Model):
    """BERT or OpenAI GPT-1 (post-layer-norm transformer encoder), from a :class:`TransformerConfig`.

    Layer and weight names are stable (``token_embedding``, ``layer_{i}/attention``, ``pooler``, ...): the
    checkpoint converters find weights by them. The config is stored (``config``, ``get_config``), never
    reconstructed from layers. Every layer is built in the constructor, so weights exist before any call."""

    supports_read_positions = True
    supports_packing = True

    def __init__(self, config: TransformerConfig | dict, **kwargs):
        kwargs.setdefault("name", "backbone")
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = TransformerConfig.from_dict(config, source=f"{self.name} config")
        self.config = config.validate()
        init = initializer(config.initializer_range)
        hidden = (None, None, config.hidden_size)
        self.token_embedding = ReversibleEmbedding(config.vocab_size, config.hidden_size, embeddings_initializer=init,
                                                   name="token_embedding")
        self.token_embedding.build((None, None))
        self.position_embedding = PositionEmbedding(config.max_positions, config.initializer_range,
                                                    name="position_embedding")
        self.position_embedding.build(hidden)
        self.segment_embedding = None
        if config.type_vocab_size:
            self.segment_embedding = keras.layers.Embedding(config.type_vocab_size, config.hidden_size,
                                                            embeddings_initializer=init, name="segment_embedding")
            self.segment_embedding.build((None, None))
        self.embeddings_layer_norm = None
        if config.embedding_layer_norm:
            self.embeddings_layer_norm = keras.layers.LayerNormalization(epsilon=config.layer_norm_epsilon,
                                                                         name="embeddings_layer_norm")
            self.embeddings_layer_norm.build(hidden)
        self.embeddings_dropout = Dropout(config.dropout, name="embeddings_dropout")
        self.mask_builder = AttentionMask(config.causal, name="attention_mask_builder")
        for i in range(config.num_layers):
            block = TransformerBlock(config.num_heads, config.intermediate_size, config.activation,
                                     config.layer_norm_epsilon, config.dropout, config.attention_dropout,
                                     config.initializer_range, name=f"layer_{i}")
            block.build(hidden)
            # One attribute per block, not a list: tf.train.Checkpoint does not see into Keras's tracked lists.
            setattr(self, f"layer_{i}", block)
        self.pooler = None
        if config.pooler:
            self.pooler = keras.layers.Dense(config.hidden_size, activation="tanh", kernel_initializer=init, name="pooler")
            self.pooler.build((None, config.hidden_size))
        self.built = True

    @property
    def blocks(self) -> list[TransformerBlock]:
        return [getattr(self, f"layer_{i}") for i in range(self.config.num_layers)]

    # --- the contract's optional attributes ---------------------------------------------------------------
    @property
    def vocabulary_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_sequence_length(self) -> int:
        return self.config.max_positions

    @property
    def activation(self) -> str:
        return self.config.activation

    @property
    def layer_norm_epsilon(self) -> float:
        return self.config.layer_norm_epsilon

    @property
    def initializer_range(self) -> float:
        return self.config.initializer_range

    # --- forward ------------------------------------------------------------------------------------------
    def call(self, inputs, training=None):
        """-> {sequence_output, pooled_output (with a pooler)}; given ``read_positions`` [batch, n], the last
        block runs only at those positions (and at [CLS] for the pooler: keys and values still span the
        sequence, so the numbers are the same) -> {read_output [batch, n, hidden], pooled_output}."""
        token_ids = inputs[features.TOKEN_IDS]
        x = self.token_embedding(token_ids)
        x = x + self.position_embedding(x, inputs.get(features.POSITION_IDS))
        if self.segment_embedding is not None:
            segment_ids = inputs.get(features.SEGMENT_IDS)
            x = x + self.segment_embedding(ops.zeros_like(token_ids) if segment_ids is None else segment_ids)
        if self.embeddings_layer_norm is not None:
            x = self.embeddings_layer_norm(x)
        x = self.embeddings_dropout(x, training=training)
        mask = self.mask_builder(inputs[features.PADDING_MASK], inputs.get(features.ATTENTION_MASK))
        for block in self.blocks[:-1]:
            x = block(x, attention_mask=mask, training=training)
        read = inputs.get(features.READ_POSITIONS)
        if read is None:
            sequence = self.blocks[-1](x, attention_mask=mask, training=training)
            outputs = {features.SEQUENCE_OUTPUT: sequence}
            if self.pooler is not None:
                outputs[features.POOLED_OUTPUT] = self.pooler(sequence[:, 0])
            return outputs
        read = ops.cast(read, "int32")
        if self.pooler is None:
            return {features.READ_OUTPUT: self.blocks[-1](x, attention_mask=mask, training=training, query_positions=read)}
        first = ops.zeros_like(read[:, :1])
        rows = self.blocks[-1](x, attention_mask=mask, training=training,
                               query_positions=ops.concatenate([first, read], axis=1))
        return {features.READ_OUTPUT: rows[:, 1:], features.POOLED_OUTPUT: self.pooler(rows[:, 0])}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
