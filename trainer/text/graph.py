"""In-graph tokenizers (TensorFlow + tensorflow-text ops only), for ``tf.data`` and SavedModels.

Each is a ``tf.Module`` whose ``__call__`` (a ``tf.function``) takes a string tensor [batch] and returns int32
ids, ragged [batch, None]; ``tokenize`` runs the same ops eagerly, which Python callers of
``encoder.encode_batch`` use to skip the seconds of tracing. They are built by the encoders
(``encoder.tf_tokenizer()``), which own the settings.
"""

from __future__ import annotations

import re

import tensorflow as tf
import tensorflow_text as tf_text

from trainer.text.basic import bytes_to_unicode

_STRINGS = tf.TensorSpec([None], tf.string)


def clean_bert_text(texts: tf.Tensor) -> tf.Tensor:
    """Google BERT's ``_clean_text`` in-graph: invalid UTF-8 -> U+FFFD; drop U+FFFD and control characters
    (Cc, Cf) other than tab/newline/CR; whitespace (tab, newline, CR, Zs) -> space."""
    texts = tf.strings.unicode_transcode(
        texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    texts = tf.strings.regex_replace(texts, r"[\t\n\r\p{Zs}]", " ")
    return tf.strings.regex_replace(texts, r"[\p{Cc}\p{Cf}\x{FFFD}]", "")


def special_token_matcher(specials):
    """(RE2 pattern, token -> id table) for special tokens kept whole; (None, None) when there are none."""
    if not specials:
        return None, None
    tokens = [t for t, _ in specials]
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(tokens), tf.constant([i for _, i in specials], tf.int64)),
        default_value=-1,
    )
    return "|".join(re.escape(t) for t in tokens), table


def tokenize_around_specials(texts, pattern, table, tokenize):
    """Splits texts at special tokens, maps those to their ids and the text between them with ``tokenize``
    (strings [n] -> ragged int64 [n, None]); returns ragged int64 [batch, None]."""
    pieces = tf_text.regex_split(texts, pattern, keep_delim_regex_pattern=pattern)
    flat = pieces.flat_values
    special_id = table.lookup(flat)
    is_special = special_id >= 0
    tokens = tokenize(flat)  # [pieces, tokens]
    keep = tokens.with_flat_values(tf.repeat(~is_special, tokens.row_lengths()))
    specials = tf.RaggedTensor.from_row_lengths(
        tf.cast(tf.boolean_mask(special_id, is_special), tokens.dtype), tf.cast(is_special, tf.int64)
    )
    per_piece = tf.concat([specials, tf.ragged.boolean_mask(tokens, keep)], axis=1)
    return tf.RaggedTensor.from_row_splits(per_piece, pieces.row_splits).merge_dims(1, 2)


def lower_nfd_strip_accents(texts):
    """Google BERT's lower-casing: Unicode lower case, NFD, combining marks (Mn) removed."""
    texts = tf_text.normalize_utf8(tf.strings.lower(texts, encoding="utf-8"), "NFD")
    return tf.strings.regex_replace(texts, r"\p{Mn}", "")


class WordPieceGraph(tf.Module):
    """Google BERT's tokenization on tensorflow-text's FastBertTokenizer.

    Rows of printable ASCII without "[" (most real text) take the fast route: ASCII lower-casing and
    FastBertTokenizer. Other rows take the exact route: invalid UTF-8 replaced, Google's text cleaning,
    special tokens matched, Unicode lower-casing + NFD + removal of combining marks done by
    separate ops (FastBertTokenizer's own normaliser differs from Google's on compatibility characters such
    as U+00B4), then the same FastBertTokenizer (which splits on whitespace, punctuation and CJK ideographs).
    """

    _ASCII_ROW = r"[\t\n\r\x20-\x5A\x5C-\x7E]*"  # printable ASCII, tab/newline/CR, no "["

    def __init__(self, vocab, lower_case, max_chars_per_word, specials, unknown_token, name="wordpiece"):
        super().__init__(name=name)
        self._lower_case = lower_case
        self._fast = tf_text.FastBertTokenizer(
            vocab=list(vocab),
            suffix_indicator="##",
            max_bytes_per_word=max_chars_per_word,
            token_out_type=tf.int32,  # ids come out as they are returned: no cast pass
            unknown_token=unknown_token,
            lower_case_nfd_strip_accents=False,
        )
        self._pattern, self._special_ids = special_token_matcher(specials)

    def _ascii_route(self, texts):
        return self._fast.tokenize(tf.strings.lower(texts) if self._lower_case else texts)

    def _normalize(self, texts):
        return lower_nfd_strip_accents(texts) if self._lower_case else texts

    def _exact_route(self, texts):
        texts = clean_bert_text(texts)  # before matching special tokens: some ops stop at NUL bytes
        if self._pattern is None:
            return self._fast.tokenize(self._normalize(texts))
        return tokenize_around_specials(texts, self._pattern, self._special_ids, lambda t: self._fast.tokenize(self._normalize(t)))

    def _mixed(self, texts, is_ascii):
        ascii_rows = tf.cast(tf.where(is_ascii)[:, 0], tf.int32)
        other_rows = tf.cast(tf.where(~is_ascii)[:, 0], tf.int32)
        parts = tf.concat(
            [self._ascii_route(tf.gather(texts, ascii_rows)), self._exact_route(tf.gather(texts, other_rows))],
            axis=0,
        )
        order = tf.math.invert_permutation(tf.concat([ascii_rows, other_rows], axis=0))
        return tf.gather(parts, order)

    @tf.function(input_signature=[_STRINGS])
    def __call__(self, texts):
        return self.tokenize(texts)

    def tokenize(self, texts):
        """The same ops, run eagerly when called outside a graph (no tracing cost)."""
        is_ascii = tf.strings.regex_full_match(texts, self._ASCII_ROW)
        ids = tf.cond(
            tf.reduce_all(is_ascii), lambda: self._ascii_route(texts), lambda: self._mixed(texts, is_ascii)
        )
        return tf.cast(ids, tf.int32)


