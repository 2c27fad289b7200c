"""Training instances from tokenized documents: Google BERT's algorithm, planned per document in Python and
packed, masked and serialized for a whole batch of documents at once with numpy.

A document is its token ids end to end plus segment boundaries (one segment per sentence/line), so every
piece of an instance is a contiguous span of some document and planning never copies tokens.
``pair_plans`` follows ``create_pretraining_data.py``: segments are packed up to a target length (shorter with
``short_seq_prob``), split at a random point into A and B; half of the time (always for a one-segment chunk)
B is replaced by segments from another document, and the segments not used go back to the pool. The pair is
truncated to fit as Google's ``truncate_seq_pair`` does (the longer side loses a token, from the front or
the back at random), computed in closed form. ``mask_batch`` picks ``round(length * masked_lm_prob)``
positions (at most ``max_predictions_per_seq``; whole words when asked) and replaces each with [MASK]
(``mask_rate``), a random token (``random_rate``) or keeps it.

Every random choice for a document comes from that document's own ``random.Random`` (the plan) and a numpy
generator seeded from it (the masks), so a document's instances never depend on which worker handles it or
which documents share its batch.

Labels follow Google: ``next_sentence_labels`` 0 = B continues A, 1 = B comes from another document.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

import numpy as np

Span = tuple[np.ndarray, int, int]  # (token array, start, end)
Plan = tuple[Span, "Span | None", bool]  # (A, B or None, B is from another document)


@dataclasses.dataclass(frozen=True)
class TokenizedDocument:
    key: str
    tokens: np.ndarray  # int32 token ids of all segments, end to end
    bounds: Sequence[int]  # segment i is tokens[bounds[i]:bounds[i + 1]]

    @property
    def num_segments(self) -> int:
        return len(self.bounds) - 1


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
    max_predictions_per_seq: int
    masked_lm_prob: float
    mask_rate: float
    random_rate: float
    whole_word_masking: bool
    vocab_size: int
    mask_id: int
    special_ids: frozenset
    continuation: np.ndarray | None = None  # bool per vocabulary id: continues the previous token's word


@dataclasses.dataclass
class InstanceBatch:
    """Packed instances: rows of ``max_seq_length`` token ids, zero-padded."""

    tokens: np.ndarray  # int32 [n, max_seq_length]
    segment_ids: np.ndarray  # int32 [n, max_seq_length]
    lengths: np.ndarray  # int32 [n]
    is_random_next: np.ndarray  # bool [n]
    masked_positions: np.ndarray | None = None  # int32 [n, max_predictions]; 0 where unused
    masked_ids: np.ndarray | None = None  # int32 [n, max_predictions]; 0 where unused
    masked_weights: np.ndarray | None = None  # float32 [n, max_predictions]; 1.0 on real predictions


def truncation(len_a: int, len_b: int, max_tokens: int, rng: random.Random) -> tuple[int, int, int, int]:
    """Google's ``truncate_seq_pair`` in closed form -> tokens cut from (A front, A back, B front, B back).

    The longer side (B on a tie) loses one token at a time, so the lengths first meet and then alternate; each
    token comes off the front or the back by a fair coin, so the front count is a sum of coin flips."""
    excess = len_a + len_b - max_tokens
    if excess <= 0:
        return 0, 0, 0, 0
    gap = min(excess, abs(len_a - len_b))
    cut_a, cut_b = (gap, 0) if len_a > len_b else (0, gap)
    rest = excess - gap
    cut_a, cut_b = cut_a + rest // 2, cut_b + (rest + 1) // 2
    front_a = rng.getrandbits(cut_a).bit_count() if cut_a else 0
    front_b = rng.getrandbits(cut_b).bit_count() if cut_b else 0
    return front_a, cut_a - front_a, front_b, cut_b - front_b


def _target_length(max_tokens: int, short_seq_prob: float, rng: random.Random) -> int:
    return rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens


def pair_plans(
    document: TokenizedDocument,
    random_document: Callable[[random.Random], TokenizedDocument | None],
    max_seq_length: int,
    short_seq_prob: float,
    rng: random.Random,
) -> list[Plan]:
    """MLM + next-sentence instances of one document as spans; ``random_document`` draws another document
    (or None)."""
    max_tokens = max_seq_length - 3
    target = _target_length(max_tokens, short_seq_prob, rng)
    bounds, count = document.bounds, document.num_segments
    plans: list[Plan] = []
    first = 0  # first segment of the current chunk
    i = 0
    while i < count:
        if i == count - 1 or bounds[i + 1] - bounds[first] >= target:
            chunk = i + 1 - first
            a_end = first + (rng.randint(1, chunk - 1) if chunk >= 2 else 1)
            a0, a1 = bounds[first], bounds[a_end]
            other = random_document(rng) if (chunk == 1 or rng.random() < 0.5) else None
            if other is not None:
                target_b = target - (a1 - a0)
                other_bounds = other.bounds
                start = rng.randrange(other.num_segments)
                stop = start + 1
                while stop < other.num_segments and other_bounds[stop] - other_bounds[start] < target_b:
                    stop += 1
                source_b, b0, b1 = other.tokens, other_bounds[start], other_bounds[stop]
                i = a_end - 1  # the unused segments go back
            else:
                source_b, b0, b1 = document.tokens, a1, bounds[i + 1]
            front_a, back_a, front_b, back_b = truncation(a1 - a0, b1 - b0, max_tokens, rng)
            a0, a1, b0, b1 = a0 + front_a, a1 - back_a, b0 + front_b, b1 - back_b
            if a1 > a0 and b1 > b0:
                plans.append(((document.tokens, a0, a1), (source_b, b0, b1), other is not None))
            first = i + 1
            target = _target_length(max_tokens, short_seq_prob, rng)
        i += 1
    return plans


def single_plans(document: TokenizedDocument, max_seq_length: int, short_seq_prob: float, rng: random.Random) -> list[Plan]:
    """MLM-only instances: [CLS] segments... [SEP], packed up to the target length."""
    max_tokens = max_seq_length - 2
    target = _target_length(max_tokens, short_seq_prob, rng)
    bounds, count = document.bounds, document.num_segments
    plans: list[Plan] = []
    first = 0
    for index in range(count):
        if index == count - 1 or bounds[index + 1] - bounds[first] >= target:
            start = bounds[first]
            end = min(bounds[index + 1], start + max_tokens)
            if end > start:
                plans.append(((document.tokens, start, end), None, False))
            first = index + 1
            target = _target_length(max_tokens, short_seq_prob, rng)
    return plans


def pack(plans: Sequence[Plan], max_seq_length: int, start_id: int, end_id: int) -> InstanceBatch:
    """[CLS] A [SEP] (B [SEP]) rows; segment 1 covers B and its [SEP]."""
    n = len(plans)
    tokens = np.zeros((n, max_seq_length), np.int32)
    first_lengths = np.empty(n, np.int32)
    lengths = np.empty(n, np.int32)
    for row, ((source_a, a0, a1), second, _) in enumerate(plans):
        length_a = a1 - a0
        tokens[row, 1 : 1 + length_a] = source_a[a0:a1]
        first_lengths[row] = length_a + 2
        if second is None:
            lengths[row] = length_a + 2
        else:
            source_b, b0, b1 = second
            tokens[row, length_a + 2 : length_a + 2 + b1 - b0] = source_b[b0:b1]
            lengths[row] = length_a + 3 + b1 - b0
    rows = np.arange(n)
    tokens[:, 0] = start_id
    tokens[rows, first_lengths - 1] = end_id
    tokens[rows, lengths - 1] = end_id
    columns = np.arange(max_seq_length)
    segment_ids = ((columns >= first_lengths[:, None]) & (columns < lengths[:, None])).astype(np.int32)
    is_random_next = np.fromiter((plan[2] for plan in plans), bool, count=n)
    return InstanceBatch(tokens, segment_ids, lengths, is_random_next)


def masking_randomness(n: int, max_seq_length: int, spec: MaskingSpec, rng: random.Random) -> np.ndarray:
    """One document's draws for ``mask_batch``: float32 [n, max_seq_length + 2 * max_predictions] in [0, 1)."""
    generator = np.random.default_rng(rng.getrandbits(64))
    return generator.random((n, max_seq_length + 2 * spec.max_predictions_per_seq), np.float32)


