"""Training instances from tokenized documents: Google BERT's algorithm, written as pure functions.

A document is a list of segments (token-id lists, one per sentence/line). ``pair_instances`` follows
``create_pretraining_data.py``: segments are packed up to a target length (shorter with ``short_seq_prob``),
split at a random point into A and B; half of the time (always for a one-segment chunk) B is replaced by
segments from another document, and the segments not used go back to the pool. ``mask_tokens`` picks
``round(length * masked_lm_prob)`` positions (at most ``max_predictions_per_seq``; whole words when asked)
and replaces each with [MASK] (``mask_rate``), a random token (``random_rate``) or keeps it.

Every random choice comes from the ``random.Random`` passed in, so a document's instances depend only on the
seed derived from the document itself, never on which worker handles it.

Labels follow Google: ``next_sentence_labels`` 0 = B continues A, 1 = B comes from another document.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Instance:
    tokens: list[int]
    segment_ids: list[int]
    masked_positions: list[int]
    masked_ids: list[int]
    is_random_next: bool = False


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


def truncate_pair(tokens_a: list[int], tokens_b: list[int], max_tokens: int, rng: random.Random) -> None:
    while len(tokens_a) + len(tokens_b) > max_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def mask_tokens(tokens: list[int], spec: MaskingSpec, rng: random.Random) -> tuple[list[int], list[int], list[int]]:
    """-> (masked tokens, sorted positions, original ids at those positions)."""
    budget = min(spec.max_predictions_per_seq, max(1, int(round(len(tokens) * spec.masked_lm_prob))))
    special = spec.special_ids
    if spec.whole_word_masking and spec.continuation is not None:
        candidates: list[list[int]] = []
        for i, token in enumerate(tokens):
            if token in special:
                continue
            if candidates and spec.continuation[token] and candidates[-1][-1] == i - 1:
                candidates[-1].append(i)
            else:
                candidates.append([i])
        rng.shuffle(candidates)
    else:
        # Single-token candidates: the first `budget` of a shuffle are a sample of that size.
        singles = [i for i, token in enumerate(tokens) if token not in special]
        candidates = [[i] for i in rng.sample(singles, min(budget, len(singles)))]
    output = list(tokens)
    chosen: list[int] = []
    for group in candidates:
        if len(chosen) >= budget:
            break
        if len(chosen) + len(group) > budget:
            continue
        for index in group:
            draw = rng.random()
            if draw < spec.mask_rate:
                output[index] = spec.mask_id
            elif draw < spec.mask_rate + spec.random_rate:
                output[index] = rng.randrange(spec.vocab_size)
            chosen.append(index)
    chosen.sort()
    return output, chosen, [tokens[i] for i in chosen]


def _target_length(max_tokens: int, short_seq_prob: float, rng: random.Random) -> int:
    return rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens


def pair_instances(
    document: Sequence[Sequence[int]],
    random_document: Callable[[random.Random], Sequence[Sequence[int]] | None],
    max_seq_length: int,
    short_seq_prob: float,
    start_id: int,
    end_id: int,
    spec: MaskingSpec,
    rng: random.Random,
) -> list[Instance]:
    """MLM + next-sentence instances of one document; ``random_document`` draws another document (or None)."""
    max_tokens = max_seq_length - 3
    target = _target_length(max_tokens, short_seq_prob, rng)
    instances: list[Instance] = []
    chunk: list[Sequence[int]] = []
    length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        chunk.append(segment)
        length += len(segment)
        if i == len(document) - 1 or length >= target:
            if chunk:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for s in chunk[:a_end] for t in s]
                tokens_b: list[int] = []
                is_random_next = False
                other = random_document(rng) if (len(chunk) == 1 or rng.random() < 0.5) else None
                if other:
                    is_random_next = True
                    target_b = target - len(tokens_a)
                    for segment_b in other[rng.randrange(len(other)):]:
                        tokens_b.extend(segment_b)
                        if len(tokens_b) >= target_b:
                            break
                    i -= len(chunk) - a_end  # the unused segments go back
                else:
                    tokens_b = [t for s in chunk[a_end:] for t in s]
                truncate_pair(tokens_a, tokens_b, max_tokens, rng)
                if tokens_a and tokens_b:
                    tokens = [start_id, *tokens_a, end_id, *tokens_b, end_id]
                    segments = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                    masked, positions, ids = mask_tokens(tokens, spec, rng)
                    instances.append(Instance(masked, segments, positions, ids, is_random_next))
            chunk, length = [], 0
            target = _target_length(max_tokens, short_seq_prob, rng)
        i += 1
    return instances


def single_instances(
    document: Sequence[Sequence[int]], max_seq_length: int, short_seq_prob: float, start_id: int, end_id: int,
    spec: MaskingSpec, rng: random.Random,
) -> list[Instance]:
    """MLM-only instances: [CLS] segments... [SEP], packed up to the target length."""
    max_tokens = max_seq_length - 2
    target = _target_length(max_tokens, short_seq_prob, rng)
    instances: list[Instance] = []
    current: list[int] = []
    for index, segment in enumerate(document):
        current.extend(segment)
        if index == len(document) - 1 or len(current) >= target:
            body = current[:max_tokens]
            if body:
                tokens = [start_id, *body, end_id]
                masked, positions, ids = mask_tokens(tokens, spec, rng)
                instances.append(Instance(masked, [0] * len(tokens), positions, ids))
            current = []
            target = _target_length(max_tokens, short_seq_prob, rng)
    return instances


def causal_blocks(document: Sequence[Sequence[int]], block_length: int, end_id: int) -> list[list[int]]:
    """Contiguous blocks of ``block_length`` tokens (the document followed by the end-of-text token);
    the last block may be shorter (it is padded when written)."""
    stream = [t for segment in document for t in segment] + [end_id]
    return [stream[i : i + block_length] for i in range(0, len(stream), block_length) if len(stream[i : i + block_length]) > 1]
