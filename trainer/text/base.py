"""The contract every text encoder meets.

An encoder turns text into token ids and back, names its special tokens with fixed ids, saves its assets
into a folder (``encoder.json`` plus the vocabulary/model files) and has a fingerprint: a hash of its
vocabulary and normalisation settings that later steps record beside their outputs, so records made with
one encoder are never silently trained with another.

Input policy for bytes: text given as ``bytes`` is decoded as UTF-8; each invalid byte sequence is replaced
by U+FFFD and counted in :attr:`TextEncoder.invalid_utf8_sequences` (never an exception). Empty text gives an
empty encoding.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from trainer import fileio
from trainer.features import ENCODER_FILE



class EncoderError(ValueError):
    """A vocabulary or model file is missing, empty or malformed; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """Special tokens and their fixed ids. ``start`` is BERT's [CLS] / GPT's start token, ``end`` is [SEP] /
    GPT-1's _classify_; ``delimiter`` separates two segments. A token an encoder lacks is None."""

    pad: tuple[str, int] | None
    unk: tuple[str, int] | None
    start: tuple[str, int] | None
    end: tuple[str, int] | None
    delimiter: tuple[str, int] | None
    mask: tuple[str, int] | None

    def id(self, name: str) -> int:
        entry = getattr(self, name)
        if entry is None:
            raise KeyError(f"this encoder has no {name} token")
        return entry[1]

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if v else None) for k, v in dataclasses.asdict(self).items()}

    def tokens(self) -> list[str]:
        return sorted({v[0] for v in dataclasses.astuple(self) if v})


def decode_utf8(data: bytes) -> tuple[str, int]:
    """Decodes UTF-8, replacing each invalid sequence with U+FFFD; returns (text, number replaced)."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        pass
    parts, count, pos = [], 0, 0
    while True:
        try:
            parts.append(data[pos:].decode("utf-8"))
            return "".join(parts), count
        except UnicodeDecodeError as err:
            parts.append(data[pos : pos + err.start].decode("utf-8"))
            parts.append("\ufffd")
            count += 1
            pos += err.end


def read_asset_text(path: str) -> str:
    """Reads a non-empty UTF-8 text asset; errors name the file (and line)."""
    if not fileio.exists(path):
        raise EncoderError(f"{path}: file not found")
    try:
        text = fileio.read_text(path)
    except ValueError as err:
        raise EncoderError(str(err)) from None
    if not text.strip():
        raise EncoderError(f"{path}: file is empty")
    return text


def read_lines(path: str) -> list[str]:
    """Reads a UTF-8 text asset as lines (without newlines)."""
    return read_asset_text(path).split("\n")


def fingerprint_of(kind: str, settings: dict[str, Any], assets: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"kind": kind, **settings}, sort_keys=True).encode())
    for blob in assets:
        digest.update(hashlib.sha256(blob).digest())
    return f"{kind}:{digest.hexdigest()[:16]}"


class TextEncoder(abc.ABC):
    """Base class: subclasses implement the abstract methods and ``tf_tokenizer``."""

    kind: ClassVar[str]

    def __init__(self) -> None:
        self.invalid_utf8_sequences = 0

    # --- the contract ---------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def special(self) -> SpecialTokens: ...

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @abc.abstractmethod
    def _encode(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abc.abstractmethod
    def id_to_token(self, token_id: int) -> str: ...

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int | None: ...

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """Normalisation settings that, with the assets, define the encoding (and the fingerprint)."""

    @abc.abstractmethod
    def asset_files(self) -> dict[str, bytes]:
        """File name -> content of the assets :meth:`save` writes."""

    @abc.abstractmethod
    def tf_tokenizer(self):
        """A ``tf.Module`` whose ``__call__`` maps a string tensor [batch] to int32 ids, ragged [batch, None].

        Pure TensorFlow/tensorflow-text ops: usable in ``tf.data`` and saved inside a SavedModel.
        """

    # --- shared behaviour -----------------------------------------------------------------------------
    def encode(self, text: str | bytes) -> list[int]:
        """Token ids of one text (no special tokens added)."""
        if isinstance(text, bytes):
            text, invalid = decode_utf8(text)
            self.invalid_utf8_sequences += invalid
        if not text:
            return []
        return self._encode(text)

    def encode_batch(self, texts: Sequence[str | bytes], ragged: bool = False):
        """Token ids of many texts through the in-graph path (the fast path for batches): Python lists, or
        the ``tf.RaggedTensor`` itself with ``ragged=True``. Invalid UTF-8 is replaced, not counted."""
        if not len(texts):
            return []
        import tensorflow as tf  # noqa: PLC0415 - only batch users pay for the import

        result = self.tf_tokenizer().tokenize(tf.constant(list(texts), dtype=tf.string))
        if ragged:
            return result
        values, splits = result.flat_values.numpy().tolist(), result.row_splits.numpy().tolist()
        return [values[a:b] for a, b in zip(splits, splits[1:])]

    def tokenize(self, text: str | bytes) -> list[str]:
        return [self.id_to_token(i) for i in self.encode(text)]

    def identity(self) -> dict[str, Any]:
        """What records and manifests say of the encoder that made them (checked against the model's)."""
        return {"kind": self.kind, "fingerprint": self.fingerprint, "vocab_size": self.vocab_size}

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.kind, self.settings(), (self.asset_files()[k] for k in sorted(self.asset_files())))

    def save(self, directory: str) -> None:
        """Writes the assets and ``encoder.json`` (kind, settings, special tokens, fingerprint)."""
        fileio.makedirs(directory)
        for name, blob in self.asset_files().items():
            fileio.atomic_write_bytes(fileio.join(directory, name), blob)
        meta = {
            "kind": self.kind,
            "settings": self.settings(),
            "assets": sorted(self.asset_files()),
            "vocab_size": self.vocab_size,
            "special_tokens": self.special.as_dict(),
            "fingerprint": self.fingerprint,
        }
        fileio.atomic_write_text(fileio.join(directory, ENCODER_FILE), json.dumps(meta, indent=2))
