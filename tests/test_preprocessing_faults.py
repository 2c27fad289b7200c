"""The preprocessing fault matrix: reruns, failures and kills never corrupt the output in place; damaged,
binary and mis-encoded inputs are reported by name; long lines and compressed files are streamed."""

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from components.corpora import kjv_chapters
from components.preprocessing.corpus import (
    CORRUPT_FILE,
    NOT_TEXT,
    FileRange,
    ReadDocuments,
    bounded_lines,
    document_key,
    is_corrupt_stream,
    not_text_reason,
)
from components.preprocessing.examples import count_tfrecords, tfrecord_frame
from components.preprocessing.finetuning import FinetuningDataConfig
from components.preprocessing.finetuning import run as run_finetuning
from components.preprocessing.pretraining import PreprocessError, PretrainingDataConfig, run
from components.preprocessing.publish import STAGING_PREFIX
from trainer import features
from trainer.text.factory import EncoderConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAPTERS = 60


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """60 KJV chapters in Google's format: one document a chapter."""
    path = tmp_path_factory.mktemp("corpus") / "kjv.txt"
    path.write_text("\n\n".join("\n".join(verses) for _, verses in kjv_chapters()[:CHAPTERS]) + "\n", encoding="utf-8")
    return str(path)


def config(inputs, out, vocab, **overrides):
    base = dict(inputs=tuple(str(i) for i in inputs), output_dir=str(out), encoder=EncoderConfig(vocab_file=vocab),
                num_shards=2, range_bytes=64 << 10, mode="single")
    return PretrainingDataConfig(**{**base, **overrides})


def snapshot(folder) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def records_of(folder, manifest) -> list[bytes]:
    paths = [os.path.join(folder, name) for name in manifest["shards"]]
    return sorted(r.numpy() for r in tf.data.TFRecordDataset(paths))


def leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith((STAGING_PREFIX, "beam-temp-"))]


def test_rerun_with_another_shard_count_publishes_only_its_own_shards(corpus, vocab, tmp_path):
    first = run(config([corpus], tmp_path, vocab, num_shards=3))
    second = run(config([corpus], tmp_path, vocab, num_shards=2))
    on_disk = sorted(n for n in os.listdir(tmp_path) if ".tfrecord" in n)
    assert on_disk == sorted(second["shards"]) and len(on_disk) == 2
    assert second["records"] == first["records"] == sum(second["shards"].values())
    # A reader that globs the folder (not the manifest) sees each record once, too.
    globbed = sorted(r.numpy() for r in tf.data.TFRecordDataset([str(tmp_path / n) for n in on_disk]))
    assert globbed == records_of(tmp_path, second)
    assert len(globbed) == first["records"] and not leftovers(tmp_path)
    assert json.load(open(tmp_path / features.STATISTICS_FILE))["run_id"] == second["run_id"] != first["run_id"]


def test_failed_reruns_leave_the_previous_output_byte_identical(corpus, vocab, tmp_path):
    out = tmp_path / "out"
    run(config([corpus], out, vocab))
    before = snapshot(out)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(PreprocessError, match="no instances.*unchanged"):
        run(config([empty], out, vocab))
    assert snapshot(out) == before and not leftovers(out)
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(gzip.compress(open(corpus, "rb").read())[:20000])
    with pytest.raises(PreprocessError, match="cut.txt.gz"):
        run(config([corpus, truncated], out, vocab, on_corrupt_file="fail"))
    assert snapshot(out) == before and not leftovers(out)


