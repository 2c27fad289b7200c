"""BERT's basic tokenization, written to follow Google's ``tokenization.BasicTokenizer`` exactly.

Order of operations (as the original): drop NUL, U+FFFD and control characters (Unicode Cc/Cf other than
tab/newline/CR) and map whitespace (space, tab, newline, CR, Zs) to a space; put spaces around CJK
ideographs; split on whitespace (Python's ``str.split``); when lower-casing, lower-case each word, NFD-normalise
it and drop combining marks (Mn); split each word into runs of non-punctuation and single punctuation
characters (ASCII symbols count as punctuation).
Used by the WordPiece encoder and, as in Hugging Face's fallback, by the GPT-1 encoder.
"""

from __future__ import annotations

import functools
import unicodedata

# CJK Unified Ideographs blocks, as the original lists them (Hangul and kana are not included).
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


@functools.lru_cache(maxsize=65536)
def is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


@functools.lru_cache(maxsize=65536)
def is_control(char: str) -> bool:
    if char in "\t\n\r":
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


@functools.lru_cache(maxsize=65536)
def is_punctuation(char: str) -> bool:
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


@functools.lru_cache(maxsize=65536)
def is_cjk(char: str) -> bool:
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def clean_text(text: str) -> str:
    out = []
    for char in text:
        if char == "\x00" or char == "\ufffd" or is_control(char):
            continue
        out.append(" " if is_whitespace(char) else char)
    return "".join(out)


def space_cjk(text: str) -> str:
    return "".join(f" {c} " if is_cjk(c) else c for c in text)


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def split_on_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    start_new = True
    for char in word:
        if is_punctuation(char):
            pieces.append(char)
            start_new = True
        else:
            if start_new:
                pieces.append("")
                start_new = False
            pieces[-1] += char
    return pieces


def basic_tokenize(text: str, lower_case: bool = True) -> list[str]:
    """Splits ``text`` into BERT's pre-tokens (words and single punctuation characters)."""
    text = space_cjk(clean_text(text))
    tokens: list[str] = []
    for word in text.split():
        if lower_case:
            word = strip_accents(word.lower())
        tokens.extend(split_on_punctuation(word))
    return [t for t in " ".join(tokens).split()]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (printable Latin-1 map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}
