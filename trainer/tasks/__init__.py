"""Tasks as objects: one class per task kind owns its record features, head, loss, metrics, synthetic data and
serving outputs (:mod:`trainer.tasks.base`). ``REGISTRY`` maps kind names to classes; :func:`make_task` turns
a :class:`TaskConfig` into its task object."""

from __future__ import annotations

from collections.abc import Sequence

from trainer.tasks.base import ClassificationTask, HeadContext, Task, TaskError
from trainer.tasks.causal_lm import CausalLM
from trainer.tasks.config import ScheduleConfig, TaskConfig, TaskKind
from trainer.tasks.masked_lm import DynamicMasking, MaskedLM
from trainer.tasks.next_sentence import NextSentence
from trainer.tasks.sentence import SentenceClassification
from trainer.tasks.token import TokenClassification

REGISTRY: dict[str, type[Task]] = {
    cls.kind: cls for cls in (MaskedLM, CausalLM, NextSentence, SentenceClassification, TokenClassification)
}


def make_task(config: TaskConfig, num_classes: int = 0, label_names: Sequence[str] | None = None) -> Task:
    if config.kind not in REGISTRY:
        raise TaskError(f"tasks: {config.name}: unknown kind {config.kind!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[config.kind](config, num_classes, label_names)


def make_tasks(configs: Sequence[TaskConfig], label_folders: Sequence[str] = ()) -> tuple[Task, ...]:
    """Task objects with their classes resolved from ``<name>_labels.txt`` beside the records."""
    return tuple(make_task(c).with_classes(label_folders) for c in configs)


__all__ = ["REGISTRY", "CausalLM", "ClassificationTask", "DynamicMasking", "HeadContext", "MaskedLM", "NextSentence",
           "ScheduleConfig", "SentenceClassification", "Task", "TaskConfig", "TaskError", "TaskKind",
           "TokenClassification", "make_task", "make_tasks"]
