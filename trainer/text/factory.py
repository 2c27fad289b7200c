"""Build, save and load encoders from the typed :class:`EncoderConfig`."""

from __future__ import annotations

import functools
import json

from trainer import fileio
from trainer.features import ENCODER_FILE
from trainer.text.base import EncoderError, TextEncoder
from trainer.text.bpe import GPT1_FILES, GPT2_FILES, GPT1Encoder, GPT2Encoder
from trainer.text.config import EncoderConfig, EncoderKind  # noqa: F401 - re-exported
from trainer.text.sentencepiece_encoder import SENTENCEPIECE_FILE, SentencePieceEncoder
from trainer.text.wordpiece import VOCAB_FILE, WordPieceEncoder


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
