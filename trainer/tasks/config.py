"""Typed configuration of a task (a named head, its loss and its loss-weight schedule) and the schedules.

One run moves from pretraining to fine-tuning by scheduling each task's loss weight over the global step (the
seed's pretraining -> fine-tuning phases, made continuous): e.g. masked LM at weight 1 falling to 0 while a
classifier rises from 0 to 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from trainer.config import Config, option

# The task kinds; trainer.tasks.REGISTRY maps each to its class (a test checks the two agree).
TaskKind = Literal["masked_lm", "causal_lm", "next_sentence", "sentence", "token"]


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(Config):
    """A value over the global step: constant, step change, linear ramp or cosine ramp."""

    kind: Literal["constant", "step", "linear", "cosine"] = option("constant", "shape of the schedule")
    value: float = option(1.0, "the value (constant) or the value before start_step (other kinds)")
    end_value: float = option(1.0, "the value at and after end_step (step: from start_step on)")
    start_step: int = option(0, "step where the change starts")
    end_step: int = option(0, "step where a linear/cosine ramp ends (ignored for constant/step)")

    @classmethod
    def from_scalar(cls, value):
        """A number where a schedule is expected is a constant weight: ``weight: 0.5``."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(kind="constant", value=float(value), end_value=float(value))
        return None

    def check(self) -> list[str]:
        errors = []
        if self.start_step < 0:
            errors.append(f"start_step: must be >= 0, got {self.start_step}")
        if self.kind in ("linear", "cosine") and self.end_step <= self.start_step:
            errors.append(f"end_step: must be > start_step ({self.start_step}) for a {self.kind} ramp, got {self.end_step}")
        if self.value < 0 or self.end_value < 0:
            errors.append("value/end_value: loss weights must be >= 0")
        return errors


@dataclasses.dataclass(frozen=True)
class TaskConfig(Config):
    """One task: a named head, its loss and its loss-weight schedule. Fine-tuning tasks read the records'
    ``<name>_labels`` / ``<name>_weights`` / ``<name>_index`` features; LM tasks read Google's features."""

    name: str = option("", "head name; for sentence/token tasks also the records' feature prefix")
    kind: TaskKind = option("sentence", "masked_lm, causal_lm, next_sentence, sentence or token")
    num_classes: int = option(0, "sentence/token classes (0: the number of labels in <name>_labels.txt)")
    dropout: float = option(0.1, "dropout before the classifier")
    weight: ScheduleConfig = option(ScheduleConfig(), "loss-weight schedule over the global step")
    extraction_index: Literal["first", "last"] = option("first", "sentence tasks at serving: the position the head reads (as the records)")
    pooling: Literal["index", "mean"] = option(
        "index", "sentence tasks: index: the encoder's vector at the extraction index, through a pooler when the "
        "backbone has one (BERT's [CLS]); mean: the mean over the real tokens (sentence-transformers' pooling, "
        "what sentence-embedding checkpoints such as all-MiniLM-L6-v2 were trained with)")

    def check(self) -> list[str]:
        errors = []
        if not self.name or not self.name.replace("_", "").isalnum():
            errors.append(f"name: must be a non-empty identifier, got {self.name!r}")
        if self.num_classes < 0:
            errors.append(f"num_classes: must be >= 0, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            errors.append(f"dropout: must be in [0, 1), got {self.dropout}")
        return errors


def schedule_value(schedule: ScheduleConfig, step):
    """The schedule at ``step`` (a scalar tensor), in-graph."""
    import tensorflow as tf  # noqa: PLC0415 - configs import without TensorFlow

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
    return float(schedule_value(schedule, step).numpy())
