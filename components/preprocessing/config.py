"""The typed configs of the preprocessing steps (and their error), apart from the Beam pipelines so that the
CLI can build its flags and pipeline configs can nest them without importing Beam, NumPy or TensorFlow. The step
modules (:mod:`~components.preprocessing.pretraining`, :mod:`~components.preprocessing.finetuning`,
:mod:`~components.preprocessing.vocabulary`) re-export them."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

from trainer.config import Config, option
from trainer.text.config import EncoderConfig

if TYPE_CHECKING:
    from trainer.tasks import Task

OnCorruptFile = Literal["dead_letter", "fail"]


class PreprocessError(ValueError):
    """The corpus cannot be turned into records (e.g. it is empty); the message says which input."""


@dataclasses.dataclass(frozen=True)
class PretrainingDataConfig(Config):
    """Corpus -> pretraining TFRecords (Google's create_pretraining_data.py schema)."""

    inputs: tuple[str, ...] = option((), "corpus files or globs (local or gs://), plain or compressed")
    input_format: Literal["text", "jsonl"] = option("text", "text: a sentence a line, blank line between documents; jsonl: {'text': ...} a line")
    output_dir: str = option("", "folder for the shards, manifest, statistics and dead letters")
    encoder: EncoderConfig = option(EncoderConfig(), "the text encoder")
    mode: Literal["pair", "single", "causal"] = option("pair", "pair: MLM + next sentence; single: MLM only; causal: GPT blocks")
    max_seq_length: int = option(128, "tokens per instance")
    max_predictions_per_seq: int = option(20, "masked positions per instance at most")
    masked_lm_prob: float = option(0.15, "share of tokens to mask")
    mask_rate: float = option(0.8, "of the chosen tokens, share replaced by [MASK]")
    random_rate: float = option(0.1, "of the chosen tokens, share replaced by a random token (the rest are kept)")
    whole_word_masking: bool = option(False, "mask all pieces of a word together")
    short_seq_prob: float = option(0.1, "probability of a shorter target length")
    dupe_factor: int = option(1, "passes over the corpus, each masked differently (Google's default is 10)")
    seed: int = option(12345, "random seed")
    negative_pool_size: int = option(4096, "documents in the pool that 'random next' segments come from")
    num_shards: int = option(0, "output shards; 0 = one per bundle, written without a shuffle (a fixed N makes Beam group all records by shard, which DirectRunner holds in memory)")
    compression: Literal["none", "gzip"] = option("none", "TFRecord compression")
    max_line_bytes: int = option(1_000_000, "longer lines become dead letters")
    range_bytes: int = option(4 << 20, "files are read in ranges of about this many bytes")
    runner: str = option("DirectRunner", "Beam runner (DirectRunner locally, DataflowRunner in the cloud)")
    num_workers: int = option(1, "DirectRunner worker processes (>1: multi_processing; on 2 cores one in-memory worker is faster)")
    beam_args: tuple[str, ...] = option((), "extra Beam flags, e.g. --project=p,--region=r,--temp_location=gs://b/tmp")
    max_invalid_share: float = option(0.05, "a file whose first 64 KiB hold NUL bytes or more than this share of invalid UTF-8 sequences is not text: dead-lettered whole")
    on_corrupt_file: OnCorruptFile = option("dead_letter", "a truncated or corrupt compressed file: dead-letter it by name (documents before the damage are kept and counted) or fail the run, leaving the output in place untouched")

    def check(self) -> list[str]:
        errors = []
        if not self.inputs:
            errors.append("inputs: at least one file or glob is required")
        if not self.output_dir:
            errors.append("output_dir: required")
        if self.max_seq_length < 8:
            errors.append(f"max_seq_length: must be >= 8, got {self.max_seq_length}")
        if self.mode != "causal" and not 1 <= self.max_predictions_per_seq <= self.max_seq_length:
            errors.append(f"max_predictions_per_seq: must be in [1, max_seq_length], got {self.max_predictions_per_seq}")
        for name in ("masked_lm_prob", "mask_rate", "random_rate", "short_seq_prob", "max_invalid_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                errors.append(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.mask_rate + self.random_rate > 1.0:
            errors.append("random_rate: mask_rate + random_rate must be <= 1")
        if self.num_shards < 0:
            errors.append(f"num_shards: must be >= 0, got {self.num_shards}")
        for name in ("dupe_factor", "negative_pool_size", "max_line_bytes", "range_bytes", "num_workers"):
            if getattr(self, name) < 1:
                errors.append(f"{name}: must be >= 1, got {getattr(self, name)}")
        return errors


@dataclasses.dataclass(frozen=True)
class FinetuningDataConfig(Config):
    """Labelled examples -> fine-tuning TFRecords for one task."""

    task: str = option("", "task name: feature prefix and label file name")
    level: Literal["sentence", "token"] = option("sentence", "sentence: one label per example; token: a tag per word")
    inputs: tuple[str, ...] = option((), "files or globs")
    input_format: Literal["tsv", "csv", "jsonl", "conll"] = option("tsv", "tsv/csv (header row), jsonl; conll for token level")
    text_field: str = option("text", "column/key of the text")
    text_b_field: str = option("", "column/key of the second segment (optional)")
    label_field: str = option("label", "column/key of the label")
    label_vocabulary: str = option("", "file of labels, one a line (default: the sorted distinct labels of the data)")
    extraction_index: Literal["first", "last"] = option("first", "sentence tasks: position the head reads (first = [CLS])")
    output_dir: str = option("", "output folder")
    encoder: EncoderConfig = option(EncoderConfig(), "the text encoder")
    max_seq_length: int = option(128, "tokens per example (longer inputs are truncated and counted)")
    num_shards: int = option(1, "output shards")
    runner: str = option("DirectRunner", "Beam runner")
    num_workers: int = option(1, "DirectRunner worker processes")
    beam_args: tuple[str, ...] = option((), "extra Beam flags")
    max_invalid_share: float = option(0.05, "a file whose first 64 KiB hold NUL bytes or more than this share of invalid UTF-8 sequences is not text: dead-lettered whole")
    on_corrupt_file: OnCorruptFile = option("dead_letter", "a truncated or corrupt compressed file: dead-letter it by name (none of its rows are used) or fail the run, leaving the output in place untouched")

    def task_object(self) -> Task:
        """The task these records feed: it packs each example and names the record features."""
        from trainer.tasks import TaskConfig, make_task  # noqa: PLC0415 - the task registry, only when validating

        return make_task(TaskConfig(name=self.task or "task", kind=self.level, extraction_index=self.extraction_index))

    def check(self) -> list[str]:
        errors = []
        if not self.task or not self.task.isidentifier():
            errors.append(f"task: must be a name like 'topic' (letters, digits, _), got {self.task!r}")
        if not self.inputs:
            errors.append("inputs: at least one file is required")
        if not self.output_dir:
            errors.append("output_dir: required")
        formats = self.task_object().input_formats
        if self.input_format not in formats:
            errors.append(f"input_format: {self.level}-level tasks read {' or '.join(formats)}, got {self.input_format}")
        if self.max_seq_length < 4:
            errors.append(f"max_seq_length: must be >= 4, got {self.max_seq_length}")
        if not 0.0 <= self.max_invalid_share <= 1.0:
            errors.append(f"max_invalid_share: must be in [0, 1], got {self.max_invalid_share}")
        return errors


@dataclasses.dataclass(frozen=True)
class VocabularyConfig(Config):
    """Train a WordPiece vocabulary or a SentencePiece model from a sample of the corpus."""

    kind: Literal["wordpiece", "sentencepiece"] = option("wordpiece", "what to train")
    inputs: tuple[str, ...] = option((), "corpus files (local or gs://)")
    output_dir: str = option("", "encoder folder to write")
    vocab_size: int = option(8000, "target vocabulary size")
    lower_case: bool = option(True, "wordpiece: uncased")
    model_type: Literal["unigram", "bpe"] = option("unigram", "sentencepiece algorithm")
    character_coverage: float = option(0.9995, "sentencepiece: share of characters covered")
    max_lines: int = option(200_000, "lines sampled from the corpus (seeded reservoir sample)")
    seed: int = option(0, "random seed of the sample")

    def check(self) -> list[str]:
        errors = []
        if not self.inputs:
            errors.append("inputs: at least one corpus file is required")
        if not self.output_dir:
            errors.append("output_dir: required")
        if self.vocab_size < 16:
            errors.append(f"vocab_size: must be >= 16, got {self.vocab_size}")
        if self.max_lines < 1:
            errors.append(f"max_lines: must be >= 1, got {self.max_lines}")
        return errors
