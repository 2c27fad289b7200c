"""In-graph tokenizers (TensorFlow + tensorflow-text ops only), for ``tf.data`` and SavedModels.

Each is a ``tf.Module`` whose ``__call__`` takes a string tensor [batch] and returns int32 ids, ragged
[batch, None]. They are built by the encoders (``encoder.tf_tokenizer()``), which own the settings.
"""

from __future__ import annotations

import re

import tensorflow as tf
import tensorflow_text as tf_text

_STRINGS = tf.TensorSpec([None], tf.string)


def clean_bert_text(texts: tf.Tensor) -> tf.Tensor:
    """Google BERT's ``_clean_text`` in-graph: invalid UTF-8 -> U+FFFD; drop U+FFFD and control characters
    (Cc, Cf) other than tab/newline/CR; whitespace (tab, newline, CR, Zs) -> space."""
    texts = tf.strings.unicode_transcode(
        texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    texts = tf.strings.regex_replace(texts, r"[\t\n\r\p{Zs}]", " ")
    return tf.strings.regex_replace(texts, r"[\p{Cc}\p{Cf}\x{FFFD}]", "")


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
            token_out_type=tf.int64,
            unknown_token=unknown_token,
            lower_case_nfd_strip_accents=False,
        )
        self._pattern = None
        if specials:
            tokens = [t for t, _ in specials]
            self._pattern = "|".join(re.escape(t) for t in tokens)
            self._special_ids = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(tokens), tf.constant([i for _, i in specials], tf.int64)
                ),
                default_value=-1,
            )

    def _ascii_route(self, texts):
        return self._fast.tokenize(tf.strings.lower(texts) if self._lower_case else texts)

    def _normalize(self, texts):
        if self._lower_case:
            texts = tf_text.normalize_utf8(tf.strings.lower(texts, encoding="utf-8"), "NFD")
            texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
        return texts

    def _exact_route(self, texts):
        texts = clean_bert_text(texts)  # before matching special tokens: some ops stop at NUL bytes
        if self._pattern is None:
            return self._fast.tokenize(self._normalize(texts))
        pieces = tf_text.regex_split(texts, self._pattern, keep_delim_regex_pattern=self._pattern)
        flat = pieces.flat_values
        special_id = self._special_ids.lookup(flat)
        is_special = special_id >= 0
        tokens = self._fast.tokenize(self._normalize(flat))  # [pieces, tokens]
        keep = tokens.with_flat_values(tf.repeat(~is_special, tokens.row_lengths()))
        specials = tf.RaggedTensor.from_row_lengths(
            tf.boolean_mask(special_id, is_special), tf.cast(is_special, tf.int64)
        )
        per_piece = tf.concat([specials, tf.ragged.boolean_mask(tokens, keep)], axis=1)
        return tf.RaggedTensor.from_row_splits(per_piece, pieces.row_splits).merge_dims(1, 2)

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
        return self._sp.tokenize(texts)
