"""Registered Keras layers of the encoder and its heads (no Lambda layers: models load with safe_mode=True).

Layer and weight names are stable (``embeddings/token_embedding``, ``layer_{i}/attention``, ...), because the
checkpoint converters find weights by these names.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

PACKAGE = "bertkeras"


def initializer(stddev: float) -> keras.initializers.Initializer:
    return keras.initializers.TruncatedNormal(stddev=stddev)


def gelu_erf(x):
    """BERT's exact GELU, x * Phi(x), written with erf as BERT writes it. Keras's exact GELU goes through
    ``tf.nn.gelu``'s erfc, which XLA compiles for CPU into code half as fast (6.4 vs 3.2 ms on [32, 128, 1536]);
    the two agree to ~1e-6."""
    return 0.5 * x * (1.0 + ops.erf(x * ops.cast(0.7071067811865476, x.dtype)))


def activation_fn(name: str):
    if name == "gelu":
        return gelu_erf
    if name == "gelu_tanh":
        return lambda x: keras.activations.gelu(x, approximate=True)
    if name == "relu":
        return keras.activations.relu
    raise ValueError(f"unknown activation {name!r}")


@keras.saving.register_keras_serializable(package=PACKAGE)
class NamedActivation(keras.layers.Layer):
    """An activation chosen by name (gelu, gelu_tanh, relu); serializable, unlike a lambda."""

    def __init__(self, activation: str, **kwargs):
        super().__init__(**kwargs)
        self.activation = activation
        self._fn = activation_fn(activation)

    def call(self, inputs):
        return self._fn(inputs)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


def _mix32(x):
    """The "lowbias32" integer finalizer (C. Wellons' hash prospector): a bijection on uint32 in which every
    input bit flips each output bit with probability ~1/2."""
    import tensorflow as tf  # noqa: PLC0415 - the trainer runs Keras on TensorFlow

    shift = tf.bitwise.right_shift
    x = tf.bitwise.bitwise_xor(x, shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, shift(x, tf.constant(16, tf.uint32)))


def keep_mask(shape, rate: float, seed):
    """Dropout's keep mask: True with probability ``1 - rate``, independently per element and per ``seed``
    (a [2] integer tensor: the layer's seed and a per-call counter).

    Counter-based: element i's bit is a keyed hash of i, so the mask is plain elementwise integer arithmetic
    that XLA fuses into the op consuming it, on CPU, GPU and TPU alike, and that also runs without XLA.
    TensorFlow's stateless generators are compiled by XLA for CPU into an unfused call that cost a BERT-mini
    training step ~9% (Philox, the auto choice, far more); this mask costs it ~1%. The keep threshold has 2^-32
    resolution."""
    import tensorflow as tf  # noqa: PLC0415

    seed = tf.bitcast(tf.cast(tf.math.floormod(tf.cast(seed, tf.int64), 2**31 - 1), tf.int32), tf.uint32)
    golden = tf.constant(0x9E3779B9, tf.uint32)
    xor = tf.bitwise.bitwise_xor
    key0 = _mix32(xor(_mix32(seed[0] * golden), seed[1]))
    key1 = _mix32(key0 + golden)
    index = tf.bitcast(tf.reshape(tf.range(tf.reduce_prod(shape), dtype=tf.int32), shape), tf.uint32)
    bits = _mix32(xor(_mix32(xor(index * golden, key0)), key1))
    return bits >= tf.constant(min(round(rate * 2**32), 2**32 - 1), tf.uint32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Dropout(keras.layers.Dropout):
    """Dropout with a counter-based mask (:func:`keep_mask`) instead of TensorFlow's random generators, which
    XLA compiles into slow CPU code. Same semantics: each unit is kept with probability 1 - rate and scaled by
    1 / (1 - rate); a fresh mask per call (the seed generator's counter), ``noise_shape`` broadcast as Keras does."""

    def call(self, inputs, training=False):
        if not training or self.rate <= 0:
            return inputs
        import tensorflow as tf  # noqa: PLC0415

        shape = tf.shape(inputs)
        if self.noise_shape is not None:
            shape = tf.stack([shape[i] if dim is None else dim for i, dim in enumerate(self.noise_shape)])
        keep = keep_mask(shape, self.rate, self.seed_generator.next())
        return tf.where(keep, inputs * tf.cast(1.0 / (1.0 - self.rate), inputs.dtype), tf.zeros((), inputs.dtype))


@keras.saving.register_keras_serializable(package=PACKAGE)
class SelfAttention(keras.layers.MultiHeadAttention):
    """``MultiHeadAttention`` (same weights and names) with one fused projection matmul (see :meth:`call`) and
    :class:`Dropout` on the attention probabilities."""

    def _build_attention(self, rank):
        super()._build_attention(rank)
        self._dropout_layer = Dropout(rate=self._dropout, dtype=self.dtype_policy, seed=self.seed)

    def call(self, query, value, attention_mask=None, training=None):
        """Multi-head attention of ``query`` [batch, q, hidden] over ``value`` [batch, k, hidden] (keys are the
        values, as in BERT and GPT), with ``attention_mask`` [batch, 1 or q, k] (True = attend).

        The weights and the math are MultiHeadAttention's; only the schedule differs, for XLA on CPU: the query,
        key and value projections are one matmul against the side-by-side kernels (when query is value; key and
        value are one otherwise), and the 1/sqrt(head size) scale is folded into the query kernel. Three
        concurrent [4096 x 384 x 384] products ran at ~90 GFLOP/s, one [4096 x 384 x 1152] runs at ~135.
        A layer frozen for serving (:func:`freeze_for_serving`) computes in :meth:`_serving_call` instead.
        """
        heads, size, dtype = self._num_heads, self._key_dim, query.dtype
        width = heads * size

        def bias_of(dense, shape):
            return ops.zeros(shape, dtype) if dense.bias is None else ops.reshape(ops.cast(dense.bias, dtype), shape)

        def projection(dense, scale=1.0):  # XLA drops a multiply by 1
            return ops.reshape(ops.cast(dense.kernel, dtype), (-1, width)) * scale, bias_of(dense, (width,)) * scale

        def project(inputs, parts):
            """``inputs`` times the side-by-side kernels of ``parts`` -> one [batch, length, heads, size]
            projection per part."""
            kernels, biases = zip(*parts)
            kernel = kernels[0] if len(parts) == 1 else ops.concatenate(kernels, -1)
            bias = biases[0] if len(parts) == 1 else ops.concatenate(biases, -1)
            split = ops.reshape(ops.matmul(inputs, kernel) + bias, (-1, ops.shape(inputs)[1], len(parts), heads, size))
            return [split[:, :, i] for i in range(len(parts))]

        frozen = getattr(self, "frozen_projection", None)
        if frozen is not None:  # the served copy (freeze_for_serving)
            if training:
                raise RuntimeError(f"{self.name}: its projections are frozen for inference (freeze_for_serving); "
                                   "training would not update them")
            return self._serving_call(query, value, attention_mask, frozen)
        query_part = projection(self._query_dense, self._inverse_sqrt_key_dim)
        key_part, value_part = projection(self._key_dense), projection(self._value_dense)
        if query is value:
            query, key, value = project(query, [query_part, key_part, value_part])
        else:
            (query,), (key, value) = project(query, [query_part]), project(value, [key_part, value_part])
        scores = ops.einsum("bqnh,bknh->bnqk", query, key)
        mask = None if attention_mask is None else ops.expand_dims(ops.cast(attention_mask, "bool"), 1)
        probabilities = self._dropout_layer(self._softmax(scores, mask=mask), training=training)
        context = ops.einsum("bnqk,bknh->bqnh", probabilities, value)
        context = ops.reshape(context, (-1, ops.shape(context)[1], width))
        output_kernel = ops.reshape(ops.cast(self._output_dense.kernel, dtype), (width, -1))
        return ops.matmul(context, output_kernel) + bias_of(self._output_dense, (output_kernel.shape[-1],))

    def _serving_call(self, query, value, attention_mask, frozen):
        """:meth:`call`'s math in the schedule TensorFlow runs fastest in a graph without XLA (the SavedModel on
        CPU): 2-D matmuls each followed by ``BiasAdd`` (one oneDNN op each after TensorFlow's graph rewrite),
        query, key and value moved to heads-first order by one transpose (two when the query rows are apart from
        the key rows), the keys transposed inside the batched matmul, and no dropout. ``frozen``: the side-by-side
        kernel and bias, the query's scale folded in."""
        import tensorflow as tf  # noqa: PLC0415 - the trainer runs Keras on TensorFlow

        heads, size, dtype = self._num_heads, self._key_dim, query.dtype
        width = heads * size
        kernel, bias = (tf.cast(w, dtype) for w in frozen)
        batch, queries = tf.shape(value)[0], tf.shape(query)[1]

        def heads_first(inputs, first, count):
            """``inputs`` [batch, length, hidden] times parts ``first`` .. ``first + count`` of the kernel (0 query,
            1 key, 2 value) -> [count, batch, heads, length, size]."""
            columns = slice(first * width, (first + count) * width)
            part_kernel, part_bias = (kernel, bias) if count == 3 else (kernel[:, columns], bias[columns])
            flat = tf.nn.bias_add(tf.matmul(tf.reshape(inputs, [-1, inputs.shape[-1]]), part_kernel), part_bias)
            split = tf.reshape(flat, [batch, tf.shape(inputs)[1], count, heads, size])
            return transpose_as_int32(split, [2, 0, 3, 1, 4])

        if query is value:
            query, key, value = tf.unstack(heads_first(value, 0, 3))
        else:
            query, (key, value) = heads_first(query, 0, 1)[0], tf.unstack(heads_first(value, 1, 2))
        scores = tf.matmul(query, key, transpose_b=True)  # [batch, heads, queries, keys]
        if attention_mask is not None:  # -1e9 on masked keys: one add, where Keras's masked softmax selects twice
            blocked = (1.0 - tf.cast(attention_mask, dtype)) * (-3e4 if dtype == tf.float16 else -1e9)
            scores = scores + tf.expand_dims(blocked, 1)  # (a query row with no key, padding, is never read)
        context = transpose_as_int32(tf.matmul(tf.nn.softmax(scores), value), [0, 2, 1, 3])
        output_kernel = tf.reshape(tf.cast(self._output_dense.kernel, dtype), [width, -1])
        output = tf.matmul(tf.reshape(context, [-1, width]), output_kernel)
        if self._output_dense.bias is not None:
            output = tf.nn.bias_add(output, tf.reshape(tf.cast(self._output_dense.bias, dtype), [-1]))
        return tf.reshape(output, [batch, queries, output.shape[-1]])


def transpose_as_int32(x, perm):
    """``tf.transpose``, float32 moved as int32: TensorFlow's oneDNN transpose (its float kernel) costs about 50 us
    a call on a single request's small tensors, the integer kernel about 15 (the bits are moved, not changed)."""
    import tensorflow as tf  # noqa: PLC0415

    if x.dtype != tf.float32:
        return tf.transpose(x, perm)
    return tf.bitcast(tf.transpose(tf.bitcast(x, tf.int32), perm), tf.float32)


def freeze_for_serving(model: keras.Model) -> int:
    """For a model that is only run, never trained again (the SavedModel's copy): gives each
    :class:`SelfAttention` its query, key and value kernels side by side, the query's scale folded in, as a
    constant built once (``frozen_projection``: two non-trainable ``tf.Variable``s), instead of concatenating and
    scaling the three kernels at every call, which a graph without XLA does each time (at batch 1, a quarter of a
    MiniLM forward pass). Frozen attention layers and their blocks then compute in the schedule a graph without
    XLA runs fastest (:meth:`SelfAttention._serving_call`, :meth:`TransformerBlock._serving_feed_forward`).
    The same numbers as the unfrozen layers, up to float rounding (the served copy computes in float32,
    :func:`trainer.training.export.serving_copy`). Freeze last: weights assigned afterwards (``set_weights``) do not
    reach the frozen kernels, and training a frozen layer is refused. A SavedModel holds both copies of the
    kernels (3 x hidden^2 more values per layer). -> the number of layers frozen."""
    import tensorflow as tf  # noqa: PLC0415

    frozen = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, SelfAttention):
            width = layer._num_heads * layer._key_dim
            parts = [(layer._query_dense, layer._inverse_sqrt_key_dim), (layer._key_dense, 1.0), (layer._value_dense, 1.0)]
            kernel = np.concatenate([np.reshape(np.asarray(d.kernel.numpy(), np.float32), (-1, width)) * np.float32(scale)
                                     for d, scale in parts], -1)
            bias = np.concatenate([(np.zeros(width, np.float32) if d.bias is None else
                                    np.reshape(np.asarray(d.bias.numpy(), np.float32), (width,))) * np.float32(scale)
                                   for d, scale in parts], -1)
            layer.frozen_projection = (tf.Variable(kernel, trainable=False, name="frozen_qkv_kernel"),
                                       tf.Variable(bias, trainable=False, name="frozen_qkv_bias"))
            frozen += 1
    return frozen


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReversibleEmbedding(keras.layers.Embedding):
    """Token embedding that also projects hidden states back onto the vocabulary (``reverse=True``),
    so LM decoders are tied to the embedding by calling the same layer."""

    reversible = True  # the backbone contract's mark of a token embedding LM heads can tie to

    def call(self, inputs, reverse: bool = False):
        if reverse:
            return ops.matmul(inputs, ops.transpose(ops.convert_to_tensor(self.embeddings, dtype=inputs.dtype)))
        return super().call(inputs)

    def compute_output_spec(self, inputs, reverse: bool = False):
        if reverse:
            return keras.KerasTensor((*inputs.shape[:-1], self.input_dim), dtype=self.compute_dtype)
        return super().compute_output_spec(inputs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embedding, added for positions 0..sequence_length-1."""

    def __init__(self, max_positions: int, stddev: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.max_positions = max_positions
        self.stddev = stddev

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.max_positions, input_shape[-1]), initializer=initializer(self.stddev)
        )

    def call(self, inputs, positions=None):
        """-> [1, length, hidden] for positions 0..length-1, or [batch, length, hidden] at ``positions``
        [batch, length] (packed rows, where each text's positions restart at 0)."""
        embeddings = ops.convert_to_tensor(self.embeddings, dtype=inputs.dtype)
        if positions is not None:
            return ops.take(embeddings, ops.cast(positions, "int32"), axis=0)
        return ops.expand_dims(embeddings[:ops.shape(inputs)[1]], 0)

    def get_config(self):
        return {**super().get_config(), "max_positions": self.max_positions, "stddev": self.stddev}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionMask(keras.layers.Layer):
    """Combines the padding mask [batch, key], an optional explicit mask [batch, query, key] and, for causal
    models, the lower-triangular mask into one boolean mask. With padding alone it stays [batch, 1, key]
    (broadcast over queries), which is cheaper than materialising [batch, query, key]."""

    def __init__(self, causal: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.causal = causal

    def call(self, padding_mask, attention_mask=None):
        mask = ops.expand_dims(ops.cast(padding_mask, "bool"), 1)  # [batch, 1, key]
        if attention_mask is not None:
            mask = ops.logical_and(mask, ops.cast(attention_mask, "bool"))
        if self.causal:
            length = ops.shape(padding_mask)[1]
            rows = ops.expand_dims(ops.arange(length), 1)
            cols = ops.expand_dims(ops.arange(length), 0)
            mask = ops.logical_and(mask, ops.expand_dims(rows >= cols, 0))
        return mask

    def get_config(self):
        return {**super().get_config(), "causal": self.causal}


def gather_rows(tensor, positions):
    """Rows of ``tensor`` [batch, length, ...] at ``positions`` [batch, n] -> [batch, n, ...]."""
    return ops.take_along_axis(tensor, ops.expand_dims(ops.cast(positions, "int32"), -1), axis=1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerBlock(keras.layers.Layer):
    """Post-layer-norm transformer block (BERT and GPT-1): x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(
        self, num_heads: int, intermediate_size: int, activation: str = "gelu", layer_norm_epsilon: float = 1e-12,
        dropout: float = 0.1, attention_dropout: float = 0.1, stddev: float = 0.02, **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.stddev = stddev

    def build(self, input_shape):
        hidden = input_shape[-1]
        init = initializer(self.stddev)
        self.attention = SelfAttention(
            num_heads=self.num_heads, key_dim=hidden // self.num_heads, dropout=self.attention_dropout,
            kernel_initializer=init, name="attention",
        )
        self.attention.build(input_shape, input_shape)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name="attention_norm")
        self.attention_norm.build(input_shape)
        self.intermediate = keras.layers.Dense(self.intermediate_size, kernel_initializer=init, name="intermediate")
        self.intermediate.build(input_shape)
        self.output_dense = keras.layers.Dense(hidden, kernel_initializer=init, name="output")
        self.output_dense.build((*input_shape[:-1], self.intermediate_size))
        self.output_norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name="output_norm")
        self.output_norm.build(input_shape)
        self.dropout_layer = Dropout(self.dropout)
        self._act = activation_fn(self.activation)

    def call(self, x, attention_mask=None, training=None, query_positions=None):
        """-> [batch, length, hidden]; with ``query_positions`` [batch, n], the outputs at those positions only,
        [batch, n, hidden] (keys and values still span the whole sequence: the same numbers, less work)."""
        query = x
        if query_positions is not None:
            query = gather_rows(x, query_positions)
            if attention_mask is not None and attention_mask.shape[1] != 1:  # per-query rows (explicit or causal)
                attention_mask = gather_rows(attention_mask, query_positions)
        attended = self.attention(query, x, attention_mask=attention_mask, training=training)
        x = self.attention_norm(query + self.dropout_layer(attended, training=training))
        if getattr(self.attention, "frozen_projection", None) is not None:  # the served copy (freeze_for_serving)
            return self.output_norm(x + self._serving_feed_forward(x))
        hidden = self.output_dense(self._act(self.intermediate(x)))
        return self.output_norm(x + self.dropout_layer(hidden, training=training))

    def _serving_feed_forward(self, x):
        """The feed-forward pair on [tokens, hidden] as MatMul + BiasAdd (+ the activation): in a graph without
        XLA, TensorFlow's oneDNN rewrite makes each one op, the exact GELU included (the Dense layers' 3-D matmul
        reshapes between the product and the bias, which prevents it). The same math, without dropout."""
        import tensorflow as tf  # noqa: PLC0415

        def dense(inputs, layer):
            product = tf.matmul(inputs, tf.cast(layer.kernel, inputs.dtype))
            return product if layer.bias is None else tf.nn.bias_add(product, tf.cast(layer.bias, inputs.dtype))

        hidden = dense(self._act(dense(tf.reshape(x, [-1, x.shape[-1]]), self.intermediate)), self.output_dense)
        return tf.reshape(hidden, tf.shape(x))

    def get_config(self):
        return {
            **super().get_config(), "num_heads": self.num_heads, "intermediate_size": self.intermediate_size,
            "activation": self.activation, "layer_norm_epsilon": self.layer_norm_epsilon, "dropout": self.dropout,
            "attention_dropout": self.attention_dropout, "stddev": self.stddev,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatherPositions(keras.layers.Layer):
    """Vectors at given positions: sequence [batch, length, hidden], positions [batch, n] -> [batch, n, hidden]."""

    def call(self, sequence, positions):
        return gather_rows(sequence, positions)


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatherIndex(keras.layers.Layer):
    """The vector at one position per example (the extraction index): [batch, length, hidden], [batch] -> [batch, hidden]."""

    def call(self, sequence, index):
        index = ops.reshape(ops.cast(index, "int32"), (-1, 1, 1))
        return ops.squeeze(ops.take_along_axis(sequence, index, axis=1), 1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Bias(keras.layers.Layer):
    """Adds a learned bias over the last axis (the MLM decoder's output bias)."""

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs + ops.cast(self.bias, inputs.dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class IndexAsPositions(keras.layers.Layer):
    """One position per example as a positions row: [batch] -> [batch, 1] (int32)."""

    def call(self, index):
        return ops.expand_dims(ops.cast(ops.reshape(index, (-1,)), "int32"), 1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FirstRow(keras.layers.Layer):
    """[batch, n, hidden] -> [batch, hidden] (row 0): the vector of a one-position reader."""

    def call(self, rows):
        return rows[:, 0]


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMean(keras.layers.Layer):
    """[batch, length, hidden] and a padding mask [batch, length] -> [batch, hidden]: the mean over real tokens
    (sentence-transformers' mean pooling)."""

    def call(self, sequence, padding_mask):
        mask = keras.ops.cast(padding_mask, sequence.dtype)[:, :, None]
        return keras.ops.sum(sequence * mask, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SplitRows(keras.layers.Layer):
    """Splits rows [batch, sum(n_i), hidden] into one [batch, n_i, hidden] per positions tensor [batch, n_i]."""

    def call(self, rows, positions):
        out, start = [], 0
        for p in positions:
            n = ops.shape(p)[1]
            out.append(rows[:, start:start + n])
            start = start + n
        return out


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConcatPositions(keras.layers.Layer):
    """Positions [batch, n_i] of several readers -> [batch, sum(n_i)] (int32)."""

    def call(self, positions):
        return ops.concatenate([ops.cast(p, "int32") for p in positions], axis=1)