def _whole_word_positions(tokens: np.ndarray, length: int, budget: int, scores: np.ndarray, spec: MaskingSpec) -> list[int]:
    """Google's whole-word selection for one row: words (a piece plus its continuations) in random order,
    each taken whole if it still fits the budget."""
    words: list[list[int]] = []
    for i in range(length):
        token = int(tokens[i])
        if token in spec.special_ids:
            continue
        if words and spec.continuation[token] and words[-1][-1] == i - 1:
            words[-1].append(i)
        else:
            words.append([i])
    words.sort(key=lambda word: scores[word[0]])
    chosen: list[int] = []
    for word in words:
        if len(chosen) >= budget:
            break
        if len(chosen) + len(word) <= budget:
            chosen.extend(word)
    return sorted(chosen)


def mask_batch(batch: InstanceBatch, spec: MaskingSpec, randomness: np.ndarray) -> None:
    """Chooses and replaces the masked positions of every row (in place); ``randomness`` is
    ``masking_randomness`` of each row's document, stacked."""
    n, length = batch.tokens.shape
    predictions = spec.max_predictions_per_seq
    scores = randomness[:, :length]
    choice = randomness[:, length : length + predictions]
    random_ids = np.minimum((randomness[:, length + predictions :] * spec.vocab_size).astype(np.int32), spec.vocab_size - 1)
    columns = np.arange(length)
    candidate = (columns < batch.lengths[:, None]) & ~np.isin(batch.tokens, list(spec.special_ids))
    budget = np.minimum(predictions, np.maximum(1, np.rint(batch.lengths * spec.masked_lm_prob).astype(np.int32)))
    if spec.whole_word_masking and spec.continuation is not None:
        positions = np.full((n, predictions), length, np.int32)
        for row in range(n):
            chosen = _whole_word_positions(batch.tokens[row], int(batch.lengths[row]), int(budget[row]), scores[row], spec)
            positions[row, : len(chosen)] = chosen
    else:
        budget = np.minimum(budget, candidate.sum(axis=1))
        order = np.argsort(np.where(candidate, scores, 2.0), axis=1, kind="stable")[:, :predictions]
        positions = np.sort(np.where(np.arange(predictions) < budget[:, None], order, length), axis=1).astype(np.int32)
    used = positions < length
    positions = np.where(used, positions, 0)
    original = np.take_along_axis(batch.tokens, positions, axis=1)
    replacement = np.where(
        choice < spec.mask_rate, spec.mask_id, np.where(choice < spec.mask_rate + spec.random_rate, random_ids, original)
    )
    rows, slots = np.nonzero(used)
    batch.tokens[rows, positions[rows, slots]] = replacement[rows, slots]
    batch.masked_positions = positions
    batch.masked_ids = np.where(used, original, 0).astype(np.int32)
    batch.masked_weights = used.astype(np.float32)


