"""Instance planning, masking and record serialization as pure functions (no Beam)."""

import random

import numpy as np
import pytest
import tensorflow as tf

from components.preprocessing import instances as inst
from components.preprocessing.examples import tfrecord_frame
from trainer.records import serialize_examples

START, END, MASK, VOCAB = 101, 102, 103, 1000


def spec(**overrides):
    base = dict(
        max_predictions_per_seq=20, masked_lm_prob=0.15, mask_rate=0.8, random_rate=0.1, whole_word_masking=False,
        vocab_size=VOCAB, mask_id=MASK, special_ids=frozenset({START, END}),
    )
    return inst.MaskingSpec(**{**base, **overrides})


def document(key, segment_lengths, first_token=200):
    tokens = np.arange(first_token, first_token + sum(segment_lengths), dtype=np.int32)
    return inst.TokenizedDocument(key, tokens, np.concatenate([[0], np.cumsum(segment_lengths)]).tolist())


def googles_truncation_lengths(len_a, len_b, max_tokens):
    """Google's truncate_seq_pair loop, counting the tokens each side loses."""
    cut_a = cut_b = 0
    while len_a + len_b > max_tokens:
        if len_a > len_b:
            len_a, cut_a = len_a - 1, cut_a + 1
        else:
            len_b, cut_b = len_b - 1, cut_b + 1
    return cut_a, cut_b


def test_truncation_matches_googles_loop():
    rng = random.Random(0)
    for max_tokens in (40, 41):
        for len_a in range(1, 60, 3):
            for len_b in range(1, 60, 4):
                front_a, back_a, front_b, back_b = inst.truncation(len_a, len_b, max_tokens, rng)
                assert (front_a + back_a, front_b + back_b) == googles_truncation_lengths(len_a, len_b, max_tokens)
                assert min(front_a, back_a, front_b, back_b) >= 0
    fronts = [inst.truncation(100, 1, 21, rng)[0] for _ in range(2000)]  # 80 coin flips each
    assert abs(np.mean(fronts) - 40) < 1.0


def test_pair_plans_cover_the_document_and_draw_negatives_elsewhere():
    doc = document("a", [7, 9, 4, 12, 6, 8, 10, 5, 11, 3] * 4)
    other = document("b", [6, 8, 5, 9] * 5, first_token=700)
    plans = inst.pair_plans(doc, lambda rng: other, 32, 0.1, random.Random(1))
    assert len(plans) > 5
    random_next = 0
    for (source_a, a0, a1), (source_b, b0, b1), is_random in plans:
        assert source_a is doc.tokens and 0 < a1 - a0 and 0 < b1 - b0 and (a1 - a0) + (b1 - b0) <= 29
        if is_random:
            random_next += 1
            assert source_b is other.tokens
        else:
            assert source_b is doc.tokens and b0 >= a1
    assert 0 < random_next < len(plans)
    assert plans == inst.pair_plans(doc, lambda rng: other, 32, 0.1, random.Random(1))  # seeded


def test_pack_and_mask_follow_googles_layout():
    doc = document("a", [10, 20, 15, 30, 25, 12] * 3)
    plans = inst.pair_plans(doc, lambda rng: None, 64, 0.0, random.Random(3))
    batch = inst.pack(plans, 64, START, END)
    original = batch.tokens.copy()
    rng = random.Random(4)
    inst.mask_batch(batch, spec(), inst.masking_randomness(len(plans), 64, spec(), rng))
    for row, ((_, a0, a1), (_, b0, b1), _) in enumerate(plans):
        n = int(batch.lengths[row])
        assert n == (a1 - a0) + (b1 - b0) + 3
        assert original[row, 0] == START and original[row, a1 - a0 + 1] == END and original[row, n - 1] == END
        assert (original[row, n:] == 0).all() and (batch.tokens[row, n:] == 0).all()
        assert (batch.segment_ids[row, : a1 - a0 + 2] == 0).all() and (batch.segment_ids[row, a1 - a0 + 2 : n] == 1).all()
        k = int(batch.masked_weights[row].sum())
        assert k == min(20, max(1, round(n * 0.15)))
        positions = batch.masked_positions[row, :k]
        assert (np.diff(positions) > 0).all() and all(original[row, p] not in (START, END) for p in positions)
        assert (batch.masked_ids[row, :k] == original[row, positions]).all()
        assert (batch.masked_positions[row, k:] == 0).all() and (batch.masked_ids[row, k:] == 0).all()
        unmasked = np.setdiff1d(np.arange(64), positions)
        assert (batch.tokens[row, unmasked] == original[row, unmasked]).all()


