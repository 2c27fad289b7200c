"""Beam pipeline: corpora -> masked-LM / next-sentence (or causal-LM) TFRecords in Google's schema.

    pass 1 (pair mode): files --ranges--> documents --> the K documents with the smallest key hash --> pool file
    pass 2:             files --ranges--> document batches --> (per batch: one tokenizer call, instances,
                        masks, serialization) --> sharded TFRecords

Cross-document negatives at scale without a global shuffle: "B from another document" is drawn from a pool
of ``negative_pool_size`` documents chosen by hash (a bounded ``Top.Smallest`` combine, so memory does not
grow with the corpus and the choice does not depend on workers), which every worker of pass 2 loads. Every random choice for a document is
seeded by (seed, dupe index, the document's file and byte offset), so the same inputs, parameters and seed
give the same set of records for any number of workers.

Outputs in ``output_dir``: ``pretraining-<run id>-SSSSS-of-NNNNN.tfrecord[.gz]``, ``dead_letters.jsonl``,
``negative_pool.jsonl`` (pair mode), ``statistics.json``, ``config.yaml`` and ``manifest.json``, which names
the shards: a run stages everything and publishes it with the manifest as the commit (:mod:`publish`).
"""

from __future__ import annotations

import json
import logging
import time

import apache_beam as beam
from apache_beam.io import fileio as beam_fileio
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from components.preprocessing import instances as inst
from components.preprocessing.beam_options import make_pipeline
from components.preprocessing.config import (  # noqa: F401 - OnCorruptFile re-exported
    OnCorruptFile,
    PreprocessError,
    PretrainingDataConfig,
)
from components.preprocessing.corpus import (
    CORRUPT_FILE,
    NAMESPACE,
    UNREADABLE_FILE,
    Document,
    LineNumberCache,
    ReadDocuments,
    SplitIntoRanges,
    dead_letter,
)
from components.preprocessing.examples import WriteRecordBatches, count_tfrecords
from components.preprocessing.publish import WRITTEN_SHARDS_FILE, ReportShards, Staging
from trainer import features, fileio
from trainer.records import serialize_examples
from trainer.text.factory import build_encoder, shared_encoder

LENGTH_BUCKET = 16
SHARD_PREFIX = "pretraining"
POOL_FILE = "negative_pool.jsonl"
DEAD_LETTERS_FILE = "dead_letters.jsonl"
CONFIG_FILE = "config.yaml"
# Dead-letter reasons of files that were not read whole (on_corrupt_file=fail turns them into an error).
CORRUPT_REASONS = (CORRUPT_FILE, UNREADABLE_FILE)
# The manifest's counts: documents and every kind of loss, so nothing dropped or repaired goes unreported.
COUNTED = ("documents", "tokens", "masked_tokens", "empty_documents", "dead_letters", "invalid_utf8_lines",
           "lines_too_long", "lines_without_tokens", "unreadable_files", "corrupt_files", "not_text_files")


