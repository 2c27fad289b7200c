"""Tasks -> heads, losses and loss-weight schedules.

A task's loss is a weighted cross-entropy: sum(weight * ce) over this replica's examples divided by the sum of
the weights over the GLOBAL batch (all replicas), so summing the replicas' gradients gives exactly the
single-device gradient, and an all-padding batch gives 0 instead of NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from trainer import features, fileio
from trainer.model.config import HeadConfig
from trainer.training.config import ScheduleConfig, TaskConfig


def label_names(task: TaskConfig, folders: Sequence[str]) -> list[str] | None:
    """The task's label vocabulary from ``<task>_labels.txt`` beside its records (the first folder having one)."""
    for folder in folders:
        path = fileio.join(folder, task.name + features.LABELS_FILE_SUFFIX)
        if fileio.exists(path):
            return [line for line in fileio.read_text(path).splitlines() if line]
    return None


def head_configs(tasks: Sequence[TaskConfig], num_classes: dict[str, int]) -> dict[str, HeadConfig]:
    return {
        t.name: HeadConfig(kind=t.kind, num_classes=num_classes.get(t.name, 2), dropout=t.dropout) for t in tasks
    }


def schedule_value(schedule: ScheduleConfig, step) -> tf.Tensor:
    """The schedule at ``step`` (a scalar tensor), in-graph."""
    step = tf.cast(step, tf.float32)
    start, end = float(schedule.value), float(schedule.end_value)
    if schedule.kind == "constant":
        return tf.constant(start)
    if schedule.kind == "step":
        return tf.where(step < schedule.start_step, start, end)
    t = tf.clip_by_value((step - schedule.start_step) / float(schedule.end_step - schedule.start_step), 0.0, 1.0)
    if schedule.kind == "cosine":
        t = (1.0 - tf.cos(math.pi * t)) / 2.0
    return start + (end - start) * t


def schedule_value_py(schedule: ScheduleConfig, step: int) -> float:
    return float(schedule_value(schedule, tf.constant(step)).numpy())


def per_element_loss(logits, labels) -> tf.Tensor:
    logits = tf.cast(logits, tf.float32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits)


def task_losses(outputs: dict, batch: dict, tasks: Sequence[TaskConfig], global_weight_sums: dict) -> dict:
    """Per task: this replica's share of the global weighted-mean loss."""
    losses = {}
    for task in tasks:
        labels, weights = batch[features.task_labels(task.name)], batch[features.task_weights(task.name)]
        ce = per_element_loss(outputs[task.name], labels)
        numerator = tf.reduce_sum(ce * tf.cast(weights, tf.float32))
        losses[task.name] = tf.math.divide_no_nan(numerator, global_weight_sums[task.name])
    return losses


def weight_sums(batch: dict, tasks: Sequence[TaskConfig]) -> dict:
    return {t.name: tf.reduce_sum(tf.cast(batch[features.task_weights(t.name)], tf.float32)) for t in tasks}


@keras.saving.register_keras_serializable(package="bertkeras")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """BERT's learning rate: linear warm-up from 0 to ``peak`` over ``warmup_steps``, then linear decay to
    ``end`` at ``total_steps``."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, end: float = 0.0):
        self.peak, self.warmup_steps, self.total_steps, self.end = peak, warmup_steps, total_steps, end

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.peak * step / max(self.warmup_steps, 1)
        span = max(self.total_steps - self.warmup_steps, 1)
        frac = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        decay = self.peak + (self.end - self.peak) * frac
        return keras.ops.where(step < self.warmup_steps, warm, decay)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps, "end": self.end}
