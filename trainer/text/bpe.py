"""Byte-pair-encoding encoders: OpenAI GPT-2 (byte level) and OpenAI GPT-1 (``</w>`` word ends).

GPT-2: ``encoder.json`` (token -> id) and ``vocab.bpe`` (``#version`` line, then one merge "a b" per line).
Text is split by GPT-2's regular expression, each piece's UTF-8 bytes are mapped to printable characters
(GPT-2's ``bytes_to_unicode``) and merged by rank. Every text round-trips exactly through decode.

GPT-1: ``encoder_bpe_40000.json`` and ``vocab_40000.bpe`` of the finetune-transformer-lm release. Text is
lower-cased and pre-tokenized, then each word's last symbol carries ``</w>``. Pre-tokenization is the original's
(ftfy ``fix_text``, its ``text_standardize``, spaCy's English tokenizer) when both ftfy and spaCy are installed;
otherwise BERT's basic tokenizer (lower-casing, accent stripping, punctuation split), as Hugging Face's
``OpenAIGPTTokenizer`` falls back to. The release has no special tokens: the encoder appends the original's
``_start_``, ``_delimiter_``, ``_classify_`` and then ``<pad>``, ``<mask>``, ``<unk>`` (those the vocabulary lacks)
after the vocabulary, in that order, so their ids are fixed by the vocabulary size.

Special tokens written in the text are kept whole by default (``split_special_tokens=False``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import Any

import regex

from trainer.text import basic
from trainer.text.basic import bytes_to_unicode
from trainer.text.base import EncoderError, SpecialTokens, TextEncoder, read_asset_text, read_lines

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_FILES = ("encoder.json", "vocab.bpe")
GPT1_FILES = ("encoder_bpe_40000.json", "vocab_40000.bpe")
GPT1_APPENDED = ("_start_", "_delimiter_", "_classify_", "<pad>", "<mask>", "<unk>")
END_OF_WORD = "</w>"


@functools.lru_cache(maxsize=1)
def load_vocab_json(path: str) -> dict[str, int]:
    text = read_asset_text(path)
    try:
        vocab = json.loads(text)
    except json.JSONDecodeError as err:
        raise EncoderError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise EncoderError(f"{path}: expected a JSON object mapping tokens to integer ids")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise EncoderError(f"{path}: token ids must be 0..{len(ids) - 1} without gaps or repeats")
    return vocab


def load_merges(path: str) -> list[tuple[str, str]]:
    merges = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise EncoderError(f"{path}: line {number}: expected two symbols separated by one space, got {line!r}")
        merges.append((parts[0], parts[1]))
    if not merges:
        raise EncoderError(f"{path}: no merges in file")
    return merges


def bpe_merge(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Repeatedly merges the adjacent pair of lowest rank (all its occurrences, left to right)."""
    while len(symbols) > 1:
        best = min(zip(symbols, symbols[1:]), key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i < len(symbols) - 1 and symbols[i] == best[0] and symbols[i + 1] == best[1]:
                merged.append(best[0] + best[1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


class _BPEEncoder(TextEncoder):
    """Shared machinery: vocabulary, merges, cache, special-token splitting, assets."""

    files: tuple[str, str]

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        specials: SpecialTokens,
        split_special_tokens: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = dict(vocab)
        self.merges = list(merges)
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self._special = specials
        self.split_special_tokens = split_special_tokens
        self._cache: dict[str, list[int]] = {}
        specials_in_text = specials.tokens()
        self._special_re = None
        if specials_in_text and not split_special_tokens:
            self._special_re = re.compile("(" + "|".join(re.escape(t) for t in specials_in_text) + ")")
        self._graph = None

    @property
    def special(self) -> SpecialTokens:
        return self._special

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def id_to_token(self, token_id: int) -> str:
        return self.decoder[int(token_id)]

    def token_to_id(self, token: str) -> int | None:
        return self.encoder.get(token)

    def asset_files(self) -> dict[str, bytes]:
        vocab, merges = self.files
        return {
            vocab: json.dumps(self.source_vocab(), ensure_ascii=False).encode("utf-8"),
            merges: ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges)).encode("utf-8"),
        }

    def source_vocab(self) -> dict[str, int]:
        return self.encoder

    def _prepare(self, text: str) -> str:
        """Runs before special tokens are matched (GPT-1 cleans control characters, as BERT does)."""
        return text

    def _chunks(self, text: str) -> list[tuple[str, bool]]:
        text = self._prepare(text)
        if self._special_re is None:
            return [(text, False)]
        return [(c, i % 2 == 1) for i, c in enumerate(self._special_re.split(text)) if c]

    def _encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for chunk, special in self._chunks(text):
            if special:
                ids.append(self.encoder[chunk])
            else:
                for word in self._pretokenize(chunk):
                    cached = self._cache.get(word)
                    if cached is None:
                        cached = [self._token_id(t) for t in bpe_merge(self._symbols(word), self.ranks)]
                        if len(self._cache) < 1_000_000:
                            self._cache[word] = cached
                    ids.extend(cached)
        return ids

    def _token_id(self, token: str) -> int:
        token_id = self.encoder.get(token)
        if token_id is None:
            if self._special.unk is None:
                raise EncoderError(f"token {token!r} is not in the vocabulary and it has no unknown token")
            return self._special.unk[1]
        return token_id


class GPT2Encoder(_BPEEncoder):
    kind = "gpt2_bpe"
    files = GPT2_FILES
    END_OF_TEXT = "<|endoftext|>"

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], split_special_tokens: bool = False):
        vocab = dict(vocab)
        appended = [t for t in (self.END_OF_TEXT, "<|pad|>", "<|mask|>") if t not in vocab]
        self._source_size = len(vocab)
        for token in appended:
            vocab[token] = len(vocab)
        eot = (self.END_OF_TEXT, vocab[self.END_OF_TEXT])
        specials = SpecialTokens(
            pad=("<|pad|>", vocab["<|pad|>"]), unk=None, start=eot, end=eot, delimiter=eot,
            mask=("<|mask|>", vocab["<|mask|>"]),
        )
        self._byte_map = bytes_to_unicode()
        self._byte_unmap = {c: b for b, c in self._byte_map.items()}
        self._pattern = regex.compile(GPT2_PATTERN)
        super().__init__(vocab, merges, specials, split_special_tokens)

    @classmethod
    def from_files(cls, vocab_file: str, merges_file: str, **options: Any) -> GPT2Encoder:
        return cls(load_vocab_json(vocab_file), load_merges(merges_file), **options)

    def source_vocab(self) -> dict[str, int]:
        return {t: i for t, i in self.encoder.items() if i < self._source_size}

    def settings(self) -> dict[str, Any]:
        return {"split_special_tokens": self.split_special_tokens}

    def _pretokenize(self, text: str) -> list[str]:
        return self._pattern.findall(text)

    def _symbols(self, word: str) -> list[str]:
        return [self._byte_map[b] for b in word.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        text = "".join(self.decoder[int(i)] for i in ids)
        return bytes(self._byte_unmap[c] for c in text).decode("utf-8", errors="replace")

    def tf_tokenizer(self):
        if self._graph is None:
            from trainer.text.graph import BPEGraph  # noqa: PLC0415

            self._graph = BPEGraph.gpt2(self)
        return self._graph


def text_standardize(text: str) -> str:
    """The GPT-1 release's text standardisation (dashes, ellipsis, spacing around punctuation runs)."""
    text = text.replace("—", "-").replace("–", "-").replace("―", "-").replace("…", "...").replace("´", "'")
    text = re.sub(r"""(-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|\\+|\/+|\*+|\[+|\]+|}+|{+|\|+|_+)""", r" \1 ", text)
    text = re.sub(r"\s*\n\s*", " \n ", text)
    text = re.sub(r"[^\S\n]+", " ", text)
    return text.strip()


class GPT1Encoder(_BPEEncoder):
    kind = "gpt1_bpe"
    files = GPT1_FILES

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], split_special_tokens: bool = False):
        vocab = dict(vocab)
        self._source_size = len(vocab)
        for token in GPT1_APPENDED:
            if token not in vocab:
                vocab[token] = len(vocab)
        specials = SpecialTokens(
            pad=("<pad>", vocab["<pad>"]), unk=("<unk>", vocab["<unk>"]), start=("_start_", vocab["_start_"]),
            end=("_classify_", vocab["_classify_"]), delimiter=("_delimiter_", vocab["_delimiter_"]),
            mask=("<mask>", vocab["<mask>"]),
        )
        self._spacy = _load_spacy_and_ftfy()
        super().__init__(vocab, merges, specials, split_special_tokens)

    @classmethod
    def from_files(cls, vocab_file: str, merges_file: str, **options: Any) -> GPT1Encoder:
        return cls(load_vocab_json(vocab_file), load_merges(merges_file), **options)

    def source_vocab(self) -> dict[str, int]:
        return {t: i for t, i in self.encoder.items() if i < self._source_size}

    @property
    def pretokenizer(self) -> str:
        return "spacy+ftfy" if self._spacy else "bert_basic"

    def settings(self) -> dict[str, Any]:
        return {"split_special_tokens": self.split_special_tokens, "pretokenizer": self.pretokenizer}

    def _prepare(self, text: str) -> str:
        return text if self._spacy else basic.clean_text(text)

    def _pretokenize(self, text: str) -> list[str]:
        if self._spacy:
            nlp, fix_text = self._spacy
            return [t.text.lower() for t in nlp(text_standardize(fix_text(text)))]
        return basic.basic_tokenize(text, lower_case=True)

    def _symbols(self, word: str) -> list[str]:
        return [*word[:-1], word[-1] + END_OF_WORD]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.decoder[int(i)] for i in ids).replace(END_OF_WORD, " ").strip()

    def normalize(self, text: str) -> str:
        """What ``decode(encode(text))`` gives when no token is unknown: pre-tokens joined by spaces."""
        return " ".join(w for chunk, special in self._chunks(text) for w in ([chunk] if special else self._pretokenize(chunk)))

    def tf_tokenizer(self):
        if self._graph is None:
            from trainer.text.graph import BPEGraph  # noqa: PLC0415

            if self._spacy:
                raise NotImplementedError("the in-graph GPT-1 path has no spaCy; uninstall spaCy or use encode()")
            self._graph = BPEGraph.gpt1(self)
        return self._graph


def _load_spacy_and_ftfy():
    try:
        import ftfy  # noqa: PLC0415
        import spacy  # noqa: PLC0415
    except ImportError:
        return None
    return spacy.blank("en").tokenizer, ftfy.fix_text
