"""Beam pipeline: labelled data -> fine-tuning TFRecords for one sentence-level or token-level task.

Sentence level (TSV/CSV with a header row, or JSONL): ``text``, optional ``text_b`` and ``label`` fields ->
``input_ids``, ``input_mask``, ``segment_ids``, ``<task>_labels`` [1], ``<task>_weights`` [1] and
``<task>_index`` [1], the extraction index: the position whose vector the head reads (0, the start token,
for BERT; the last real position, GPT-1's classify token, with ``extraction_index=last``).
Token level (CoNLL: a token and its tag per line, tag last, a blank line between sentences; ``-DOCSTART-``
lines skipped): ``<task>_labels`` and ``<task>_weights`` over the sequence, the word's tag on its first
sub-word with weight 1, 0 elsewhere. Label vocabularies are the sorted distinct labels (or a given file) and
are written beside the records as ``<task>_labels.txt``. See :mod:`trainer.features` for the schema.
"""

from __future__ import annotations

import csv
import io
import json
import time

import apache_beam as beam
from apache_beam.io import fileio as beam_fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from components.preprocessing.beam_options import make_pipeline
from components.preprocessing.config import FinetuningDataConfig, PreprocessError
from components.preprocessing.corpus import (
    CORRUPT_FILE,
    NAMESPACE,
    READ_CHUNK,
    SNIFF_BYTES,
    UNREADABLE_FILE,
    FileRange,
    LineNumberCache,
    ReadDocuments,
    dead_letter,
    is_corrupt_stream,
    not_text_reason,
    open_input,
)
from components.preprocessing.examples import WriteRecordBatches
from components.preprocessing.pretraining import (
    DEAD_LETTERS_FILE,
    _counters,
    corrupt_file_error,
    expand_inputs,
    shard_counts,
)
from components.preprocessing.publish import WRITTEN_SHARDS_FILE, ReportShards, Staging
from trainer import features, fileio
from trainer.records import serialize_rows
from trainer.text.base import decode_utf8
from trainer.text.factory import build_encoder, shared_encoder

CONLL = "conll"  # the word-per-line format; every other format holds one labelled text per row


class ReadExamples(beam.DoFn):
    """A file -> (text, text_b, label) rows; rows missing a field become dead letters."""

    DEAD = "dead_letters"

    def __init__(self, config: FinetuningDataConfig):
        self.config = config
        self.dead = Metrics.counter(NAMESPACE, "dead_letters")
        self.invalid_utf8 = Metrics.counter(NAMESPACE, "invalid_utf8_lines")
        self.not_text = Metrics.counter(NAMESPACE, "not_text_files")
        self.unreadable = Metrics.counter(NAMESPACE, "unreadable_files")
        self.corrupt = Metrics.counter(NAMESPACE, "corrupt_files")

    def _lines(self, path: str, data: bytes):
        """The file's lines as text; each line with invalid UTF-8 is repaired (U+FFFD), counted and dead-lettered."""
        lines = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            text, invalid = decode_utf8(raw)
            if invalid:
                self.invalid_utf8.inc()
                self.dead.inc()
                yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(
                    path, None, f"{invalid} invalid UTF-8 sequence(s) replaced by U+FFFD", text, number))
            lines.append(text)
        return lines

    def process(self, metadata):
        config, path = self.config, metadata.path
        try:
            handle = open_input(path)
        except Exception as err:  # noqa: BLE001 - any failure to open is reported, not fatal
            self.unreadable.inc()
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(path, 0, f"{UNREADABLE_FILE}: {err}"))
            return
        try:  # labelled files are read whole (they are small next to corpora); Beam's read() stops after 16 MiB
            with handle:
                data = b"".join(iter(lambda: handle.read(READ_CHUNK), b""))
        except Exception as err:
            if not is_corrupt_stream(path, err):
                raise  # e.g. a network error: Beam retries, a lasting failure fails the run
            self.corrupt.inc()
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(path, 0, f"{CORRUPT_FILE}: {err}; no row of it was used"))
            return
        if reason := not_text_reason(data[:SNIFF_BYTES], config.max_invalid_share):
            self.not_text.inc()
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(path, 0, reason))
            return
        text = "\n".join((yield from self._lines(path, data)))
        if config.input_format == "jsonl":
            rows = []
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append((number, json.loads(line)))
                    except ValueError as err:
                        self.dead.inc()
                        yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(path, None, f"not JSON: {err}", line, number))
        else:
            reader = csv.DictReader(io.StringIO(text), delimiter="\t" if config.input_format == "tsv" else ",")
            rows = [(number + 2, row) for number, row in enumerate(reader)]  # line numbers: header is line 1
        for number, row in rows:
            try:
                values = [row[config.text_field], row[config.label_field]] + ([row[config.text_b_field]] if config.text_b_field else [])
                if any(v is None or str(v) == "" for v in values):
                    raise KeyError("empty")
                example = (str(values[0]), str(values[2]) if config.text_b_field else "", str(values[1]), path, number)
            except (KeyError, TypeError):
                self.dead.inc()
                yield beam.pvalue.TaggedOutput(
                    self.DEAD, dead_letter(path, None, f"missing field {config.text_field!r}/{config.label_field!r}", str(row), number)
                )
                continue
            yield example


