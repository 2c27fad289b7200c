"""Next-sentence prediction (BERT): does segment B continue segment A? Reads the backbone's pooled output.

Labels follow Google's ``create_pretraining_data.py``: 0 = B continues A, 1 = B is from another document.
"""

from __future__ import annotations

from trainer import features
from trainer.tasks.base import ClassificationTask, HeadContext


class NextSentence(ClassificationTask):
    kind = "next_sentence"
    reads_positions = True  # [CLS] only, through the pooler
    at_most_one = True

    def __init__(self, config, num_classes: int = 0, label_names=None):
        super().__init__(config, 2, label_names)

    def record_features(self, layout) -> dict[str, int]:
        return {features.NEXT_SENTENCE_LABELS: 1}

    def parse(self, record, example, source, layout) -> None:
        import tensorflow as tf  # noqa: PLC0415

        present = features.NEXT_SENTENCE_LABELS in record
        example[self.labels_key()] = record[features.NEXT_SENTENCE_LABELS][0] if present else tf.constant(0, tf.int32)
        example[self.weights_key()] = tf.constant(1.0 if present else 0.0)

    def synthetic(self, draws, layout, vocab_size: int) -> dict:
        import tensorflow as tf  # noqa: PLC0415

        return {self.labels_key(): draws.ints([], 2), self.weights_key(): tf.constant(1.0)}

    def head(self, context: HeadContext, inputs):
        import keras  # noqa: PLC0415

        from trainer.model.layers import initializer  # noqa: PLC0415

        init = initializer(getattr(context.backbone, "initializer_range", 0.02))
        return keras.layers.Dense(2, kernel_initializer=init, name=self.name)(context.pooled_output(self))

    def metrics(self, predictions, gold, weight, ce) -> dict:
        out = super().metrics(predictions, gold, weight, ce)
        return {**out, **self.classifier_metrics(predictions, gold, weight)} if out.get("weight") else out