def causal_blocks(document: TokenizedDocument, block_length: int, end_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous blocks of ``block_length`` tokens of the document followed by the end-of-text token ->
    (int32 [blocks, block_length] zero-padded, int32 [blocks] lengths); a last block of one token is dropped."""
    stream = np.append(document.tokens, np.int32(end_id)).astype(np.int32)
    starts = np.arange(0, len(stream), block_length)
    lengths = np.minimum(block_length, len(stream) - starts).astype(np.int32)
    keep = lengths > 1
    padded = np.zeros(len(starts) * block_length, np.int32)
    padded[: len(stream)] = stream
    return padded.reshape(len(starts), block_length)[keep], lengths[keep]


# --- one driver-independent step: tokenized documents -> record columns ------------------------------------
# The Beam step (MakeInstances) and the in-memory Python path (bertkeras.pretraining_records) both call these,
# so a document gives the same instances whichever driver handles it.
def continuation_table(encoder) -> np.ndarray:
    """Per vocabulary id: does this token continue the previous token's word? (whole-word masking)"""
    kind = encoder.kind
    if kind == "wordpiece":
        test = lambda t: t.startswith("##")  # noqa: E731
    elif kind == "sentencepiece":
        test = lambda t: not t.startswith("\u2581")  # noqa: E731
    elif kind == "gpt2_bpe":
        test = lambda t: not t.startswith("\u0120")  # noqa: E731
    else:
        raise ValueError(f"whole_word_masking is not supported for {kind} encoders")
    special = set(encoder.special.tokens())
    return np.array([test(encoder.id_to_token(i)) and encoder.id_to_token(i) not in special for i in range(encoder.vocab_size)])


def masking_spec(config, encoder) -> MaskingSpec:
    """The masking of a :class:`PretrainingDataConfig` with this encoder's vocabulary and special tokens."""
    special = encoder.special
    return MaskingSpec(
        max_predictions_per_seq=config.max_predictions_per_seq, masked_lm_prob=config.masked_lm_prob,
        mask_rate=config.mask_rate, random_rate=config.random_rate, whole_word_masking=config.whole_word_masking,
        vocab_size=encoder.vocab_size, mask_id=special.id("mask"),
        special_ids=frozenset({special.id("start"), special.id("end")}),
        continuation=continuation_table(encoder) if config.whole_word_masking else None,
    )


def tokenize_documents(encoder, documents: Sequence) -> tuple[list[TokenizedDocument | None], list[tuple[int, int]]]:
    """Token ids of every document (anything with ``key`` and ``lines``) with one in-graph tokenizer call ->
    (a TokenizedDocument per document, None when no line has tokens; (document, line) of each line without
    tokens)."""
    lines = [line for doc in documents for line in doc.lines]
    if not lines:
        return [None] * len(documents), []
    ragged = encoder.encode_batch(lines, ragged=True)
    values = ragged.flat_values.numpy().astype(np.int32, copy=False)
    splits = ragged.row_splits.numpy()
    tokenized: list[TokenizedDocument | None] = []
    empty: list[tuple[int, int]] = []
    row = 0
    for index, doc in enumerate(documents):
        doc_splits = splits[row : row + len(doc.lines) + 1]
        row += len(doc.lines)
        has_tokens = np.diff(doc_splits) > 0
        empty.extend((index, line) for line in np.flatnonzero(~has_tokens).tolist())
        if not has_tokens.any():
            tokenized.append(None)
            continue
        first = doc_splits[0]
        bounds = np.append(doc_splits[:-1][has_tokens], doc_splits[-1]) - first
        tokenized.append(TokenizedDocument(doc.key, values[first : doc_splits[-1]], bounds.tolist()))
    return tokenized, empty


def masked_columns(documents: Sequence[TokenizedDocument], config, spec: MaskingSpec, start_id: int, end_id: int,
                   random_document: Callable[[str], Callable[[random.Random], TokenizedDocument | None]],
                   ) -> dict[str, np.ndarray] | None:
    """Pair or single instances of ``documents`` (``config``: a PretrainingDataConfig), planned per document with
    its own generator, packed and masked for the batch -> Google's record columns (None: no instance).
    ``random_document(key)`` gives the draw of a random-next document other than ``key``."""
    from trainer import features  # noqa: PLC0415 - feature names only
    from trainer.records import length_mask  # noqa: PLC0415

    plans: list[Plan] = []
    randomness = []
    for dupe in range(config.dupe_factor):
        for doc in documents:
            rng = random.Random(f"{config.seed}:{dupe}:{doc.key}")
            if config.mode == "pair":
                made = pair_plans(doc, random_document(doc.key), config.max_seq_length, config.short_seq_prob, rng)
            else:
                made = single_plans(doc, config.max_seq_length, config.short_seq_prob, rng)
            if made:
                plans.extend(made)
                randomness.append(masking_randomness(len(made), config.max_seq_length, spec, rng))
    if not plans:
        return None
    batch = pack(plans, config.max_seq_length, start_id, end_id)
    mask_batch(batch, spec, np.concatenate(randomness))
    columns = {
        features.INPUT_IDS: batch.tokens,
        features.INPUT_MASK: length_mask(batch.lengths, config.max_seq_length),
        features.SEGMENT_IDS: batch.segment_ids,
        features.MASKED_LM_POSITIONS: batch.masked_positions,
        features.MASKED_LM_IDS: batch.masked_ids,
        features.MASKED_LM_WEIGHTS: batch.masked_weights,
    }
    if config.mode == "pair":
        columns[features.NEXT_SENTENCE_LABELS] = batch.is_random_next[:, None].astype(np.int32)
    return columns


def causal_columns(documents: Sequence[TokenizedDocument], max_seq_length: int, dupe_factor: int, end_id: int
                   ) -> dict[str, np.ndarray]:
    """GPT blocks of ``max_seq_length + 1`` tokens (inputs and next-token targets) -> record columns."""
    from trainer import features  # noqa: PLC0415
    from trainer.records import length_mask  # noqa: PLC0415

    length = max_seq_length + 1
    blocks = [causal_blocks(doc, length, end_id) for doc in documents] * dupe_factor
    tokens = np.concatenate([b[0] for b in blocks])
    lengths = np.concatenate([b[1] for b in blocks])
    return {features.INPUT_IDS: tokens, features.INPUT_MASK: length_mask(lengths, length)}


def random_document_from(pool: Sequence[TokenizedDocument]):
    """``random_document`` for :func:`masked_columns` drawing from ``pool`` (up to 10 tries to find a document
    other than the instance's own, as Google's script)."""
    def for_key(key: str):
        def draw(rng: random.Random) -> TokenizedDocument | None:
            for _ in range(10):
                if not pool:
                    return None
                other = pool[rng.randrange(len(pool))]
                if other.key != key:
                    return other
            return None

        return draw

    return for_key