class EncodeExamples(beam.DoFn):
    """A batch of examples -> a list of serialized tf.train.Example records (packed by the task, serialized by
    :mod:`trainer.records`, as the in-memory path makes them), with the label vocabulary as a side input;
    examples whose label is not in it become dead letters naming their file and line."""

    DEAD = "dead_letters"

    def __init__(self, config: FinetuningDataConfig):
        self.config = config
        self.examples = Metrics.counter(NAMESPACE, "examples")
        self.truncated = Metrics.counter(NAMESPACE, "truncated_examples")
        self.dead = Metrics.counter(NAMESPACE, "dead_letters")

    def setup(self):
        self.line_of = LineNumberCache()
        self.encoder = shared_encoder(self.config.encoder)
        self.task = self.config.task_object()

    def process(self, batch, labels):
        label_ids = {label: i for i, label in enumerate(labels)}
        if self.config.input_format == CONLL:  # (sentence [(word, tag)], file, byte offset)
            examples = [([w for w, _ in sentence], [t for _, t in sentence]) for sentence, _, _ in batch]
        else:  # (text, text_b, label, file, line)
            examples = [(text, text_b or None, label) for text, text_b, label, _, _ in batch]
        rows = []
        for index, row, truncated in self.task.pack_examples(self.encoder, examples, label_ids, self.config.max_seq_length):
            if isinstance(row, dict):
                rows.append(row)
                self.truncated.inc(int(truncated))
                continue
            self.dead.inc()
            if self.config.input_format == CONLL:
                sentence, path, offset = batch[index]
                text, line = " ".join(w for w, _ in sentence), self.line_of(path, offset)
            else:
                text, _, _, path, line = batch[index]
                offset = None
            yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(path, offset, row, text, line))
        if rows:
            self.examples.inc(len(rows))
            yield serialize_rows(self.task, rows, self.config.max_seq_length)


def _conll_sentences(batch):
    """Documents of 'token ... tag' lines -> ([(word, tag)], file, byte offset) sentences."""
    out = []
    for doc in batch:
        sentence = []
        for line in doc.lines:
            parts = line.split()
            if parts[0] == "-DOCSTART-" or len(parts) < 2:
                continue
            sentence.append((parts[0], parts[-1]))
        if sentence:
            out.append((sentence, doc.path, doc.offset))
    return out


