"""Build, save and load encoders from the typed :class:`EncoderConfig`."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Literal

from trainer import fileio
from trainer.config import Config, option
from trainer.features import ENCODER_FILE
from trainer.text.base import EncoderError, TextEncoder
from trainer.text.bpe import GPT1_FILES, GPT2_FILES, GPT1Encoder, GPT2Encoder
from trainer.text.sentencepiece_encoder import SENTENCEPIECE_FILE, SentencePieceEncoder
from trainer.text.wordpiece import VOCAB_FILE, WordPieceEncoder

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


def build_encoder(config: EncoderConfig) -> TextEncoder:
    config.validate()
    if config.assets_dir:
        return load_encoder(config.assets_dir)
    if config.kind == "wordpiece":
        return WordPieceEncoder.from_file(
            config.vocab_file, lower_case=config.lower_case, split_special_tokens=config.split_special_tokens,
            max_chars_per_word=config.max_chars_per_word,
        )
    if config.kind == "sentencepiece":
        return SentencePieceEncoder.from_file(config.vocab_file)
    cls = GPT2Encoder if config.kind == "gpt2_bpe" else GPT1Encoder
    return cls.from_files(config.vocab_file, config.merges_file, split_special_tokens=config.split_special_tokens)


@functools.lru_cache(maxsize=8)
def shared_encoder(config: EncoderConfig) -> TextEncoder:
    """One encoder per config and process: Beam DoFns of a worker share its vocabulary and in-graph tokenizer
    instead of building them once per DoFn instance."""
    return build_encoder(config)


def load_encoder(directory: str) -> TextEncoder:
    """Loads an encoder saved with ``TextEncoder.save``; checks its fingerprint against the assets."""
    meta_path = fileio.join(directory, ENCODER_FILE)
    if not fileio.exists(meta_path):
        raise EncoderError(f"{meta_path}: file not found (not an encoder folder)")
    try:
        meta = json.loads(fileio.read_text(meta_path))
        kind, settings = meta["kind"], meta["settings"]
    except (ValueError, KeyError, TypeError) as err:
        raise EncoderError(f"{meta_path}: malformed encoder description ({err})") from None
    asset = lambda name: fileio.join(directory, name)  # noqa: E731
    if kind == "wordpiece":
        encoder: TextEncoder = WordPieceEncoder.from_file(asset(VOCAB_FILE), **settings)
    elif kind == "sentencepiece":
        encoder = SentencePieceEncoder.from_file(asset(SENTENCEPIECE_FILE))
    elif kind == "gpt2_bpe":
        encoder = GPT2Encoder.from_files(*(asset(f) for f in GPT2_FILES), **settings)
    elif kind == "gpt1_bpe":
        settings = {k: v for k, v in settings.items() if k != "pretokenizer"}
        encoder = GPT1Encoder.from_files(*(asset(f) for f in GPT1_FILES), **settings)
    else:
        raise EncoderError(f"{meta_path}: unknown encoder kind {kind!r}")
    if meta.get("fingerprint") and meta["fingerprint"] != encoder.fingerprint:
        raise EncoderError(
            f"{meta_path}: fingerprint {meta['fingerprint']} does not match the assets ({encoder.fingerprint})"
        )
    return encoder
