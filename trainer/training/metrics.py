"""Per-task evaluation metrics (computed in NumPy over a pass of the evaluation records).

masked LM: loss, accuracy; next sentence: accuracy, loss; causal LM: loss, perplexity, accuracy; sentence:
accuracy, macro-F1, loss, confusion matrix; token: accuracy, loss and, when the labels are BIO tags, span F1
(exact-match spans, CoNLL style), else macro-F1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from trainer import features
from trainer.training.config import TaskConfig
from trainer.training.data import Layout, model_inputs
from trainer.training.tasks import per_element_loss


def macro_f1(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    """Mean F1 over the classes that occur in the labels or the predictions."""
    scores = []
    for c in range(num_classes):
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> list[list[int]]:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix.tolist()


def bio_spans(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """(start, end, type) spans of a BIO/IOB2 tag sequence; an I- without a matching open span starts one."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, label = tag.partition("-")
        if start is not None and (prefix in ("B", "O") or label != kind or tag == "O"):
            spans.add((start, i, kind))
            start, kind = None, None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, label
    return spans


def span_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    tp = fp = fn = 0
    for g, p in zip(gold, predicted):
        gs, ps = bio_spans(g), bio_spans(p)
        tp, fp, fn = tp + len(gs & ps), fp + len(ps - gs), fn + len(gs - ps)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"span_precision": precision, "span_recall": recall, "span_f1": f1}


def is_bio(names: Sequence[str] | None) -> bool:
    return bool(names) and all(n == "O" or n[:2] in ("B-", "I-") for n in names) and any(n[:2] == "B-" for n in names)


def evaluate(model, dataset: tf.data.Dataset, layout: Layout, label_names: dict[str, list[str]],
             num_classes: dict[str, int], max_batches: int = 0) -> dict:
    """One pass over ``dataset`` (layout batches) -> {task: {metric: value}} plus ``examples``."""
    tasks = layout.tasks

    @tf.function
    def predict(batch):
        outputs = model(model_inputs(batch, layout), training=False)
        result = {}
        for task in tasks:
            labels = batch[features.task_labels(task.name)]
            result[task.name] = (tf.argmax(outputs[task.name], -1, output_type=tf.int32), labels,
                                 batch[features.task_weights(task.name)], per_element_loss(outputs[task.name], labels))
        return result

    collected: dict[str, list] = {t.name: [] for t in tasks}
    examples = 0
    for i, batch in enumerate(dataset):
        if max_batches and i >= max_batches:
            break
        examples += int(batch["token_ids"].shape[0])
        for name, values in predict(batch).items():
            collected[name].append(tuple(v.numpy() for v in values))
    metrics: dict = {"examples": examples}
    for task in tasks:
        if not collected[task.name]:
            continue
        pred, gold, weight, ce = (np.concatenate([c[k] for c in collected[task.name]]) for k in range(4))
        metrics[task.name] = _task_metrics(task, pred, gold, weight, ce, label_names.get(task.name),
                                           num_classes.get(task.name, 2))
    return metrics


def _task_metrics(task: TaskConfig, pred, gold, weight, ce, names, num_classes) -> dict:
    total = float(weight.sum())
    if total == 0:
        return {"weight": 0.0}
    correct = (pred == gold).astype(np.float64)
    out = {"loss": float((ce * weight).sum() / total), "accuracy": float((correct * weight).sum() / total),
           "weight": total}
    if task.kind in ("sentence", "next_sentence", "token"):
        # The accuracy of always answering the most frequent gold class: what a model must beat.
        totals = np.bincount(gold.reshape(-1), weights=weight.reshape(-1).astype(np.float64), minlength=num_classes)
        out["majority_accuracy"] = float(totals.max() / total)
    if task.kind == "causal_lm":
        out["perplexity"] = float(math.exp(min(out["loss"], 700.0)))
    if task.kind in ("sentence", "next_sentence"):
        keep = weight > 0
        out["macro_f1"] = macro_f1(gold[keep], pred[keep], num_classes)
        out["confusion_matrix"] = confusion_matrix(gold[keep], pred[keep], num_classes)
        if names:
            out["labels"] = list(names)
    if task.kind == "token":
        keep = weight > 0
        if is_bio(names):
            gold_tags = [[names[t] for t, k in zip(g, m) if k] for g, m in zip(gold, keep)]
            pred_tags = [[names[t] if t < len(names) else "O" for t, k in zip(p, m) if k] for p, m in zip(pred, keep)]
            out.update(span_f1(gold_tags, pred_tags))
        else:
            out["macro_f1"] = macro_f1(gold[keep], pred[keep], num_classes)
        if names:
            out["labels"] = list(names)
    return out
