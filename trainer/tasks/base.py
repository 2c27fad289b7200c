"""The task contract: one object per configured task owns everything about its kind.

A task knows the record features it reads (and their defaults where a source lacks them), the model inputs
its head needs, its head on a backbone, its loss, its metrics and majority baseline, its synthetic data and
its serving outputs, and its non-neural baseline. The data code, the model, the loop, the metrics and the export iterate over task objects
and never ask for a task's kind; adding a kind is one module in this package plus its entry in
:data:`trainer.tasks.REGISTRY`.

Losses are weighted cross-entropies: sum(weight * ce) over this replica's examples divided by the sum of the
weights over the GLOBAL batch (all replicas), so summing the replicas' gradients gives exactly the single-device
gradient, and an all-padding batch gives 0 instead of NaN.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from trainer import features, fileio
from trainer.features import DataError
from trainer.tasks.config import TaskConfig
from trainer.tasks.metrics import confusion_matrix, macro_f1

if TYPE_CHECKING:  # NumPy loads where metrics are computed: the task configs import without it
    import numpy as np


BASELINE_PREFIX = "baseline_"  # baseline metrics beside the model's: accuracy and baseline_accuracy


@dataclasses.dataclass(frozen=True)
class RecordShape:
    """The static shape of records: tokens per example and masked positions (the training layout has more)."""

    seq_length: int
    predictions: int = 0
    masking: object = None


class TaskError(ValueError):
    """A task cannot be built on this backbone or with these labels; the message names the task."""


class HeadContext:
    """What heads read from the backbone: its outputs, its public pieces (``token_embedding``, ``pooler``) and,
    per task, the encoder's rows at the task's read positions (compact rows when the backbone ran its last
    block only there, else gathered from ``sequence_output``)."""

    def __init__(self, backbone, outputs: dict, positions: dict, rows: dict | None = None):
        self.backbone = backbone
        self.outputs = outputs
        self._positions = positions
        self._rows = rows

    def rows(self, task: Task):
        """[batch, n, hidden] at the task's :meth:`Task.read_positions` [batch, n]."""
        from trainer.model.layers import GatherPositions  # noqa: PLC0415

        if self._rows is not None:
            return self._rows[task.name]
        return GatherPositions(name=f"{task.name}_gather")(self.sequence_output(task), self._positions[task.name])

    def sequence_output(self, task: Task):
        if features.SEQUENCE_OUTPUT not in self.outputs:
            raise TaskError(f"tasks: {task.name} ({task.kind}) reads every position, but the backbone "
                            f"{self.backbone.name!r} returns no {features.SEQUENCE_OUTPUT}")
        return self.outputs[features.SEQUENCE_OUTPUT]

    def pooled_output(self, task: Task):
        if features.POOLED_OUTPUT not in self.outputs:
            raise TaskError(f"tasks: {task.name} ({task.kind}) needs the backbone's {features.POOLED_OUTPUT} "
                            f"(a pooler); the backbone {self.backbone.name!r} has none")
        return self.outputs[features.POOLED_OUTPUT]

    def hidden_size(self) -> int:
        spec = self.outputs.get(features.SEQUENCE_OUTPUT, self.outputs.get(features.READ_OUTPUT))
        if spec is None:
            spec = next(iter(self._rows.values()))
        return int(spec.shape[-1])