def test_a_killed_run_leaves_the_output_in_place_and_the_rerun_cleans_up(corpus, vocab, tmp_path):
    out = tmp_path / "out"
    first = run(config([corpus], out, vocab, mode="pair", num_shards=1))
    first_records = records_of(out, first)
    before = snapshot(out)
    command = [sys.executable, "-m", "components.preprocessing", "pretraining", "--inputs", corpus,
               "--output_dir", str(out), "--encoder.vocab_file", vocab, "--num_shards", "3", "--range_bytes", "65536"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        staged = [os.path.join(out, n) for n in leftovers(out)]
        if staged and any(os.listdir(s) for s in staged):  # Beam is writing into the staging folder
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert leftovers(out)  # what the killed run staged...
    assert {k: v for k, v in snapshot(out).items() if not k.startswith(STAGING_PREFIX)} == before  # ...and nothing else
    again = run(config([corpus], out, vocab, mode="pair", num_shards=1))
    assert not leftovers(out)
    assert records_of(out, again) == first_records  # the same records as the run before the kill
    assert sorted(n for n in os.listdir(out) if ".tfrecord" in n) == sorted(again["shards"])


def test_a_truncated_gzip_file_is_dead_lettered_by_name(corpus, vocab, tmp_path):
    whole = gzip.compress(open(corpus, "rb").read())
    truncated = tmp_path / "kjv.txt.gz"
    truncated.write_bytes(whole[: len(whole) * 6 // 10])
    manifest = run(config([truncated], tmp_path / "out", vocab))
    assert manifest["counts"]["corrupt_files"] == 1
    assert 0 < manifest["counts"]["documents"] < CHAPTERS
    letters = [json.loads(line) for line in open(tmp_path / "out" / "dead_letters.jsonl")]
    (letter,) = [x for x in letters if x["reason"].startswith(CORRUPT_FILE)]
    assert letter["file"] == str(truncated) and "documents before the damage were kept" in letter["reason"]


def test_a_binary_file_is_not_text(corpus, vocab, tmp_path):
    binary = tmp_path / "tool.txt"
    shutil.copy(sys.executable if os.path.getsize(sys.executable) > 10000 else "/bin/ls", binary)
    manifest = run(config([corpus, binary], tmp_path / "out", vocab))
    assert manifest["counts"]["not_text_files"] == 1 and manifest["counts"]["documents"] == CHAPTERS
    letters = [json.loads(line) for line in open(tmp_path / "out" / "dead_letters.jsonl")]
    assert [(x["file"], x["reason"].split(":")[0]) for x in letters] == [(str(binary), NOT_TEXT)]


def test_latin1_finetuning_rows_are_repaired_counted_and_dead_lettered(minilm_dir, tmp_path):
    tsv = tmp_path / "rows.tsv"
    tsv.write_bytes("text\tlabel\nthe water was good\tyes\n".encode() + b"caf\xe9 au lait\tno\nbread\tno\n")
    manifest = run_finetuning(FinetuningDataConfig(
        task="drink", inputs=(str(tsv),), output_dir=str(tmp_path / "out"), max_seq_length=16,
        encoder=EncoderConfig(vocab_file=os.path.join(minilm_dir, "vocab.txt")),
    ))
    assert manifest["records"] == 3 and manifest["counts"]["invalid_utf8_lines"] == 1
    (letter,) = [json.loads(line) for line in open(tmp_path / "out" / "dead_letters.jsonl")]
    assert (letter["file"], letter["line"]) == (str(tsv), 3) and "invalid UTF-8" in letter["reason"]
    assert letter["sample"].startswith("caf\ufffd au lait")


def test_files_of_the_same_name_in_two_folders_are_different_documents(corpus, vocab, tmp_path):
    for folder in ("a", "b"):
        os.makedirs(tmp_path / folder)
        shutil.copy(corpus, tmp_path / folder / "kjv.txt")
    assert document_key(str(tmp_path / "a/kjv.txt"), 0) != document_key(str(tmp_path / "b/kjv.txt"), 0)
    manifest = run(config([tmp_path / "a/kjv.txt", tmp_path / "b/kjv.txt"], tmp_path / "out", vocab))
    records = records_of(tmp_path / "out", manifest)
    assert manifest["counts"]["documents"] == 2 * CHAPTERS
    assert len(set(records)) == len(records)  # the same seeds would have made every record twice


def test_bounded_lines_cut_long_lines_and_keep_their_length():
    data = b"short\n" + b"x" * 300_000 + b"\n\nlast line without newline"
    lines = list(bounded_lines(io.BytesIO(data), limit=1000, chunk=4096))
    assert [(line[:5], length) for line, length in lines] == [
        (b"short", 5), (b"xxxxx", 300_000), (b"", 0), (b"last ", 25)]
    assert len(lines[1][0]) == 1001 and lines[3][0] == b"last line without newline"
    text = b"".join(b"w" * (i % 37) + b"\n" for i in range(2000))
    assert [line for line, _ in bounded_lines(io.BytesIO(text), limit=10_000, chunk=333)] == text.split(b"\n")[:-1]


def test_a_gzip_file_larger_than_beams_read_buffer_is_read_to_its_end(tmp_path):
    """Beam's CompressedFile.read() returns only its first 16 MiB; the reader streams to the end instead."""
    document = "\n".join(f"verse {i} of a long document." for i in range(20)).encode() + b"\n\n"
    copies = (20 << 20) // len(document) + 1  # 20 MiB decompressed
    path = tmp_path / "big.txt.gz"
    path.write_bytes(gzip.compress(document * copies, compresslevel=1))
    reader = ReadDocuments("text", 1_000_000)
    reader.setup()
    batches = [item for item in reader.process(FileRange(str(path), 0, -1)) if isinstance(item, list)]
    assert sum(len(batch) for batch in batches) == copies
    assert batches[-1][-1].lines[-1] == "verse 19 of a long document."


def test_counting_records_checks_every_frame():
    sample = open(os.path.join(os.path.dirname(__file__), "data", "google_cpd_sample.tfrecord"), "rb").read()
    assert count_tfrecords(io.BytesIO(sample), "sample") == 50  # Google's writer, read back by ours
    assert count_tfrecords(io.BytesIO(b"".join(tfrecord_frame(b"x" * n) for n in (0, 1, 300))), "ours") == 3
    with pytest.raises(ValueError, match="cut: record 49 is corrupt or truncated"):
        count_tfrecords(io.BytesIO(sample[:-1]), "cut")
    flipped = bytearray(sample)
    flipped[100] ^= 1
    with pytest.raises(ValueError, match="flipped: record 0"):
        count_tfrecords(io.BytesIO(bytes(flipped)), "flipped")


def test_publishing_on_gcs_replaces_the_output_whole_and_a_failed_rerun_changes_nothing(gcs_emulator, corpus, vocab):
    """The same protocol through Beam's GCS file system, against a real GCS server (the emulator)."""
    bucket = gcs_emulator.create_bucket("corpora")
    bucket.blob("in/kjv.txt").upload_from_filename(corpus)
    bucket.blob("in/empty.txt").upload_from_string("\n\n")

    def listing() -> dict[str, str]:
        return {b.name: b.md5_hash for b in gcs_emulator.list_blobs("corpora", prefix="records/")}

    first = run(config(["gs://corpora/in/kjv.txt"], "gs://corpora/records", vocab, num_shards=3))
    second = run(config(["gs://corpora/in/kjv.txt"], "gs://corpora/records", vocab, num_shards=2))
    names = {name.split("/", 1)[1] for name in listing()}
    assert names == {*second["shards"], features.MANIFEST_FILE, features.STATISTICS_FILE, "config.yaml", "dead_letters.jsonl"}
    assert second["records"] == first["records"] == sum(second["shards"].values()) > 0
    before = listing()
    with pytest.raises(PreprocessError, match="no instances"):
        run(config(["gs://corpora/in/empty.txt"], "gs://corpora/records", vocab))
    assert listing() == before


def test_a_rerun_in_another_mode_leaves_nothing_of_the_earlier_output(corpus, vocab, tmp_path):
    run(config([corpus], tmp_path, vocab, mode="pair", num_shards=1))
    assert (tmp_path / "negative_pool.jsonl").exists()
    single = run(config([corpus], tmp_path, vocab, mode="single", num_shards=1))
    assert sorted(os.listdir(tmp_path)) == sorted(
        [*single["shards"], features.MANIFEST_FILE, features.STATISTICS_FILE, "config.yaml", "dead_letters.jsonl"])


def test_what_counts_as_damage_and_as_not_text():
    assert is_corrupt_stream("a.txt.gz", EOFError("Compressed file ended before the end-of-stream marker"))
    assert is_corrupt_stream("a.txt.bz2", OSError("Invalid data stream"))
    assert not is_corrupt_stream("a.txt.gz", ConnectionResetError("peer reset"))  # retried by Beam, not dead-lettered
    assert not is_corrupt_stream("a.txt", OSError("Invalid data stream"))
    assert not_text_reason("caf\xe9 cr\xe8me\n".encode("latin-1"), 0.05) is None  # short: repaired line by line
    assert not_text_reason(("caf\xe9 " * 400).encode("latin-1"), 0.05).startswith(NOT_TEXT)  # 20% invalid
    assert not_text_reason(b"\x7fELF\x02\x01\x01" + b"\0" * 100, 0.05).startswith(NOT_TEXT)
