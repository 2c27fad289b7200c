"""Causal language modelling (GPT): predict token i + 1 from tokens 0..i at every position.

Causal records hold ``max_seq_length + 1`` tokens: the model reads tokens [0, n) and predicts [1, n + 1).
The decoder is tied to the backbone's token embedding when it has one (as GPT-1), else its own dense layer.
"""

from __future__ import annotations

import math

from trainer import features
from trainer.tasks.base import HeadContext, Task
from trainer.tasks.masked_lm import decode


class CausalLM(Task):
    kind = "causal_lm"
    at_most_one = True

    def record_features(self, layout) -> dict[str, int]:
        return {features.INPUT_IDS: layout.seq_length + 1, features.INPUT_MASK: layout.seq_length + 1}

    def feeds(self, source, layout) -> bool:
        return source.kind == features.CAUSAL_RECORDS

    def position_features(self) -> tuple[str, ...]:
        return self.labels_key(), self.weights_key()

    def parse(self, record, example, source, layout) -> None:
        import tensorflow as tf  # noqa: PLC0415

        n = layout.seq_length
        if source.kind == features.CAUSAL_RECORDS:
            ids = record[features.INPUT_IDS]
            mask = record.get(features.INPUT_MASK, tf.ones_like(ids))
            example[self.labels_key()], example[self.weights_key()] = ids[1:], tf.cast(mask[1:], tf.float32)
        else:
            example[self.labels_key()], example[self.weights_key()] = tf.zeros([n], tf.int32), tf.zeros([n], tf.float32)

    def synthetic(self, draws, layout, vocab_size: int) -> dict:
        import tensorflow as tf  # noqa: PLC0415

        n = layout.seq_length
        return {self.labels_key(): draws.ints([n], vocab_size), self.weights_key(): tf.ones([n])}

    def head(self, context: HeadContext, inputs):
        from trainer.model.layers import initializer  # noqa: PLC0415

        init = initializer(getattr(context.backbone, "initializer_range", 0.02))
        return decode(context.backbone, context.sequence_output(self), self.name, init)

    def metrics(self, predictions, gold, weight, ce) -> dict:
        out = super().metrics(predictions, gold, weight, ce)
        if "loss" in out:
            out["perplexity"] = float(math.exp(min(out["loss"], 700.0)))
        return out
