"""The baselines a user tries before a transformer, fit on the training split and scored on the evaluation
split with the task's own metrics, so every report can say what the model adds:

- sentence tasks: TF-IDF over uni- and bigrams (Keras ``TextVectorization`` counts, scikit-learn's smooth idf),
  rows L2-normalised, and a linear
  softmax with scikit-learn's default regularisation (``LogisticRegression(C=1)``: mean cross-entropy plus
  ``|W|^2 / (2 C n)``), fit full-batch;
- token tasks: each word's most frequent training label (a word is its sub-word ids), the training set's most
  frequent label for words never seen.

Both read arrays of layout examples (``token_ids``, ``padding_mask`` and the task's targets), the records every
source becomes, so they work the same whatever the data's text format; the "words" are the encoder's sub-words.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from trainer import features

if TYPE_CHECKING:  # NumPy loads when a baseline is fit: importing the tasks (and their configs) stays light
    import numpy as np

BOW_MAX_FEATURES = 50_000
BOW_STEPS = 300
BOW_C = 1.0


def _texts(token_ids: np.ndarray, padding_mask: np.ndarray) -> list[str]:
    lengths = padding_mask.sum(axis=1)
    return [" ".join(map(str, row[:n].tolist())) for row, n in zip(token_ids, lengths)]


def bag_of_words_predictions(train: dict, labels: np.ndarray, evaluation: dict, num_classes: int) -> np.ndarray:
    """TF-IDF uni+bigrams -> linear softmax; -> the predicted class of each evaluation example."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    # Counts from Keras (its sparse "tf_idf" mode fails in Keras 3.15), weighted by scikit-learn's smooth idf.
    vectorizer = keras.layers.TextVectorization(
        max_tokens=BOW_MAX_FEATURES, standardize=None, split="whitespace", ngrams=2, output_mode="count", sparse=True)
    train_texts = tf.constant(_texts(train[features.TOKEN_IDS], train[features.PADDING_MASK]))
    vectorizer.adapt(train_texts, batch_size=1024)

    def counts_of(texts) -> tf.SparseTensor:
        return tf.sparse.reorder(tf.cast(vectorizer(texts), tf.float32))

    def tf_idf(counts: tf.SparseTensor, idf) -> tf.SparseTensor:
        rows = counts.indices[:, 0]
        values = counts.values * tf.gather(idf, counts.indices[:, 1])
        norms = tf.math.unsorted_segment_sum(tf.square(values), rows, tf.cast(counts.dense_shape[0], tf.int32))
        return tf.SparseTensor(counts.indices, values * tf.gather(tf.math.rsqrt(tf.maximum(norms, 1e-12)), rows),
                               counts.dense_shape)

    train_counts = counts_of(train_texts)
    n = float(len(labels))
    document_frequency = tf.math.unsorted_segment_sum(
        tf.ones_like(train_counts.values), train_counts.indices[:, 1], tf.cast(train_counts.dense_shape[1], tf.int32))
    idf = tf.math.log((1.0 + n) / (1.0 + document_frequency)) + 1.0
    idf = tf.tensor_scatter_nd_update(idf, [[0]], [0.0])  # column 0 counts unseen terms: ignored, as scikit-learn does
    x = tf_idf(train_counts, idf)
    y = tf.constant(labels, tf.int32)
    weights = tf.Variable(tf.zeros([int(x.dense_shape[1]), num_classes]))
    bias = tf.Variable(tf.zeros([num_classes]))
    penalty = 1.0 / (BOW_C * len(labels))
    optimizer = keras.optimizers.Adam(learning_rate=0.1)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = tf.sparse.sparse_dense_matmul(x, weights) + bias
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            loss += 0.5 * penalty * tf.reduce_sum(tf.square(weights))
        optimizer.apply_gradients(zip(tape.gradient(loss, [weights, bias]), [weights, bias]))

    for _ in range(BOW_STEPS):
        step()
    eval_x = tf_idf(counts_of(tf.constant(_texts(evaluation[features.TOKEN_IDS], evaluation[features.PADDING_MASK]))), idf)
    return tf.argmax(tf.sparse.sparse_dense_matmul(eval_x, weights) + bias, axis=-1).numpy()


def _words(token_ids: np.ndarray, padding_mask: np.ndarray, weights: np.ndarray):
    """Per example, (position, word) for each labelled position; a word runs from its labelled first sub-word
    to the next labelled position (or the end token)."""
    import numpy as np  # noqa: PLC0415

    for row, length, weight in zip(token_ids, padding_mask.sum(axis=1), weights):
        starts = np.flatnonzero(weight > 0).tolist()
        ends = starts[1:] + [max(int(length) - 1, starts[-1] + 1)] if starts else []
        yield [(s, tuple(row[s:e].tolist())) for s, e in zip(starts, ends)]


def lookup_predictions(train: dict, labels: np.ndarray, weights: np.ndarray, evaluation: dict,
                       eval_weights: np.ndarray) -> np.ndarray:
    """Each word's most frequent training label; -> predictions shaped like the evaluation labels."""
    import numpy as np  # noqa: PLC0415

    counts: dict[tuple, Counter] = {}
    overall: Counter = Counter()
    for row_labels, words in zip(labels, _words(train[features.TOKEN_IDS], train[features.PADDING_MASK], weights)):
        for position, word in words:
            counts.setdefault(word, Counter())[int(row_labels[position])] += 1
            overall[int(row_labels[position])] += 1
    default = overall.most_common(1)[0][0] if overall else 0
    best = {word: counter.most_common(1)[0][0] for word, counter in counts.items()}
    predictions = np.zeros(eval_weights.shape, np.int64)
    for i, words in enumerate(_words(evaluation[features.TOKEN_IDS], evaluation[features.PADDING_MASK], eval_weights)):
        for position, word in words:
            predictions[i, position] = best.get(word, default)
    return predictions