class SentencePieceGraph(tf.Module):
    """tensorflow-text's SentencepieceTokenizer on the encoder's serialized model."""

    def __init__(self, model_proto: bytes, name="sentencepiece"):
        super().__init__(name=name)
        self._sp = tf_text.SentencepieceTokenizer(model=model_proto, out_type=tf.int32)

    @tf.function(input_signature=[_STRINGS])
    def __call__(self, texts):
        return self.tokenize(texts)

    def tokenize(self, texts):
        return self._sp.tokenize(texts)


# --- byte-pair encoding -------------------------------------------------------------------------------------
# Unicode White_Space, which Python's `regex` module (GPT-2's encoder) means by \s; RE2's \s is ASCII only.
_WS = r"\t\n\x0b\x0c\r \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
# GPT-2's pattern without its two whitespace alternatives (RE2 has no look-ahead for `\s+(?!\S)`).
_GPT2_WORDS = rf"'s|'t|'re|'ve|'m|'ll|'d| ?\p{{L}}+| ?\p{{N}}+| ?[^{_WS}\p{{L}}\p{{N}}]+"
_NUL_STANDIN = "\U0010FFFF"  # a non-character in GPT-2's "other" class: carries NUL through regex_split
_BERT_PUNCT_OR_CJK = (
    r"[!-/:-@\[-`{-~\p{P}]|[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
    r"\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]"
)
_NO_RANK = tf.int64.max


def gpt2_pretokenize(texts):
    r"""GPT-2's regular-expression split, exactly, in RE2: ragged [batch, pieces] of strings.

    Without its whitespace alternatives the pattern leaves whitespace runs unmatched; GPT-2 keeps such a run
    whole unless a non-space character follows it directly, in which case its last character is a piece of
    its own (`\s+(?!\S)` backs off one character, then `\s+` takes it). NUL bytes must arrive as
    ``_NUL_STANDIN`` (regex_split stops at NUL); they are restored here.
    """
    pieces = tf_text.regex_split(texts, _GPT2_WORDS, keep_delim_regex_pattern=_GPT2_WORDS)
    flat = tf.strings.regex_replace(pieces.flat_values, _NUL_STANDIN, "\x00")
    rows = pieces.value_rowids()
    is_space = tf.strings.regex_full_match(flat, f"[{_WS}]+")
    next_piece = tf.concat([flat[1:], [""]], axis=0)
    next_same_row = tf.concat([rows[1:], [-1]], axis=0) == rows
    followed_by_word = next_same_row & (tf.strings.substr(next_piece, 0, 1) != " ")
    split = is_space & followed_by_word
    chars = tf.strings.unicode_split(flat, "UTF-8")
    head = tf.strings.reduce_join(chars[:, :-1], axis=1)
    tail = tf.strings.reduce_join(chars[:, -1:], axis=1)
    first = tf.where(split, head, flat)
    second = tf.where(split, tail, "")
    out = tf.reshape(tf.stack([first, second], axis=1), [-1])
    out_rows = tf.reshape(tf.stack([rows, rows], axis=1), [-1])
    keep = tf.strings.length(out) > 0
    return tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(out, keep), tf.boolean_mask(out_rows, keep), nrows=tf.shape(texts, out_type=tf.int64)[0]
    )


def bert_basic_pretokenize(texts):
    """Google BERT's basic tokenizer (lower-cased) in-graph: ragged [batch, words] of strings."""
    texts = lower_nfd_strip_accents(clean_bert_text(texts))
    return tf_text.regex_split(texts, rf"[ \p{{Zl}}\p{{Zp}}]+|{_BERT_PUNCT_OR_CJK}", keep_delim_regex_pattern=_BERT_PUNCT_OR_CJK)


