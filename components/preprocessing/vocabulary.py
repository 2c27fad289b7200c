"""Vocabulary step: from raw text to an encoder folder, so a user with only a corpus can make records.

A seeded reservoir sample of at most ``max_lines`` non-empty lines (bounded memory, any corpus size) trains
either a WordPiece vocabulary (tensorflow-text's ``bert_vocab_from_dataset``, BERT's basic tokenization, the
special tokens [PAD] [UNK] [CLS] [SEP] [MASK] first, so ids 0-4) or a SentencePiece model (unigram or BPE, the
same special pieces). The output folder holds the assets, ``encoder.json`` and ``config.yaml``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from components.preprocessing.config import VocabularyConfig  # noqa: F401 - re-exported
from trainer import fileio
from trainer.text.base import TextEncoder
from trainer.text.sentencepiece_encoder import SentencePieceEncoder, iter_corpus_lines
from trainer.text.wordpiece import BERT_SPECIAL_TOKENS, WordPieceEncoder


def reservoir_sample(lines: Iterable[str], size: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    sample: list[str] = []
    for n, line in enumerate(lines):
        if n < size:
            sample.append(line)
        else:
            j = rng.randrange(n + 1)
            if j < size:
                sample[j] = line
    return sample


def train_wordpiece(lines: list[str], vocab_size: int, lower_case: bool) -> WordPieceEncoder:
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset  # noqa: PLC0415

    dataset = tf.data.Dataset.from_tensor_slices(lines).batch(1024)
    vocab = bert_vocab_from_dataset.bert_vocab_from_dataset(
        dataset, vocab_size=vocab_size, reserved_tokens=list(BERT_SPECIAL_TOKENS),
        bert_tokenizer_params={"lower_case": lower_case}, learn_params={},
    )
    return WordPieceEncoder(vocab, lower_case=lower_case, source="<trained>")


def train_vocabulary(config: VocabularyConfig) -> TextEncoder:
    config.validate()
    lines = reservoir_sample(iter_corpus_lines(config.inputs), config.max_lines, config.seed)
    if not lines:
        raise ValueError(f"inputs {list(config.inputs)}: no non-empty line to learn a vocabulary from")
    if config.kind == "wordpiece":
        encoder: TextEncoder = train_wordpiece(lines, config.vocab_size, config.lower_case)
    else:
        encoder = SentencePieceEncoder.train(
            lines, vocab_size=config.vocab_size, model_type=config.model_type,
            character_coverage=config.character_coverage, seed=config.seed,
        )
    encoder.save(config.output_dir)
    config.save(fileio.join(config.output_dir, "config.yaml"))
    return encoder
