"""Beam preprocessing on DirectRunner: real KJV text -> records in Google's schema, determinism, bad input."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from components.corpora import kjv_chapters
from components.preprocessing.pretraining import PreprocessError, PretrainingDataConfig, run
from trainer import features
from trainer.text.factory import EncoderConfig
from trainer.text.wordpiece import WordPieceEncoder

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """The first 120 chapters of Genesis..Leviticus in Google's format."""
    path = tmp_path_factory.mktemp("corpus") / "kjv.txt"
    path.write_text("\n\n".join("\n".join(verses) for _, verses in kjv_chapters()[:120]) + "\n", encoding="utf-8")
    return str(path)


def config(inputs, out, vocab, **overrides):
    base = dict(
        inputs=tuple(inputs), output_dir=str(out), encoder=EncoderConfig(vocab_file=vocab), num_workers=1,
        num_shards=2, range_bytes=64 << 10,
    )
    return PretrainingDataConfig(**{**base, **overrides})


def read_records(out, spec, compression=""):
    files = sorted(f for f in os.listdir(out) if f.startswith("pretraining-"))
    dataset = tf.data.TFRecordDataset([os.path.join(out, f) for f in files], compression_type=compression)
    return [tf.io.parse_single_example(r, spec) for r in dataset], [r.numpy() for r in dataset]


def test_google_sample_parses_with_our_feature_spec():
    spec = features.pretraining_feature_spec(128, 20)
    records = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(os.path.join(DATA, "google_cpd_sample.tfrecord"))]
    assert len(records) == 50
    assert all(int(r["input_ids"][0]) == 101 for r in records)  # [CLS]


@pytest.fixture(scope="module")
def pair_output(small_corpus, vocab, tmp_path_factory):
    out = tmp_path_factory.mktemp("pair")
    manifest = run(config([small_corpus], out, vocab))
    return out, manifest


def test_pair_records_follow_googles_layout(pair_output, vocab):
    out, manifest = pair_output
    encoder = WordPieceEncoder.from_file(vocab)
    parsed, _ = read_records(out, features.pretraining_feature_spec(128, 20))
    assert len(parsed) == manifest["records"] == sum(manifest["shards"].values()) > 1000
    assert len(manifest["shards"]) == 2 and min(manifest["shards"].values()) > 0.3 * manifest["records"]
    nsp = []
    for r in parsed[:500]:
        ids, mask, segments = (r[k].numpy() for k in ("input_ids", "input_mask", "segment_ids"))
        n = int(mask.sum())
        assert ids[0] == 101 and ids[n - 1] == 102 and (ids[n:] == 0).all() and (mask[:n] == 1).all()
        weights = r["masked_lm_weights"].numpy()
        k = int(weights.sum())
        positions = r["masked_lm_positions"].numpy()[:k]
        assert 1 <= k <= 20 and k == min(20, max(1, round(n * 0.15)))
        # the 10% random replacements draw from the whole vocabulary, [SEP] included (as Google's script does),
        # so the separators are counted at unmasked positions and the originals checked through the labels
        assert all(0 < p < n for p in positions)
        assert not set(r["masked_lm_ids"].numpy()[:k].tolist()) & {0, 101, 102, 103}
        unmasked = np.setdiff1d(np.arange(n), positions)
        seps = unmasked[ids[unmasked] == 102]
        assert len(seps) == 2 and (segments[: seps[0] + 1] == 0).all() and (segments[seps[0] + 1 : n] == 1).all()
        nsp.append(int(r["next_sentence_labels"][0]))
    masked = sum(int(r["masked_lm_weights"].numpy().sum()) for r in parsed)
    replaced = sum(
        int((r["input_ids"].numpy()[r["masked_lm_positions"].numpy()[: int(r["masked_lm_weights"].numpy().sum())]] == 103).sum())
        for r in parsed
    )
    assert 0.75 < replaced / masked < 0.85  # 80% [MASK]
    assert 0.35 < np.mean(nsp) < 0.65
    assert encoder.fingerprint == manifest["encoder"]["fingerprint"]
    stats = json.load(open(out / features.STATISTICS_FILE))
    assert stats["masked_tokens"] == masked == manifest["counts"]["masked_tokens"]
    assert manifest["counts"]["tokens"] == stats["tokens"] > len(parsed) * 20
    assert sum(stats["sequence_length_histogram"].values()) == len(parsed)
    assert stats["next_sentence"]["true_next"] + stats["next_sentence"]["random_next"] == len(parsed)
    assert manifest["counts"]["documents"] == 120 and manifest["counts"]["dead_letters"] == 0