class BPEGraph(tf.Module):
    """Byte-pair encoding in-graph: pre-tokenize, split words into symbols, merge by rank, look up ids.

    The merge loop merges, in every word at once, the first occurrence of the word's lowest-ranked pair
    until no pair has a rank. This equals merging all occurrences at once (the reference algorithm) for
    merges learned by BPE training, where a merge is always ranked after the merges that build its parts.
    """

    def __init__(self, vocab, merges, specials, mode, unk_id, clean_before_specials, name="bpe"):
        super().__init__(name=name)
        self._mode = mode
        self._clean_before_specials = clean_before_specials
        self._ranks = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant([f"{a} {b}" for a, b in merges]), tf.range(len(merges), dtype=tf.int64)
            ),
            default_value=_NO_RANK,
        )
        tokens = list(vocab)
        self._ids = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(tokens), tf.constant([vocab[t] for t in tokens], tf.int64)),
            default_value=-1 if unk_id is None else unk_id,
        )
        if mode == "gpt2":
            byte_map = bytes_to_unicode()
            self._bytes = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant([bytes([b]) for b in range(256)]), tf.constant([byte_map[b] for b in range(256)])
                ),
                default_value="",
            )
        self._pattern, self._special_ids = special_token_matcher(specials)

    @classmethod
    def gpt2(cls, encoder):
        return cls(encoder.encoder, encoder.merges, cls._specials(encoder), "gpt2", None, False)

    @classmethod
    def gpt1(cls, encoder):
        return cls(encoder.encoder, encoder.merges, cls._specials(encoder), "gpt1", encoder.special.id("unk"), True)

    @staticmethod
    def _specials(encoder):
        if encoder.split_special_tokens:
            return []
        return [(t, encoder.token_to_id(t)) for t in encoder.special.tokens()]

    def _symbols(self, words):
        """Flat words [n] -> ragged symbols [n, None] before any merge."""
        if self._mode == "gpt2":
            raw = tf.strings.bytes_split(words)
            return raw.with_flat_values(self._bytes.lookup(raw.flat_values))
        chars = tf.strings.unicode_split(words, "UTF-8")
        last = chars.row_limits() - 1
        values = tf.tensor_scatter_nd_update(
            chars.flat_values, last[:, None], tf.strings.join([tf.gather(chars.flat_values, last), "</w>"])
        )
        return chars.with_flat_values(values)

    def _merge(self, symbols):
        def step(values, lengths, _more):
            ragged = tf.RaggedTensor.from_row_lengths(values, lengths)
            left, right = ragged[:, :-1], ragged[:, 1:]
            ranks = self._ranks.lookup(tf.strings.join([left.flat_values, right.flat_values], separator=" "))
            dense = left.with_flat_values(ranks).to_tensor(default_value=_NO_RANK)
            dense = tf.concat([dense, tf.fill([tf.shape(dense)[0], 1], _NO_RANK)], axis=1)  # never empty
            best = tf.argmin(dense, axis=1, output_type=tf.int64)
            rows = tf.where(tf.reduce_min(dense, axis=1) < _NO_RANK)[:, 0]
            at = tf.gather(ragged.row_starts(), rows) + tf.gather(best, rows)
            merged = tf.strings.join([tf.gather(values, at), tf.gather(values, at + 1)])
            values = tf.tensor_scatter_nd_update(values, at[:, None], merged)
            keep = tf.tensor_scatter_nd_update(
                tf.ones_like(values, dtype=tf.bool), (at + 1)[:, None], tf.zeros_like(at, dtype=tf.bool)
            )
            lengths = lengths - tf.scatter_nd(rows[:, None], tf.ones_like(rows), tf.shape(lengths, out_type=tf.int64))
            return tf.boolean_mask(values, keep), lengths, tf.size(rows) > 0

        values, lengths, _ = tf.while_loop(
            lambda v, n, more: more,
            step,
            (symbols.flat_values, symbols.row_lengths(), tf.constant(True)),
            shape_invariants=(tf.TensorShape([None]), symbols.row_lengths().shape, tf.TensorShape([])),
        )
        return tf.RaggedTensor.from_row_lengths(values, lengths)

    def _encode_words(self, words):
        """Flat words [n] -> ragged ids [n, None]; each distinct word is merged once."""
        unique, index = tf.unique(words)
        merged = self._merge(self._symbols(unique))
        ids = merged.with_flat_values(self._ids.lookup(merged.flat_values))
        return tf.gather(ids, index)

    def _encode_texts(self, texts):
        words = gpt2_pretokenize(texts) if self._mode == "gpt2" else bert_basic_pretokenize(texts)
        return tf.RaggedTensor.from_row_splits(self._encode_words(words.flat_values), words.row_splits).merge_dims(1, 2)

    @tf.function(input_signature=[_STRINGS])
    def __call__(self, texts):
        return self.tokenize(texts)

    def tokenize(self, texts):
        texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
        if self._clean_before_specials:
            texts = clean_bert_text(texts)
        else:
            texts = tf.strings.regex_replace(texts, "\x00", _NUL_STANDIN)
        if self._pattern is None:
            ids = self._encode_texts(texts)
        else:
            ids = tokenize_around_specials(texts, self._pattern, self._special_ids, self._encode_texts)
        return tf.cast(ids, tf.int32)
