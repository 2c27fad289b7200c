"""The typed config of a text encoder, apart from the encoders (:mod:`trainer.text.factory` builds them and
re-exports it) so that step configs and the CLI's flags import without regex, SentencePiece or TensorFlow."""

from __future__ import annotations

import dataclasses
from typing import Literal

from trainer.config import Config, option

EncoderKind = Literal["wordpiece", "sentencepiece", "gpt2_bpe", "gpt1_bpe"]


@dataclasses.dataclass(frozen=True)
class EncoderConfig(Config):
    """Which text encoder to use and its normalisation settings."""

    kind: EncoderKind = option("wordpiece", "wordpiece (BERT vocab.txt), sentencepiece (.model), gpt2_bpe, gpt1_bpe")
    vocab_file: str = option("", "vocab.txt, SentencePiece .model, GPT-2 encoder.json or GPT-1 encoder_bpe_40000.json")
    merges_file: str = option("", "BPE merges: GPT-2 vocab.bpe or GPT-1 vocab_40000.bpe")
    assets_dir: str = option("", "a folder written by a previous step (encoder.json + assets); replaces the files")
    lower_case: bool = option(True, "wordpiece: lower-case and strip accents (uncased BERT)")
    split_special_tokens: bool = option(False, "tokenize [MASK] etc. written in text like other text (Google's original)")
    max_chars_per_word: int = option(200, "wordpiece: longer words become [UNK] (Google: 200)")

    def check(self) -> list[str]:
        errors = []
        if self.assets_dir:
            return errors
        if not self.vocab_file:
            errors.append(f"vocab_file: required for kind={self.kind} (or set assets_dir)")
        if self.kind in ("gpt2_bpe", "gpt1_bpe") and not self.merges_file:
            errors.append(f"merges_file: required for kind={self.kind}")
        if self.max_chars_per_word < 1:
            errors.append(f"max_chars_per_word: must be >= 1, got {self.max_chars_per_word}")
        return errors
