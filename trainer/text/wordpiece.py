"""WordPiece (BERT) encoder: Google's algorithm in Python, and the same ids in-graph on tensorflow-text.

Python path (:meth:`WordPieceEncoder.encode`): Google's ``FullTokenizer`` — :mod:`trainer.text.basic`
pre-tokenization, then greedy longest-match-first WordPiece with ``##`` continuations; a word longer than
``max_chars_per_word`` characters (200, as Google) or with an unmatchable piece becomes ``[UNK]``.

In-graph path (:meth:`WordPieceEncoder.tf_tokenizer`, used by :meth:`encode_batch`, ``tf.data`` and
SavedModels): tensorflow-text's ``FastBertTokenizer``, with two steps in front so that it gives the original's
ids: invalid UTF-8 is replaced by U+FFFD, then U+FFFD and control characters (Cc/Cf except tab, newline, CR)
are deleted and whitespace (tab, newline, CR, Zs) becomes a space, as Google's ``_clean_text`` does
(FastBertTokenizer alone turns control characters into spaces, splitting "a\\x00b" into two words).

Special tokens written in the text ([PAD], [UNK], [CLS], [SEP], [MASK]) are kept whole by default, matched
after control characters are dropped and before any other normalisation (so "[mask]" is not one), as Hugging
Face's tokenizers do with their added tokens; with
``split_special_tokens=True`` they are tokenized like any text, as Google's original does ("[", "mask", "]").

Known, exact difference between the two paths: the in-graph path limits a word to ``max_chars_per_word``
UTF-8 *bytes* (tensorflow-text counts bytes), the original to that many *characters*. They agree on every
word whose UTF-8 form is at most ``max_chars_per_word`` bytes, hence on all ASCII text; a word of non-ASCII
letters longer than that in bytes but not in characters is one ``[UNK]`` in-graph and WordPieces in Python.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from trainer.text import basic
from trainer.text.base import EncoderError, SpecialTokens, TextEncoder, read_lines

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB_FILE = "vocab.txt"


class WordPieceEncoder(TextEncoder):
    kind = "wordpiece"

    def __init__(
        self,
        vocab: Sequence[str],
        lower_case: bool = True,
        split_special_tokens: bool = False,
        max_chars_per_word: int = 200,
        source: str = "<vocab>",
    ) -> None:
        super().__init__()
        self.vocab = list(vocab)
        self.lower_case = lower_case
        self.split_special_tokens = split_special_tokens
        self.max_chars_per_word = max_chars_per_word
        self.source = source
        self._ids: dict[str, int] = {}
        for index, token in enumerate(self.vocab):
            if not token or token != token.strip() or any(c.isspace() for c in token):
                raise EncoderError(f"{source}: line {index + 1}: token {token!r} is empty or holds whitespace")
            if token in self._ids:
                raise EncoderError(
                    f"{source}: line {index + 1}: token {token!r} repeats line {self._ids[token] + 1}"
                )
            self._ids[token] = index
        if "[UNK]" not in self._ids:
            raise EncoderError(f"{source}: the vocabulary has no [UNK] token")
        self._unk = self._ids["[UNK]"]
        present = [t for t in BERT_SPECIAL_TOKENS if t in self._ids]
        self._special_re = None
        if not split_special_tokens and present:
            self._special_re = re.compile("(" + "|".join(re.escape(t) for t in present) + ")")
        self._word_cache: dict[str, list[int]] = {}
        self._graph = None

    @classmethod
    def from_file(cls, path: str, **options: Any) -> WordPieceEncoder:
        """Loads a BERT ``vocab.txt`` (one token per line; its line number minus one is the id)."""
        lines = read_lines(path)
        if lines and lines[-1] == "":
            lines.pop()  # the final newline
        lines = [line.rstrip("\r") for line in lines]
        return cls(lines, source=path, **options)

    # --- contract ---------------------------------------------------------------------------------------
    @property
    def special(self) -> SpecialTokens:
        def entry(token: str) -> tuple[str, int] | None:
            return (token, self._ids[token]) if token in self._ids else None

        return SpecialTokens(
            pad=entry("[PAD]"), unk=entry("[UNK]"), start=entry("[CLS]"), end=entry("[SEP]"),
            delimiter=entry("[SEP]"), mask=entry("[MASK]"),
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def id_to_token(self, token_id: int) -> str:
        return self.vocab[token_id]

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    def settings(self) -> dict[str, Any]:
        return {
            "lower_case": self.lower_case,
            "split_special_tokens": self.split_special_tokens,
            "max_chars_per_word": self.max_chars_per_word,
        }

    def asset_files(self) -> dict[str, bytes]:
        return {VOCAB_FILE: ("\n".join(self.vocab) + "\n").encode("utf-8")}

    # --- Python path ------------------------------------------------------------------------------------
    def _chunks(self, text: str) -> list[tuple[str, bool]]:
        """Splits cleaned text into (chunk, is_special_token) pieces."""
        text = basic.clean_text(text)
        if self._special_re is None or "[" not in text:
            return [(text, False)]
        return [(c, i % 2 == 1) for i, c in enumerate(self._special_re.split(text)) if c]

    def words(self, text: str) -> list[str]:
        """Basic-tokenized words, special tokens kept whole unless configured otherwise."""
        out: list[str] = []
        for chunk, special in self._chunks(text):
            out.extend([chunk] if special else basic.basic_tokenize(chunk, self.lower_case))
        return out

    def _encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for chunk, special in self._chunks(text):
            if special:
                ids.append(self._ids[chunk])
                continue
            for word in basic.basic_tokenize(chunk, self.lower_case):
                pieces = self._word_cache.get(word)
                if pieces is None:
                    pieces = self._wordpiece(word)
                    if len(self._word_cache) < 1_000_000:
                        self._word_cache[word] = pieces
                ids.extend(pieces)
        return ids

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > self.max_chars_per_word:
            return [self._unk]
        ids, start = [], 0
        while start < len(word):
            end, found = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self._ids.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return [self._unk]
            ids.append(found)
            start = end
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Joins WordPieces: continuations attach to the previous piece, words are separated by a space."""
        text = " ".join(self.vocab[int(i)] for i in ids)
        return text.replace(" ##", "").removeprefix("##")

    def normalize(self, text: str) -> str:
        """What ``decode(encode(text))`` gives when no word is [UNK]: the basic-tokenized words, spaced."""
        return " ".join(self.words(text))

    # --- in-graph path ----------------------------------------------------------------------------------
    def tf_tokenizer(self):
        if self._graph is None:
            from trainer.text.graph import WordPieceGraph  # noqa: PLC0415 - TensorFlow only when needed

            specials = [] if self.split_special_tokens else [
                (t, self._ids[t]) for t in BERT_SPECIAL_TOKENS if t in self._ids
            ]
            self._graph = WordPieceGraph(
                self.vocab, self.lower_case, self.max_chars_per_word, specials, self.vocab[self._unk]
            )
        return self._graph