class Task:
    """Base of every task kind. Subclasses set the class attributes and override the hooks they need."""

    kind: ClassVar[str]
    reads_positions: ClassVar[bool] = False  # the head reads the encoder at a few positions only
    at_most_one: ClassVar[bool] = False      # at most one task of this kind per run (the LM tasks)
    served: ClassVar[bool] = False           # the serving SavedModel returns its probabilities and labels
    has_label_names: ClassVar[bool] = False  # classes come from <name>_labels.txt beside the records
    has_examples: ClassVar[bool] = False     # labelled examples: example(), pack_examples(), answer()

    def __init__(self, config: TaskConfig, num_classes: int = 0, label_names: Sequence[str] | None = None):
        self.config = config
        self.num_classes = num_classes or config.num_classes
        self.label_names = list(label_names) if label_names else None

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, num_classes={self.num_classes})"

    # --- classes ------------------------------------------------------------------------------------------
    def with_classes(self, label_folders: Sequence[str]) -> Task:
        """This task with its number of classes (and label names) resolved from the record folders."""
        return self

    # --- records ------------------------------------------------------------------------------------------
    def labels_key(self) -> str:
        return features.task_labels(self.name)

    def weights_key(self) -> str:
        return features.task_weights(self.name)

    def record_features(self, layout) -> dict[str, int]:
        """Record feature -> the length a source must give it to feed this task."""
        raise NotImplementedError

    def feature_dtype(self, name: str) -> str:
        return "float32" if name.endswith("weights") else "int64"

    def record_spec(self, layout) -> dict:
        """``tf.io.parse_example`` spec of records for this task: the inputs and the task's features."""
        import tensorflow as tf  # noqa: PLC0415

        lengths = {features.INPUT_IDS: layout.seq_length, features.INPUT_MASK: layout.seq_length,
                   features.SEGMENT_IDS: layout.seq_length, **self.record_features(layout)}
        return {name: tf.io.FixedLenFeature([length], self.feature_dtype(name)) for name, length in lengths.items()}

    def feeds(self, source, layout) -> bool:
        """Whether ``source`` has this task's features (errors when it has only some, or at other lengths)."""
        needed = self.record_features(layout)
        if not any(name in source.feature_lengths for name in needed):
            return False
        for name, length in needed.items():
            if name not in source.feature_lengths:
                raise DataError(f"{source.where}: feature {name!r} missing for task {self.name!r} ({self.kind}); "
                                f"the records have {sorted(source.feature_lengths)}")
            if source.feature_lengths[name] != length:
                raise DataError(f"{source.where}: feature {name!r} has length {source.feature_lengths[name]}, "
                                f"task {self.name!r} ({self.kind}) needs {length}")
        return True

    def position_features(self) -> tuple[str, ...]:
        """The example features this task adds that run along the sequence (one value per position): batches
        padded to their own length trim and pad them with the inputs."""
        return ()

    def parse(self, record: dict, example: dict, source, layout) -> None:
        """Adds this task's targets (and inputs) to ``example`` from one parsed ``record`` of ``source``;
        zeros with weight 0 where the source lacks them, so mixed sources batch together."""
        raise NotImplementedError

    def synthetic(self, draws, layout, vocab_size: int) -> dict:
        """Random targets (and inputs) for one synthetic example; ``draws.ints(shape, high)`` draws int32,
        ``draws.seed()`` gives a fresh stateless seed."""
        raise NotImplementedError

    # --- labelled examples (sentence and token tasks) -----------------------------------------------------
    def example(self, text, label, text_b=None) -> tuple:
        """A Python example (text, label, optional text_b) in this task's own form for :meth:`pack_examples`;
        a ValueError says what is wrong with it."""
        raise TaskError(f"tasks: {self.name} ({self.kind}) has no labelled examples")

    def example_labels(self, example: tuple) -> list:
        """The labels one example (in :meth:`example`'s form) carries."""
        raise TaskError(f"tasks: {self.name} ({self.kind}) has no labelled examples")

    def unlabelled(self, text: str, text_b: str | None = None) -> tuple:
        """A raw text to predict on, in :meth:`example`'s form (labels None)."""
        raise TaskError(f"tasks: {self.name} ({self.kind}) has no labelled examples")

    def pack_examples(self, encoder, examples: Sequence[tuple], label_ids: dict, max_seq_length: int):
        """Examples (in :meth:`example`'s form) -> ``(index, record row or why it was refused, truncated)`` each,
        with one tokenizer call for the batch: the one packing the Beam step and the in-memory path share."""
        raise TaskError(f"tasks: {self.name} ({self.kind}) has no labelled examples")

    def answer(self, probabilities, row: dict, example: tuple, token_text) -> dict:
        """What a prediction says for one packed example (``probabilities`` of this head's logits,
        ``token_text(id)`` a token's text)."""
        return {}

    # --- model --------------------------------------------------------------------------------------------
    def input_specs(self) -> dict[str, tuple[tuple, str]]:
        """Model inputs the head reads besides the backbone's: name -> (shape without batch, dtype)."""
        return {}

    def read_positions(self, inputs: dict):
        """[batch, n] positions the head reads (tasks with ``reads_positions``), or None (reads pooled_output)."""
        return None

    def head(self, context: HeadContext, inputs: dict):
        """The head's output (logits) on the backbone, as a symbolic Keras tensor."""
        raise NotImplementedError

    # --- training -----------------------------------------------------------------------------------------
    def weight_sum(self, batch: dict):
        import tensorflow as tf  # noqa: PLC0415

        return tf.reduce_sum(tf.cast(batch[self.weights_key()], tf.float32))

    def per_example_loss(self, logits, batch: dict):
        import tensorflow as tf  # noqa: PLC0415

        labels = tf.cast(batch[self.labels_key()], tf.int32)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))

    def loss(self, logits, batch: dict, global_weight_sum):
        """This replica's share of the global weighted-mean loss."""
        import tensorflow as tf  # noqa: PLC0415

        weighted = self.per_example_loss(logits, batch) * tf.cast(batch[self.weights_key()], tf.float32)
        return tf.math.divide_no_nan(tf.reduce_sum(weighted), global_weight_sum)

    # --- evaluation ---------------------------------------------------------------------------------------
    def metrics(self, predictions: np.ndarray, gold: np.ndarray, weight: np.ndarray, ce: np.ndarray) -> dict:
        """Metrics of one evaluation pass (predictions are the argmax of the head's logits)."""
        import numpy as np  # noqa: PLC0415

        total = float(weight.sum())
        if total == 0:
            return {"weight": 0.0}
        correct = (predictions == gold).astype(np.float64)
        return {"loss": float((ce * weight).sum() / total), "accuracy": float((correct * weight).sum() / total),
                "weight": total}

    def baseline(self, train: dict[str, np.ndarray], evaluation: dict[str, np.ndarray]) -> dict:
        """Metrics of the kind's obvious non-neural baseline (:mod:`trainer.tasks.baselines`), fit on ``train``
        and scored on ``evaluation`` (arrays of layout examples); {} where the kind has none."""
        return {}

    # --- serving ------------------------------------------------------------------------------------------
    def serving_inputs(self, token_ids, padding_mask) -> dict:
        """Values of :meth:`input_specs` for raw-text requests (in-graph)."""
        return {}


