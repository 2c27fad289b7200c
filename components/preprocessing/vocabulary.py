"""Vocabulary step: from raw text to an encoder folder, so a user with only a corpus can make records.

A seeded reservoir sample of at most ``max_lines`` non-empty lines (bounded memory, any corpus size) trains
either a WordPiece vocabulary (tensorflow-text's ``bert_vocab_from_dataset``, BERT's basic tokenization, the
special tokens [PAD] [UNK] [CLS] [SEP] [MASK] first, so ids 0-4) or a SentencePiece model (unigram or BPE, the
same special pieces). The output folder holds the assets, ``encoder.json`` and ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from typing import Literal

from trainer import fileio
from trainer.config import Config, option
from trainer.text.base import TextEncoder
from trainer.text.sentencepiece_encoder import SentencePieceEncoder, iter_corpus_lines
from trainer.text.wordpiece import BERT_SPECIAL_TOKENS, WordPieceEncoder


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