def build_pipeline(pipeline: beam.Pipeline, config: FinetuningDataConfig, staging: Staging):
    files = pipeline | "Patterns" >> beam.Create(list(config.inputs)) | "Match" >> beam_fileio.MatchAll()
    if config.input_format == CONLL:
        read = (
            files
            | "Ranges" >> beam.Map(lambda m: FileRange(m.path, 0, -1))
            | "Read" >> beam.ParDo(ReadDocuments("text", 1_000_000, max_invalid_share=config.max_invalid_share))
            .with_outputs(ReadDocuments.DEAD, main="batches")
        )
        examples_batches = read.batches | "Sentences" >> beam.Map(_conll_sentences)
        dead_read = read[ReadDocuments.DEAD]
        labels_of = lambda batch: [tag for sentence, _, _ in batch for _, tag in sentence]  # noqa: E731
    else:
        read = files | "Read" >> beam.ParDo(ReadExamples(config)).with_outputs(ReadExamples.DEAD, main="examples")
        examples_batches = read.examples | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=1024)
        dead_read = read[ReadExamples.DEAD]
        labels_of = lambda batch: [example[2] for example in batch]  # noqa: E731
    if config.label_vocabulary:
        labels = pipeline | "LabelFile" >> beam.Create([_read_label_file(config.label_vocabulary)])
    else:
        labels = (
            examples_batches
            | "Labels" >> beam.FlatMap(labels_of)
            | "Distinct" >> beam.Distinct()
            | "Sorted" >> beam.combiners.ToList()
            | "Sort" >> beam.Map(sorted)
        )
    encoded = examples_batches | "Encode" >> beam.ParDo(EncodeExamples(config), labels=beam.pvalue.AsSingleton(labels)).with_outputs(
        EncodeExamples.DEAD, main="records"
    )
    _ = (
        encoded.records
        | "Write" >> WriteRecordBatches(staging.shard_path_prefix, ".tfrecord", config.num_shards)
        | "ReportShards" >> ReportShards(staging.file(WRITTEN_SHARDS_FILE))
    )
    _ = labels | "LabelText" >> beam.Map("\n".join) | "WriteLabels" >> beam.io.WriteToText(
        staging.file(config.task + features.LABELS_FILE_SUFFIX), num_shards=1, shard_name_template=""
    )
    _ = (dead_read, encoded[EncodeExamples.DEAD]) | "Dead" >> beam.Flatten() | "WriteDead" >> beam.io.WriteToText(
        staging.file("dead_letters"), file_name_suffix=".jsonl", num_shards=1, shard_name_template=""
    )


def _read_label_file(path: str) -> list[str]:
    if not fileio.exists(path):
        raise PreprocessError(f"{path}: label vocabulary not found")
    labels = [line.strip() for line in fileio.read_text(path).splitlines() if line.strip()]
    if len(set(labels)) != len(labels) or not labels:
        raise PreprocessError(f"{path}: labels must be distinct and at least one")
    return labels


def run(config: FinetuningDataConfig) -> dict:
    """Runs the pipeline into a staging folder and publishes it (see :mod:`publish`); -> the manifest. A run
    without examples raises PreprocessError and leaves the output already in ``output_dir`` as it was."""
    config.validate()
    encoder = build_encoder(config.encoder)
    files = expand_inputs(config.inputs)
    staging = Staging(config.output_dir, config.task).start()
    try:
        return _run_staged(config, encoder, files, staging)
    finally:
        staging.discard()


def _run_staged(config: FinetuningDataConfig, encoder, files: list[str], staging: Staging) -> dict:
    started = time.time()
    pipeline = make_pipeline(config.runner, config.num_workers, config.beam_args)
    build_pipeline(pipeline, config, staging)
    result = pipeline.run()
    result.wait_until_finish()
    counters = _counters(result)
    if config.on_corrupt_file == "fail" and (error := corrupt_file_error(counters, staging.file(DEAD_LETTERS_FILE))):
        raise error
    written = staging.written_shards()
    shards = shard_counts(written, "none")
    total = sum(shards.values())
    if total == 0:
        raise PreprocessError(f"no examples in {list(config.inputs)} ({counters.get('dead_letters', 0)} dead letters); "
                              f"the output in {config.output_dir} is unchanged")
    labels_file = config.task + features.LABELS_FILE_SUFFIX
    with FileSystems.open(staging.file(labels_file)) as handle:
        labels = handle.read().decode("utf-8").splitlines()
    config.save(staging.file("config.yaml"))
    manifest = {
        "format": "bertkeras_finetuning", "task": config.task, "level": config.level, "shards": shards,
        "records": total, "max_seq_length": config.max_seq_length, "labels": labels,
        "encoder": encoder.identity(),
        "inputs": files, "parameters": config.to_dict(),
        "counts": {k: counters.get(k, 0) for k in ("examples", "truncated_examples", "dead_letters", "invalid_utf8_lines",
                                                   "not_text_files", "unreadable_files", "corrupt_files")},
        "wall_seconds": round(time.time() - started, 2),
    }
    side_files = {name: staging.file(name) for name in (labels_file, DEAD_LETTERS_FILE, "config.yaml")}
    return staging.publish(written, manifest, side_files)
