"""Sentence classification with an extraction index (the seed's sentence-level task): the head reads the
encoder's vector at one position per example (``<name>_index``: 0 = [CLS] for BERT, the last token for GPT),
through a pooler (dense + tanh) when the backbone has one, then dropout and a linear classifier. With
``pooling: mean`` it reads the mean over the real tokens instead (no pooler), as sentence-embedding models do.

The head's pooler is its own layer (``<name>_pooler``) initialised from the backbone's pooler: identical to
BERT's pooled output at [CLS], and free to adapt to the task without moving the backbone's pooler.
"""

from __future__ import annotations

from trainer import features
from trainer.tasks.base import ClassificationTask, HeadContext, _labelled
from trainer.tasks.baselines import bag_of_words_predictions


class SentenceClassification(ClassificationTask):
    kind = "sentence"
    has_label_names = True
    has_examples = True
    input_formats = ("tsv", "csv", "jsonl")  # labelled text: text, optional text_b, label

    def pack(self, start: int, end: int, a: list[int], b: list[int] | None, label: int,
             max_seq_length: int) -> tuple[dict, bool]:
        """``[start] a [end] (b [end])`` with segment ids 0 / 1, the longer segment trimmed first to fit
        ``max_seq_length``, and the extraction index (``first``: 0, ``last``: the final [end]);
        -> (record row, whether it was truncated)."""
        pair = b is not None
        a, b = list(a), list(b or [])
        budget = max_seq_length - (3 if pair else 2)
        truncated = len(a) + len(b) > budget
        while len(a) + len(b) > budget:
            (a if len(a) >= len(b) else b).pop()
        ids = [start, *a, end] + ([*b, end] if pair else [])
        segments = [0] * (len(a) + 2) + ([1] * (len(b) + 1) if pair else [])
        index = 0 if self.config.extraction_index == "first" else len(ids) - 1
        return {features.INPUT_IDS: ids, features.SEGMENT_IDS: segments, self.labels_key(): [label],
                self.weights_key(): [1.0], self.index_key(): [index]}, truncated

    def example(self, text, label, text_b=None) -> tuple:
        if not isinstance(text, str) or not isinstance(label, str) or not isinstance(text_b, (str, type(None))):
            raise ValueError("must be a text (and optional text_b) with one label")
        return text, text_b, label

    def example_labels(self, example) -> list:
        return [example[2]]

    def unlabelled(self, text, text_b=None) -> tuple:
        return text, text_b, None

    def pack_examples(self, encoder, examples, label_ids, max_seq_length):
        start, end = encoder.special.id("start"), encoder.special.id("end")
        texts = [t for text, text_b, _ in examples for t in (text, text_b or "")]
        encoded = encoder.encode_batch(texts) if texts else []
        for index, (_, text_b, label) in enumerate(examples):
            if label not in label_ids:
                yield index, f"label {label!r} is not in the label vocabulary", False
                continue
            b = list(encoded[2 * index + 1]) if text_b else None
            row, truncated = self.pack(start, end, list(encoded[2 * index]), b, label_ids[label], max_seq_length)
            yield index, row, truncated

    def answer(self, probabilities, row, example, token_text) -> dict:
        names = self.label_names or [str(i) for i in range(self.num_classes)]
        return {self.name: names[int(probabilities.argmax())],
                f"{self.name}_probabilities": {n: float(p) for n, p in zip(names, probabilities)}}

    @property
    def reads_positions(self) -> bool:
        return self.config.pooling == "index"

    def index_key(self) -> str:
        return features.task_index(self.name)

    def record_features(self, layout) -> dict[str, int]:
        return {self.labels_key(): 1, self.weights_key(): 1, self.index_key(): 1}

    def parse(self, record, example, source, layout) -> None:
        import tensorflow as tf  # noqa: PLC0415

        present = self.labels_key() in record
        example[self.labels_key()] = record[self.labels_key()][0] if present else tf.constant(0, tf.int32)
        example[self.weights_key()] = record[self.weights_key()][0] if present else tf.constant(0.0)
        example[self.index_key()] = record[self.index_key()][0] if present else tf.constant(0, tf.int32)

    def synthetic(self, draws, layout, vocab_size: int) -> dict:
        import tensorflow as tf  # noqa: PLC0415

        return {self.labels_key(): draws.ints([], self.num_classes), self.weights_key(): tf.constant(1.0),
                self.index_key(): tf.constant(0, tf.int32)}

    def input_specs(self):
        return {self.index_key(): ((), "int32")}

    def read_positions(self, inputs):
        from trainer.model.layers import IndexAsPositions  # noqa: PLC0415

        if not self.reads_positions:
            return None
        return IndexAsPositions(name=f"{self.name}_position")(inputs[self.index_key()])

    def head(self, context: HeadContext, inputs):
        import keras  # noqa: PLC0415

        from trainer.model.layers import Dropout, FirstRow, MaskedMean, initializer  # noqa: PLC0415

        backbone, name = context.backbone, self.name
        init = initializer(getattr(backbone, "initializer_range", 0.02))
        if self.config.pooling == "mean":
            h = MaskedMean(name=f"{name}_mean")(context.sequence_output(self), inputs[features.PADDING_MASK])
            pooler = None
        else:
            h = FirstRow(name=f"{name}_extract")(context.rows(self))
            pooler = getattr(backbone, "pooler", None)
        if pooler is not None:
            own = keras.layers.Dense(int(h.shape[-1]), activation="tanh", kernel_initializer=init, name=f"{name}_pooler")
            own.build(h.shape)
            own.set_weights(pooler.get_weights())
            h = own(h)
        h = Dropout(self.config.dropout, name=f"{name}_dropout")(h)
        return keras.layers.Dense(self.num_classes, kernel_initializer=init, name=name)(h)

    def metrics(self, predictions, gold, weight, ce) -> dict:
        out = super().metrics(predictions, gold, weight, ce)
        return {**out, **self.classifier_metrics(predictions, gold, weight)} if out.get("weight") else out

    def baseline(self, train, evaluation) -> dict:
        """TF-IDF uni+bigrams with a linear softmax (``baseline_*``)."""
        train, evaluation = (_labelled(arrays, self.weights_key()) for arrays in (train, evaluation))
        if not len(train[self.labels_key()]) or not len(evaluation[self.labels_key()]):
            return {}
        predictions = bag_of_words_predictions(train, train[self.labels_key()], evaluation, self.num_classes)
        return self.baseline_metrics("TF-IDF uni+bigrams, linear softmax", predictions, evaluation)

    def serving_inputs(self, token_ids, padding_mask) -> dict:
        import tensorflow as tf  # noqa: PLC0415

        if self.config.extraction_index == "first":
            index = tf.zeros([tf.shape(token_ids)[0]], tf.int32)
        else:
            index = tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1) - 1
        return {self.index_key(): index}
