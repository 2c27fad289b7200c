"""In-memory records: Python examples and documents -> records held in memory, made by the same code as the
Beam steps (:mod:`trainer.records` packs labelled examples, :mod:`components.preprocessing.instances` plans,
masks and packs pretraining instances), so the same examples give the same batches whichever driver made
them. Use the Beam steps (``bertkeras preprocess``) for corpora that do not fit in memory."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Sequence

from components.preprocessing import instances
from components.preprocessing.config import PretrainingDataConfig
from trainer.config import ConfigError
from trainer.features import DataError
from trainer.records import distinct_labels, serialize_examples, serialize_rows
from trainer.tasks import TaskConfig, make_task
from trainer.text.base import TextEncoder
from trainer.training.data import Source, memory_source


@dataclasses.dataclass(frozen=True)
class Example:
    """One labelled example. Sentence tasks: ``text`` (and ``text_b`` for pairs) with a ``label``; token tasks:
    ``text`` as a list of words with ``label`` a list of tags, one per word."""

    text: str | Sequence[str]
    label: str | Sequence[str]
    text_b: str | None = None


def _as_example(item, index: int, task: str) -> Example:
    if isinstance(item, Example):
        return item
    if isinstance(item, dict):
        try:
            return Example(item["text"], item["label"], item.get("text_b"))
        except KeyError as err:
            raise DataError(f"{task}: example {index} has no {err.args[0]!r} key: {item!r}") from None
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return Example(*item) if len(item) == 2 else Example(item[0], item[2], item[1])
    raise DataError(f"{task}: example {index} must be an Example, a dict with text/label, (text, label) or "
                    f"(text, text_b, label); got {item!r}")


def _name(kind: str, task: str, records: list[bytes]) -> str:
    """The source's name in configs and errors: what made it and a digest of its records, so a resumed run can
    tell the same data from other data."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(len(record).to_bytes(8, "little"))
        digest.update(record)
    return f"memory:{kind}:{task}:{digest.hexdigest()[:12]}"


def _encoder(encoder: TextEncoder | str) -> TextEncoder:
    """An encoder object, or one loaded from its folder (``encoder.json`` and assets)."""
    if isinstance(encoder, TextEncoder):
        return encoder
    if isinstance(encoder, (str, os.PathLike)):
        from trainer.text.factory import load_encoder  # noqa: PLC0415

        return load_encoder(os.fspath(encoder))
    raise DataError(f"encoder: a text encoder (bertkeras.WordPieceEncoder.from_file(...), ...) or its folder, got {encoder!r}")


def finetuning_records(task: TaskConfig | str, examples: Iterable, encoder: TextEncoder | str, max_seq_length: int = 128,
                       labels: Sequence[str] | None = None, kind: str = "sentence") -> Source:
    """Labelled examples of one sentence or token task -> its records, in memory.

    ``task``: a :class:`TaskConfig` (or its name, with ``kind``). ``labels``: the label vocabulary (default: the
    sorted distinct labels of ``examples``, as the Beam step makes it; give the training labels when making
    evaluation records). An example whose label is not in it, or whose tags do not match its words, is an
    error naming the example."""
    config = task if isinstance(task, TaskConfig) else TaskConfig(name=task, kind=kind)
    encoder = _encoder(encoder)
    if isinstance(labels, str):
        raise DataError(f"{config.name}: labels must be a list of label names, got the string {labels!r}")
    task_object = make_task(config)
    if not task_object.has_examples:
        raise DataError(f"{config.name}: {config.kind} tasks have no labelled examples (pretraining_records makes "
                        f"language-model records)")
    items = []
    for i, item in enumerate(examples):
        example = _as_example(item, i, config.name)
        try:
            items.append(task_object.example(example.text, example.label, example.text_b))
        except ValueError as err:
            raise DataError(f"{config.name} ({config.kind}): example {i}: {err}; got {item!r}") from None
    if not items:
        raise DataError(f"{config.name}: no examples")
    if labels is None:
        labels = distinct_labels(label for item in items for label in task_object.example_labels(item))
    label_ids = {label: i for i, label in enumerate(labels)}
    rows = []
    for index, row, _ in task_object.pack_examples(encoder, items, label_ids, max_seq_length):
        if not isinstance(row, dict):
            raise DataError(f"{config.name}: example {index} ({items[index][0]!r}): {row}")
        rows.append(row)
    records = serialize_rows(task_object, rows, max_seq_length)
    manifest = {"task": config.name, "labels": list(labels), "encoder": encoder.identity()}
    return memory_source(_name("finetuning", config.name, records), records, manifest)


@dataclasses.dataclass(frozen=True)
class _Document:
    key: str
    lines: tuple[str, ...]


def pretraining_records(documents: Iterable[Sequence[str]], encoder: TextEncoder | str, mode: str = "pair",
                        max_seq_length: int = 128, max_predictions_per_seq: int = 20, masked_lm_prob: float = 0.15,
                        dupe_factor: int = 1, short_seq_prob: float = 0.1, whole_word_masking: bool = False,
                        seed: int = 12345) -> Source:
    """Documents (each a list of sentences or lines) -> masked-LM records in memory, Google's algorithm as the
    Beam step runs it: ``pair`` (masked LM + next sentence; a random next segment comes from another document,
    label 1), ``single`` (masked LM only) or ``causal`` (GPT blocks). 80/10/10 masking of ``masked_lm_prob``
    of the tokens, at most ``max_predictions_per_seq`` per instance."""
    encoder = _encoder(encoder)
    config = PretrainingDataConfig(  # the Beam step's settings (its files, encoder and runner have no use here)
        mode=mode, max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions_per_seq,
        masked_lm_prob=masked_lm_prob, dupe_factor=dupe_factor, short_seq_prob=short_seq_prob,
        whole_word_masking=whole_word_masking, seed=seed)
    errors = [e for e in config.check() if e.split(":")[0] not in ("inputs", "output_dir")]
    if errors:
        raise ConfigError("pretraining_records:\n" + "\n".join(f"  {e}" for e in errors))
    docs = []
    for i, doc in enumerate(documents):
        if isinstance(doc, str):
            raise DataError(f"document {i} is a string: give each document as a list of sentences or lines")
        docs.append(_Document(f"doc-{i:08d}", tuple(str(line) for line in doc)))
    tokenized = [d for d in instances.tokenize_documents(encoder, docs)[0] if d is not None]
    if not tokenized:
        raise DataError("pretraining_records: no document has tokens")
    start, end = encoder.special.id("start"), encoder.special.id("end")
    if mode == "causal":
        columns = instances.causal_columns(tokenized, max_seq_length, dupe_factor, end)
    else:
        columns = instances.masked_columns(tokenized, config, instances.masking_spec(config, encoder), start, end,
                                           instances.random_document_from(tokenized))
        if columns is None:
            raise DataError("pretraining_records: the documents make no instance")
    records = serialize_examples(columns)
    manifest = {"encoder": encoder.identity(), "mode": mode}
    return memory_source(_name("pretraining", mode, records), records, manifest)


__all__ = ["Example", "finetuning_records", "pretraining_records"]