class ClassificationTask(Task):
    """A task with a fixed set of classes: majority baseline, macro-F1, confusion matrix; label names from
    ``<name>_labels.txt`` where the kind has them."""

    served = True

    def with_classes(self, label_folders: Sequence[str]) -> Task:
        if not self.has_label_names:
            return self
        found = label_names(self.name, label_folders)
        n = self.config.num_classes or (len(found) if found else 0)
        if not n:
            raise TaskError(f"tasks: {self.name}: num_classes is 0 and no {self.name}{features.LABELS_FILE_SUFFIX} "
                            f"beside the records in {list(label_folders)}")
        if found and self.config.num_classes and self.config.num_classes < len(found):
            raise TaskError(f"tasks: {self.name}: num_classes {self.config.num_classes} < {len(found)} labels in "
                            f"{self.name}{features.LABELS_FILE_SUFFIX}")
        return type(self)(self.config, n, found)

    def metrics(self, predictions, gold, weight, ce) -> dict:
        import numpy as np  # noqa: PLC0415

        out = super().metrics(predictions, gold, weight, ce)
        if not out.get("weight"):
            return out
        # The accuracy of always answering the most frequent gold class: what a model must beat.
        totals = np.bincount(gold.reshape(-1), weights=weight.reshape(-1).astype(np.float64), minlength=self.num_classes)
        out["majority_accuracy"] = float(totals.max() / out["weight"])
        if self.label_names:
            out["labels"] = list(self.label_names)
        return out

    def baseline_metrics(self, name: str, predictions: np.ndarray, evaluation: dict) -> dict:
        """The baseline's predictions scored like the model's: ``baseline_accuracy``, ``baseline_macro_f1`` or
        ``baseline_span_f1``..., and ``baseline`` (what it is)."""
        import numpy as np  # noqa: PLC0415

        gold, weight = evaluation[self.labels_key()], evaluation[self.weights_key()]
        scored = self.metrics(predictions, gold, weight, np.zeros(weight.shape))
        keep = ("accuracy", "macro_f1", "span_f1", "span_precision", "span_recall")
        return {"baseline": name, **{f"{BASELINE_PREFIX}{k}": v for k, v in scored.items() if k in keep}}

    def classifier_metrics(self, predictions, gold, weight) -> dict:
        keep = weight > 0
        return {"macro_f1": macro_f1(gold[keep], predictions[keep], self.num_classes),
                "confusion_matrix": confusion_matrix(gold[keep], predictions[keep], self.num_classes)}

    def serving_outputs(self, logits, label_table=None) -> dict:
        import tensorflow as tf  # noqa: PLC0415

        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        label_ids = tf.argmax(probabilities, axis=-1)
        out = {f"{self.name}_probabilities": probabilities, f"{self.name}_label_id": tf.cast(label_ids, tf.int32)}
        if label_table is not None:
            out[f"{self.name}_label"] = label_table.lookup(label_ids)
        return out


def _labelled(arrays: dict[str, np.ndarray], weights_key: str) -> dict[str, np.ndarray]:
    """The examples that carry this task's targets (a mixed source also holds other tasks' examples)."""
    weights = arrays[weights_key]
    keep = (weights > 0) if weights.ndim == 1 else (weights > 0).any(axis=1)
    return {name: values[keep] for name, values in arrays.items()}


def label_names(task: str, folders: Sequence[str | dict]) -> list[str] | None:
    """The task's label vocabulary beside its records (the first folder having one): the manifest's ``labels``
    (they belong to the shards it names, even while a new output is being published), else
    ``<task>_labels.txt``. An in-memory source gives its manifest itself instead of a folder."""
    for folder in folders:
        if isinstance(folder, dict):
            if folder.get("task") == task and folder.get("labels"):
                return list(folder["labels"])
            continue
        manifest = fileio.join(folder, features.MANIFEST_FILE)
        if fileio.exists(manifest):
            content = json.loads(fileio.read_text(manifest))
            if content.get("task") == task and content.get("labels"):
                return list(content["labels"])
        path = fileio.join(folder, task + features.LABELS_FILE_SUFFIX)
        if fileio.exists(path):
            return [line for line in fileio.read_text(path).splitlines() if line]
    return None
