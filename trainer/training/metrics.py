"""Per-task evaluation metrics over one pass of the evaluation records; each task object computes its own
(:meth:`trainer.tasks.Task.metrics`: loss and accuracy, majority baseline, macro-F1 and confusion matrix,
perplexity, CoNLL span F1 for BIO tags)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer import features
from trainer.training.data import Layout, model_inputs


def evaluate(model, dataset: tf.data.Dataset, layout: Layout, max_batches: int = 0) -> dict:
    """One pass over ``dataset`` (layout batches) -> {task: {metric: value}} plus ``examples``."""
    tasks = layout.tasks

    @tf.function
    def predict(batch):
        outputs = model(model_inputs(batch, layout), training=False)
        return {task.name: (tf.argmax(outputs[task.name], -1, output_type=tf.int32), batch[task.labels_key()],
                            batch[task.weights_key()], task.per_example_loss(outputs[task.name], batch))
                for task in tasks}

    collected: dict[str, list] = {t.name: [] for t in tasks}
    examples = 0
    for i, batch in enumerate(dataset):
        if max_batches and i >= max_batches:
            break
        examples += int(batch[features.TOKEN_IDS].shape[0])
        for name, values in predict(batch).items():
            collected[name].append(tuple(v.numpy() for v in values))
    metrics: dict = {"examples": examples}
    for task in tasks:
        if collected[task.name]:
            metrics[task.name] = task.metrics(*(np.concatenate([c[k] for c in collected[task.name]]) for k in range(4)))
    return metrics