def test_true_next_segments_share_a_document_and_random_next_ones_do_not(pair_output, vocab, small_corpus):
    out, _ = pair_output
    encoder = WordPieceEncoder.from_file(vocab)
    chapters = open(small_corpus, encoding="utf-8").read().split("\n\n")
    # A segment is a run of whole verses of one chapter, maybe cut at either end, so any 8 tokens of it occur in
    # its chapter's token stream; only 8-grams found in one chapter place it.
    chapters_of: dict[tuple, set] = {}
    for index, chapter in enumerate(chapters):
        stream = [t for verse in chapter.splitlines() for t in encoder.encode(verse)]
        for start in range(len(stream) - 7):
            chapters_of.setdefault(tuple(stream[start : start + 8]), set()).add(index)
    chapter_of = {gram: found.pop() for gram, found in chapters_of.items() if len(found) == 1}
    parsed, _ = read_records(out, features.pretraining_feature_spec(128, 20))
    placed = {0: 0, 1: 0}
    for r in parsed:
        # restore the original tokens at the masked positions
        ids = r["input_ids"].numpy()
        k = int(r["masked_lm_weights"].numpy().sum())
        ids[r["masked_lm_positions"].numpy()[:k]] = r["masked_lm_ids"].numpy()[:k]
        ids = ids.tolist()
        sep = ids.index(102)
        a, b = tuple(ids[1:9]), tuple(ids[sep + 1 : sep + 9])
        if a in chapter_of and b in chapter_of:
            random_next = int(r["next_sentence_labels"][0])  # 1: B was drawn from another document
            assert (chapter_of[a] != chapter_of[b]) == bool(random_next)
            placed[random_next] += 1
    # most records of either kind are placed (short segments and repeated phrases are not)
    assert min(placed.values()) > len(parsed) / 4


def test_same_records_with_one_and_two_workers(small_corpus, vocab, tmp_path):
    one = run(config([small_corpus], tmp_path / "one", vocab, range_bytes=32 << 10))
    two = run(config([small_corpus], tmp_path / "two", vocab, range_bytes=32 << 10, num_workers=2))
    spec = features.pretraining_feature_spec(128, 20)
    assert one["records"] == two["records"]
    assert sorted(read_records(tmp_path / "one", spec)[1]) == sorted(read_records(tmp_path / "two", spec)[1])


def test_single_and_causal_modes(small_corpus, vocab, tmp_path):
    single = run(config([small_corpus], tmp_path / "single", vocab, mode="single", compression="gzip"))
    parsed, _ = read_records(tmp_path / "single", features.pretraining_feature_spec(128, 20, next_sentence=False), "GZIP")
    assert len(parsed) == single["records"] > 0 and all(int(r["segment_ids"].numpy().sum()) == 0 for r in parsed)
    causal = run(config([small_corpus], tmp_path / "causal", vocab, mode="causal", max_seq_length=64))
    parsed, _ = read_records(tmp_path / "causal", features.causal_feature_spec(64))
    assert len(parsed) == causal["records"] > 0
    full = [r for r in parsed if int(r["input_mask"].numpy().sum()) == 65]
    assert len(full) > len(parsed) / 2


def test_bad_input_becomes_dead_letters(vocab, tmp_path):
    corpus = tmp_path / "bad.txt"
    corpus.write_bytes(
        b"In the beginning God created the heaven and the earth.\ncaf\xe9 latin-1 bytes here.\n\n"
        b"\n\n\n"
        + b"x" * 3000 + b"\nA good line after a long one.\n\n"
        + b"\x00\x01\x02\x7f\n\nAnd the evening and the morning were the first day.\n"
    )
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "First sentence. Second one! Third?"}\nnot json\n{"title": "no text"}\n')
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(b"this is not a gzip stream" * 4)
    manifest = run(config([str(corpus), str(broken)], tmp_path / "out", vocab, max_line_bytes=1000))
    counts = manifest["counts"]
    assert counts["invalid_utf8_lines"] == 1 and counts["lines_too_long"] == 1 and counts["corrupt_files"] == 1
    assert counts["lines_without_tokens"] == 1  # the line of control characters
    letters = [json.loads(line) for line in open(tmp_path / "out" / "dead_letters.jsonl")]
    assert {letter["file"] for letter in letters} == {str(corpus), str(broken)}
    too_long = next(letter for letter in letters if "longer than 1000 bytes" in letter["reason"])
    assert (too_long["line"], too_long["byte_offset"]) == (7, 84)  # lines of 55 and 25 bytes, then 4 blank lines
    invalid = next(letter for letter in letters if "invalid UTF-8" in letter["reason"])
    assert (invalid["line"], invalid["byte_offset"]) == (2, 55)
    no_tokens = next(letter for letter in letters if "no tokens" in letter["reason"])
    assert no_tokens["line"] == 10  # after the long line (7), "A good line" (8) and a blank line (9)
    assert manifest["records"] > 0
    jsonl_manifest = run(config([str(jsonl)], tmp_path / "json", vocab, input_format="jsonl"))
    assert jsonl_manifest["counts"]["documents"] == 1 and jsonl_manifest["counts"]["dead_letters"] == 2


def test_empty_corpus_is_an_error_and_leaves_no_shards(vocab, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    with pytest.raises(PreprocessError, match="no instances"):
        run(config([str(empty)], tmp_path / "out", vocab))
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith("pretraining-")]
    assert not (tmp_path / "out" / features.MANIFEST_FILE).exists()
    with pytest.raises(PreprocessError, match="matches no file"):
        run(config([str(tmp_path / "missing-*.txt")], tmp_path / "out2", vocab))