class MakeInstances(beam.DoFn):
    """A batch of documents -> a list of serialized tf.train.Example records: one tokenizer call, then instances
    planned per document, packed, masked and serialized for the whole batch. Negatives come from the pool
    file; lines without tokens go to the dead-letter output."""

    DEAD = "dead_letters"

    def __init__(self, config: PretrainingDataConfig, pool_file: str | None):
        self.config = config
        self.pool_file = pool_file
        self.tokens = Metrics.counter(NAMESPACE, "tokens")
        self.empty_lines = Metrics.counter(NAMESPACE, "lines_without_tokens")
        self.dead = Metrics.counter(NAMESPACE, "dead_letters")
        self.instances = Metrics.counter(NAMESPACE, "instances")
        self.masked = Metrics.counter(NAMESPACE, "masked_tokens")
        self.random_next = Metrics.counter(NAMESPACE, "nsp_random_next")
        self.true_next = Metrics.counter(NAMESPACE, "nsp_true_next")
        self.lengths = {}

    def setup(self):
        encoder = shared_encoder(self.config.encoder)
        special = encoder.special
        self.start_id = special.id("start")
        self.end_id = special.id("end")
        self.encoder = encoder
        self.line_of = LineNumberCache()
        self.pool: list[inst.TokenizedDocument] = []
        if self.pool_file:
            records = [json.loads(line) for line in fileio.read_text(self.pool_file).splitlines() if line.strip()]
            pool = [Document(d["key"], d["path"], d["offset"], tuple(d["lines"])) for d in records]
            # Encoded in chunks: one call for the whole pool would make a transient peak that grows with the pool.
            for first in range(0, len(pool), 256):
                self.pool.extend(doc for doc in inst.tokenize_documents(encoder, pool[first : first + 256])[0] if doc is not None)
        self.random_document = inst.random_document_from(self.pool)
        if self.config.mode != "causal":
            self.spec = inst.masking_spec(self.config, encoder)

    def _count_lengths(self, lengths: np.ndarray) -> None:
        buckets = np.bincount((lengths - 1) // LENGTH_BUCKET)
        for index in np.flatnonzero(buckets).tolist():
            bucket = index * LENGTH_BUCKET
            if bucket not in self.lengths:
                self.lengths[bucket] = Metrics.counter(NAMESPACE, f"length_{bucket:05d}_{bucket + LENGTH_BUCKET - 1:05d}")
            self.lengths[bucket].inc(int(buckets[index]))

    def process(self, batch: list[Document]):
        documents, empty = inst.tokenize_documents(self.encoder, batch)
        for index, line in empty:
            doc = batch[index]
            self.empty_lines.inc()
            self.dead.inc()
            offset = doc.line_offsets[line] if doc.line_offsets else doc.offset
            yield beam.pvalue.TaggedOutput(
                self.DEAD, dead_letter(doc.path, offset, "line has no tokens", doc.lines[line], self.line_of(doc.path, offset))
            )
        documents = [doc for doc in documents if doc is not None]
        self.tokens.inc(sum(len(doc.tokens) for doc in documents))
        if not documents:
            return
        config = self.config
        if config.mode == "causal":
            columns = inst.causal_columns(documents, config.max_seq_length, config.dupe_factor, self.end_id)
        else:
            columns = inst.masked_columns(documents, config, self.spec, self.start_id, self.end_id, self.random_document)
            if columns is None:
                return
            self.masked.inc(int(columns[features.MASKED_LM_WEIGHTS].sum()))
            if config.mode == "pair":
                random_next = int(columns[features.NEXT_SENTENCE_LABELS].sum())
                self.random_next.inc(random_next)
                self.true_next.inc(len(columns[features.INPUT_IDS]) - random_next)
        self.instances.inc(len(columns[features.INPUT_IDS]))
        self._count_lengths(columns[features.INPUT_MASK].sum(axis=1))
        yield serialize_examples(columns)


def _pool_candidates(batch: list[Document]) -> list[tuple[str, str]]:
    """(key, JSON line) per document: plain strings pickle fast, and tuples compare by the (unique) key."""
    return [(d.key, json.dumps({"key": d.key, "path": d.path, "offset": d.offset, "lines": d.lines})) for d in batch]


def expand_inputs(inputs: tuple[str, ...]) -> list[str]:
    """Checks the inputs before anything runs: each pattern must match at least one file."""
    found = []
    for pattern in inputs:
        matches = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
        if not matches:
            raise PreprocessError(f"input {pattern!r} matches no file")
        found.extend(matches)
    return sorted(set(found))


def read_corpus(pipeline: beam.Pipeline, config: PretrainingDataConfig, count: bool = True):
    """Corpus files -> batches of documents (main output) and dead letters."""
    reader = ReadDocuments(config.input_format, config.max_line_bytes, count=count, max_invalid_share=config.max_invalid_share)
    return (
        pipeline
        | "Patterns" >> beam.Create(list(config.inputs))
        | "Match" >> beam_fileio.MatchAll()
        | "Ranges" >> beam.ParDo(SplitIntoRanges(config.range_bytes))
        | "Distribute" >> beam.Reshuffle()
        | "Read" >> beam.ParDo(reader).with_outputs(ReadDocuments.DEAD, main="documents")
    )


def build_pool_pipeline(pipeline: beam.Pipeline, config: PretrainingDataConfig, pool_file: str):
    """First pass (pair mode): the ``negative_pool_size`` documents with the smallest key hash -> a JSONL file.

    A separate pipeline rather than a side input: a side input would make the runner hold the whole encoded
    corpus in memory until the pool is complete."""
    _ = (
        read_corpus(pipeline, config, count=False).documents
        | "PoolDocuments" >> beam.FlatMap(_pool_candidates)
        | "PoolSample" >> beam.combiners.Top.Smallest(config.negative_pool_size)
        | "PoolJson" >> beam.Map(lambda chosen: "\n".join(line for _, line in chosen))
        | "WritePool" >> beam.io.WriteToText(pool_file, num_shards=1, shard_name_template="")
    )


def build_pipeline(pipeline: beam.Pipeline, config: PretrainingDataConfig, staging: Staging, pool_file: str | None):
    """Main pass: documents -> encoded -> instances -> shards in the staging folder; dead letters beside them."""
    corpus = read_corpus(pipeline, config)
    made = corpus.documents | "Instances" >> beam.ParDo(MakeInstances(config, pool_file)).with_outputs(
        MakeInstances.DEAD, main="records"
    )
    suffix = ".tfrecord" + (".gz" if config.compression == "gzip" else "")
    _ = (
        made.records
        | "WriteRecords" >> WriteRecordBatches(staging.shard_path_prefix, suffix, config.num_shards, gzip=config.compression == "gzip")
        | "ReportShards" >> ReportShards(staging.file(WRITTEN_SHARDS_FILE))
    )
    _ = (
        (corpus[ReadDocuments.DEAD], made[MakeInstances.DEAD])
        | "DeadLetters" >> beam.Flatten()
        | "WriteDeadLetters" >> beam.io.WriteToText(
            staging.file("dead_letters"), file_name_suffix=".jsonl", num_shards=1, shard_name_template=""
        )
    )


def _counters(result) -> dict[str, int]:
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(counter.committed or counter.attempted or 0)
    return totals


def shard_counts(paths: list[str], compression: str) -> dict[str, int]:
    """Records per shard (by file name), counted by reading the shards back with their checksums."""
    counts = {}
    for shard in paths:
        kind = CompressionTypes.GZIP if compression == "gzip" else CompressionTypes.UNCOMPRESSED
        with FileSystems.open(shard, compression_type=kind) as handle:
            counts[shard.rsplit("/", 1)[-1]] = count_tfrecords(handle, shard)
    return counts


def corrupt_file_error(counters: dict[str, int], dead_letters: str) -> PreprocessError | None:
    """With ``on_corrupt_file=fail``: the error naming the files that were not read whole, else None."""
    if not counters.get("corrupt_files", 0) and not counters.get("unreadable_files", 0):
        return None
    names = []
    if FileSystems.exists(dead_letters):
        with FileSystems.open(dead_letters) as handle:
            for line in handle.read().decode("utf-8").splitlines():
                letter = json.loads(line)
                if letter["reason"].startswith(CORRUPT_REASONS):
                    names.append(f"{letter['file']} ({letter['reason']})")
    return PreprocessError("files that could not be read whole (on_corrupt_file=fail): " + "; ".join(sorted(set(names))))


def run(config: PretrainingDataConfig) -> dict:
    """Runs the pipeline into a staging folder and publishes it (see :mod:`publish`); -> the manifest.
    Raises PreprocessError for an empty corpus (or a corrupt file with ``on_corrupt_file=fail``), leaving the
    output already in ``output_dir`` as it was."""
    config.validate()
    encoder = build_encoder(config.encoder)  # fail fast on a bad vocabulary, before any worker starts
    if config.whole_word_masking:
        inst.continuation_table(encoder)
    files = expand_inputs(config.inputs)
    staging = Staging(config.output_dir, SHARD_PREFIX).start()
    try:
        return _run_staged(config, encoder, files, staging)
    finally:
        staging.discard()


def _run_staged(config: PretrainingDataConfig, encoder, files: list[str], staging: Staging) -> dict:
    started = time.time()
    pool_file = None
    if config.mode == "pair":
        pool_file = staging.file(POOL_FILE)
        pool_pipeline = make_pipeline(config.runner, config.num_workers, config.beam_args)
        build_pool_pipeline(pool_pipeline, config, pool_file)
        pool_pipeline.run().wait_until_finish()
    pipeline = make_pipeline(config.runner, config.num_workers, config.beam_args)
    build_pipeline(pipeline, config, staging, pool_file)
    result = pipeline.run()
    result.wait_until_finish()
    counters = _counters(result)
    dead_letters = staging.file(DEAD_LETTERS_FILE)
    if config.on_corrupt_file == "fail" and (error := corrupt_file_error(counters, dead_letters)):
        raise error
    written = staging.written_shards()
    shards = shard_counts(written, config.compression)
    total = sum(shards.values())
    if total == 0:
        raise PreprocessError(
            f"no instances: the corpus {list(config.inputs)} has no usable document "
            f"({counters.get('documents', 0)} documents, {counters.get('dead_letters', 0)} dead letters"
            + (f", {counters.get('not_text_files', 0)} files that are not text" if counters.get("not_text_files") else "")
            + f"); the output in {config.output_dir} is unchanged"
        )
    lengths = {k[len("length_"):]: v for k, v in sorted(counters.items()) if k.startswith("length_")}
    statistics = {
        "instances": total, "documents": counters.get("documents", 0), "tokens": counters.get("tokens", 0),
        "masked_tokens": counters.get("masked_tokens", 0),
        "next_sentence": {"true_next": counters.get("nsp_true_next", 0), "random_next": counters.get("nsp_random_next", 0)},
        "sequence_length_histogram": lengths,
        "dead_letters": counters.get("dead_letters", 0),
        "run_id": staging.run_id,
    }
    fileio.atomic_write_text(staging.file(features.STATISTICS_FILE), json.dumps(statistics, indent=2))
    config.save(staging.file(CONFIG_FILE))
    manifest = {
        "format": "google_create_pretraining_data" if config.mode != "causal" else "causal_lm_blocks",
        "mode": config.mode,
        "shards": shards,
        "records": total,
        "compression": config.compression,
        "max_seq_length": config.max_seq_length,
        "max_predictions_per_seq": config.max_predictions_per_seq,
        "seed": config.seed,
        "encoder": encoder.identity(),
        "inputs": files,
        "parameters": config.to_dict(),
        "counts": {name: counters.get(name, 0) for name in COUNTED},
        "wall_seconds": round(time.time() - started, 2),
    }
    side_files = {name: staging.file(name) for name in (DEAD_LETTERS_FILE, features.STATISTICS_FILE, CONFIG_FILE, POOL_FILE)}
    manifest = staging.publish(written, manifest, side_files)
    logging.info("wrote %d records to %s", total, config.output_dir)
    return manifest