def test_mask_rates_over_many_rows():
    doc = document("a", [40] * 400)
    plans = inst.single_plans(doc, 128, 0.0, random.Random(5))
    batch = inst.pack(plans, 128, START, END)
    original = batch.tokens.copy()
    inst.mask_batch(batch, spec(), inst.masking_randomness(len(plans), 128, spec(), random.Random(6)))
    used = batch.masked_weights > 0
    new = np.take_along_axis(batch.tokens, batch.masked_positions, 1)[used]
    old = batch.masked_ids[used]
    assert abs(np.mean(new == MASK) - 0.8) < 0.03
    assert abs(np.mean((new != MASK) & (new == old)) - 0.1) < 0.03  # kept (a random draw may also hit the same id)
    assert (batch.segment_ids == 0).all() and (original[:, 0] == START).all()


def test_whole_word_masking_masks_words_whole():
    continuation = np.zeros(VOCAB, bool)
    continuation[300:400] = True  # ids 300..399 continue the previous word
    tokens = np.array([200, 300, 301, 201, 202, 302, 203, 303, 304, 305, 204] * 6, np.int32)
    doc = inst.TokenizedDocument("w", tokens, [0, len(tokens)])
    masking = spec(whole_word_masking=True, continuation=continuation, masked_lm_prob=0.3)
    plans = inst.single_plans(doc, 128, 0.0, random.Random(7))
    batch = inst.pack(plans, 128, START, END)
    original = batch.tokens.copy()
    inst.mask_batch(batch, masking, inst.masking_randomness(len(plans), 128, masking, random.Random(8)))
    chosen = set(batch.masked_positions[0, : int(batch.masked_weights[0].sum())].tolist())
    assert chosen
    for i in range(1, int(batch.lengths[0]) - 1):
        if continuation[original[0, i]]:
            assert (i in chosen) == (i - 1 in chosen), f"word split at {i}"


def test_causal_blocks_are_contiguous_and_end_with_the_end_token():
    doc = document("c", [5, 7, 9])  # 21 tokens + end = 22
    blocks, lengths = inst.causal_blocks(doc, 8, END)
    assert lengths.tolist() == [8, 8, 6]
    stream = np.concatenate([b[:n] for b, n in zip(blocks, lengths)])
    assert stream.tolist() == doc.tokens.tolist() + [END] and (blocks[2, 6:] == 0).all()
    _, lengths = inst.causal_blocks(document("d", [15]), 8, END)  # 16 tokens: no block of a single token
    assert lengths.tolist() == [8, 8]


def test_serialized_examples_equal_the_proto_librarys_bytes_and_frame_as_tfrecords(tmp_path):
    rng = np.random.default_rng(0)
    columns = {
        "input_ids": rng.integers(0, 2**31, (5, 16)), "masked_lm_weights": rng.random((5, 3)).astype(np.float32),
        "next_sentence_labels": rng.integers(0, 2, (5, 1)),
    }
    records = serialize_examples(columns)
    for row, record in enumerate(records):
        expected = tf.train.Example(features=tf.train.Features(feature={
            "input_ids": tf.train.Feature(int64_list=tf.train.Int64List(value=columns["input_ids"][row].tolist())),
            "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(value=columns["masked_lm_weights"][row].tolist())),
            "next_sentence_labels": tf.train.Feature(int64_list=tf.train.Int64List(value=columns["next_sentence_labels"][row].tolist())),
        }))
        assert record == expected.SerializeToString(deterministic=True)
    path = tmp_path / "x.tfrecord"
    path.write_bytes(b"".join(tfrecord_frame(r) for r in records))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records  # tf.data checks the CRCs
    with pytest.raises(ValueError, match="masked_lm_weights"):
        serialize_examples({"input_ids": columns["input_ids"], "masked_lm_weights": columns["masked_lm_weights"][:2]})
