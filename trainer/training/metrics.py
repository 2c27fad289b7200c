"""Per-task evaluation metrics over one pass of the evaluation records; each task object computes its own
(:meth:`trainer.tasks.Task.metrics`: loss and accuracy, majority baseline, macro-F1 and confusion matrix,
perplexity, CoNLL span F1 for BIO tags) and fits its non-neural baseline (:meth:`trainer.tasks.Task.baseline`)."""

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
            metrics[task.name] = task.metrics(*(concatenate([c[k] for c in collected[task.name]]) for k in range(4)))
    return metrics


def concatenate(batches: list[np.ndarray]) -> np.ndarray:
    """One array from batches; batches padded to different lengths (length buckets) are first padded with
    zeros (no token, weight 0) to the longest along the sequence axis."""
    if batches[0].ndim >= 2:
        width = max(b.shape[1] for b in batches)
        batches = [np.pad(b, [(0, 0), (0, width - b.shape[1])] + [(0, 0)] * (b.ndim - 2)) for b in batches]
    return np.concatenate(batches)


def collect_examples(dataset: tf.data.Dataset, max_examples: int = 0, max_batches: int = 0) -> dict[str, np.ndarray]:
    """Layout batches -> one array per feature (the first ``max_examples`` examples / ``max_batches`` batches;
    0: all), the input of the tasks' baselines."""
    columns: dict[str, list] = {}
    taken = 0
    for i, batch in enumerate(dataset):
        if (max_batches and i >= max_batches) or (max_examples and taken >= max_examples):
            break
        n = int(batch[features.TOKEN_IDS].shape[0])
        keep = min(n, max_examples - taken) if max_examples else n
        for name, values in batch.items():
            columns.setdefault(name, []).append(values.numpy()[:keep])
        taken += keep
    return {name: concatenate(values) for name, values in columns.items()}
