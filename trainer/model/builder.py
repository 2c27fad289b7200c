"""Builds the functional Keras model: one transformer encoder plus any set of named heads.

Inputs (by name): ``token_ids`` [batch, length], ``segment_ids`` [batch, length] (optional),
``padding_mask`` [batch, length] (1 = real token), ``attention_mask`` [batch, length, length] (optional:
the seed's explicit mask, e.g. custom or causal), ``masked_positions`` [batch, n] for a masked-LM head, and
``<head>_index`` [batch] (the extraction index) for each sentence head.
Outputs (by name): ``sequence_output``, ``pooled_output`` (when the encoder has BERT's pooler) and one output
per head, named as the head: logits [batch, n, vocab] (masked_lm), [batch, length, vocab] (causal_lm),
[batch, 2] (next_sentence), [batch, classes] (sentence), [batch, length, classes] (token). A training model
built with ``last_block_at_read_positions`` has the head outputs and ``pooled_output`` but no ``sequence_output``.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras

from trainer.model.config import HeadConfig, TransformerConfig
from trainer.model.layers import (
    AttentionMask,
    Bias,
    Dropout,
    GatherIndex,
    GatherPositions,
    PositionEmbedding,
    ReversibleEmbedding,
    NamedActivation,
    TransformerBlock,
    initializer,
)

MLM_POSITIONS = "masked_positions"


def index_input_name(head: str) -> str:
    return f"{head}_index"


POSITION_HEADS = ("masked_lm", "next_sentence", "sentence")


def reads_positions_only(heads: Mapping[str, HeadConfig]) -> bool:
    """True when every head reads the encoder at a few positions (masked positions, [CLS], extraction
    indices), so the last block need not run anywhere else."""
    return bool(heads) and all(h.kind in POSITION_HEADS for h in heads.values())


def build_model(
    config: TransformerConfig, heads: Mapping[str, HeadConfig] | None = None, name: str = "bertkeras",
    last_block_at_read_positions: bool = False,
) -> keras.Model:
    """The encoder plus ``heads``. With ``last_block_at_read_positions`` (and heads that all read positions, see
    :func:`reads_positions_only`) the last block runs only at the positions the heads read: the heads' outputs
    are the same, and the model has no ``sequence_output``. For BERT-mini MLM+NSP training that is 13% fewer
    FLOPs; the trainer uses it, and exports the full model."""
    config.validate()
    heads = dict(heads or {})
    for head_name, head in heads.items():
        head.validate(prefix=f"heads.{head_name}.")
    init = initializer(config.initializer_range)

    inputs = {
        "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
        "segment_ids": keras.Input((None,), dtype="int32", name="segment_ids", optional=True),
        "padding_mask": keras.Input((None,), dtype="int32", name="padding_mask"),
        "attention_mask": keras.Input((None, None), dtype="int32", name="attention_mask", optional=True),
    }

    token_embedding = ReversibleEmbedding(
        config.vocab_size, config.hidden_size, embeddings_initializer=init, name="token_embedding"
    )
    x = token_embedding(inputs["token_ids"])
    x = x + PositionEmbedding(config.max_positions, config.initializer_range, name="position_embedding")(x)
    if config.type_vocab_size:
        segments = keras.layers.Embedding(
            config.type_vocab_size, config.hidden_size, embeddings_initializer=init, name="segment_embedding"
        )
        x = x + segments(SegmentIds(name="segment_ids_or_zeros")(inputs["token_ids"], inputs["segment_ids"]))
    if config.embedding_layer_norm:
        x = keras.layers.LayerNormalization(epsilon=config.layer_norm_epsilon, name="embeddings_layer_norm")(x)
    x = Dropout(config.dropout, name="embeddings_dropout")(x)
    mask = AttentionMask(config.causal, name="attention_mask_builder")(inputs["padding_mask"], inputs["attention_mask"])
    blocks = [
        TransformerBlock(
            config.num_heads, config.intermediate_size, config.activation, config.layer_norm_epsilon,
            config.dropout, config.attention_dropout, config.initializer_range, name=f"layer_{i}",
        )
        for i in range(config.num_layers)
    ]
    for block in blocks[:-1]:
        x = block(x, attention_mask=mask)
    for head_name, head in heads.items():
        if head.kind == "masked_lm":
            inputs.setdefault(MLM_POSITIONS, keras.Input((None,), dtype="int32", name=MLM_POSITIONS))
        elif head.kind == "sentence":
            inputs.setdefault(index_input_name(head_name), keras.Input((), dtype="int32", name=index_input_name(head_name)))
    first_token = ZerosIndex(name="first_token_index")(inputs["token_ids"])
    # one row per example for each single-position reader: [CLS] for the pooler, then each sentence head's index
    single_readers = (["first_token"] if config.pooler else []) + [n for n, h in heads.items() if h.kind == "sentence"]
    at = None  # the rows the heads read, when the last block runs only there
    if last_block_at_read_positions and reads_positions_only(heads):
        singles = [first_token if n == "first_token" else inputs[index_input_name(n)] for n in single_readers]
        read = ReadPositions(name="read_positions")(singles, inputs.get(MLM_POSITIONS))
        at = HeadRows(len(singles), name="head_rows")(
            blocks[-1](x, attention_mask=mask, query_positions=read), inputs.get(MLM_POSITIONS))
        sequence, outputs = None, {}
    else:
        sequence = blocks[-1](x, attention_mask=mask)  # num_layers >= 1 (validated)
        outputs = {"sequence_output": sequence}

    def extract(key: str, index, layer_name: str):
        """The vector at one position per example: from the compact rows, or gathered from the sequence."""
        if at is None:
            return GatherIndex(name=layer_name)(sequence, index)
        return at[single_readers.index(key) + (MLM_POSITIONS in inputs)]

    pooler = None
    if config.pooler:
        pooler = keras.layers.Dense(config.hidden_size, activation="tanh", kernel_initializer=init, name="pooler")
        outputs["pooled_output"] = pooler(extract("first_token", first_token, "first_token"))

    for head_name, head in heads.items():
        if head.kind == "masked_lm":
            positions = inputs[MLM_POSITIONS]
            h = at[0] if at is not None else GatherPositions(name=f"{head_name}_gather")(sequence, positions)
            h = keras.layers.Dense(config.hidden_size, kernel_initializer=init, name=f"{head_name}_transform")(h)
            h = NamedActivation(config.activation, name=f"{head_name}_activation")(h)
            h = keras.layers.LayerNormalization(epsilon=config.layer_norm_epsilon, name=f"{head_name}_layer_norm")(h)
            outputs[head_name] = Bias(name=f"{head_name}_output_bias")(token_embedding(h, reverse=True))
        elif head.kind == "causal_lm":
            outputs[head_name] = token_embedding(sequence, reverse=True)
        elif head.kind == "next_sentence":
            if pooler is None:
                raise ValueError(f"heads.{head_name}: next_sentence needs the encoder's pooler (pooler=true)")
            outputs[head_name] = keras.layers.Dense(2, kernel_initializer=init, name=head_name)(outputs["pooled_output"])
        elif head.kind == "sentence":
            h = extract(head_name, inputs[index_input_name(head_name)], f"{head_name}_extract")
            if head.use_pooler and pooler is not None:
                h = pooler(h)
            h = Dropout(head.dropout, name=f"{head_name}_dropout")(h)
            outputs[head_name] = keras.layers.Dense(head.num_classes, kernel_initializer=init, name=head_name)(h)
        elif head.kind == "token":
            h = Dropout(head.dropout, name=f"{head_name}_dropout")(sequence)
            outputs[head_name] = keras.layers.Dense(head.num_classes, kernel_initializer=init, name=head_name)(h)
        else:  # pragma: no cover - Literal-checked by the config
            raise ValueError(f"heads.{head_name}: unknown kind {head.kind!r}")
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="bertkeras")
class SegmentIds(keras.layers.Layer):
    """The segment ids, or zeros shaped like the token ids when none are given."""

    def call(self, token_ids, segment_ids=None):
        if segment_ids is None:
            return keras.ops.zeros_like(token_ids)
        return segment_ids


@keras.saving.register_keras_serializable(package="bertkeras")
class ReadPositions(keras.layers.Layer):
    """The positions the heads read, one row per example: the masked positions [batch, n] (if any), then one
    position per single-index reader ([CLS], extraction indices) -> [batch, n + singles]."""

    def call(self, singles, masked_positions=None):
        columns = [keras.ops.expand_dims(keras.ops.cast(s, "int32"), 1) for s in singles]
        if masked_positions is not None:
            columns.insert(0, keras.ops.cast(masked_positions, "int32"))
        return keras.ops.concatenate(columns, axis=1)


@keras.saving.register_keras_serializable(package="bertkeras")
class HeadRows(keras.layers.Layer):
    """Splits the last block's rows at :class:`ReadPositions` back into [masked rows [batch, n, hidden] (when
    there are masked positions), then one [batch, hidden] per single-index reader]."""

    def __init__(self, singles: int, **kwargs):
        super().__init__(**kwargs)
        self.singles = singles

    def call(self, rows, masked_positions=None):
        if masked_positions is None:
            return [rows[:, i] for i in range(self.singles)]
        n = keras.ops.shape(masked_positions)[1]
        return [rows[:, :n]] + [rows[:, n + i] for i in range(self.singles)]

    def get_config(self):
        return {**super().get_config(), "singles": self.singles}


@keras.saving.register_keras_serializable(package="bertkeras")
class ZerosIndex(keras.layers.Layer):
    """Index 0 ([CLS], BERT's pooler input) for every example: [batch, length] -> [batch]."""

    def call(self, token_ids):
        return keras.ops.zeros_like(token_ids[:, 0])


def config_from_model(model: keras.Model) -> TransformerConfig:
    """Recovers the encoder's :class:`TransformerConfig` from a built model's layers (any ``.keras`` file this
    project wrote), so a saved model can be rebuilt with other heads."""
    layers = {layer.name: layer for layer in model.layers}
    embedding = layers["token_embedding"]
    blocks = sorted((n for n in layers if n.startswith("layer_") and n[6:].isdigit()), key=lambda n: int(n[6:]))
    if not blocks:
        raise ValueError(f"model {model.name!r} has no transformer blocks (layer_0, ...): not a bertkeras model")
    block = layers[blocks[0]]
    segments = layers.get("segment_embedding")
    position = layers["position_embedding"]
    return TransformerConfig(
        vocab_size=int(embedding.input_dim), hidden_size=int(embedding.output_dim), num_layers=len(blocks),
        num_heads=block.num_heads, intermediate_size=block.intermediate_size, activation=block.activation,
        layer_norm_epsilon=block.layer_norm_epsilon, embedding_layer_norm="embeddings_layer_norm" in layers,
        dropout=block.dropout, attention_dropout=block.attention_dropout, max_positions=int(position.max_positions),
        type_vocab_size=int(segments.input_dim) if segments is not None else 0,
        causal=bool(layers["attention_mask_builder"].causal), pooler="pooler" in layers,
        initializer_range=block.stddev,
    )


def transfer_weights(source: keras.Model, target: keras.Model) -> tuple[list[str], list[str]]:
    """Copies weights layer by layer where names and shapes agree; -> (copied layers, layers left as built)."""
    source_layers = {layer.name: layer for layer in source.layers}
    copied, fresh = [], []
    for layer in target.layers:
        if not layer.weights:
            continue
        other = source_layers.get(layer.name)
        if other is not None and [w.shape for w in other.weights] == [w.shape for w in layer.weights]:
            layer.set_weights(other.get_weights())
            copied.append(layer.name)
        else:
            fresh.append(layer.name)
    return copied, fresh
